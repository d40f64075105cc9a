"""Checking a code from the user's existing token: the same verifier as PAM, so the replay
guard and the throttling are shared with every login on every host."""
from __future__ import annotations

import time

from policy.audit import FAILURE, SUCCESS
from policy.messages import LOCKED_MESSAGE, MISMATCH_MESSAGE, backoff_message, backoff_seconds
from policy.rules.state import UserState
from policy.rules.verify import BACKOFF, LOCKED, verify_code

from .context import config, directory, log_event


def check_current_code(state: UserState, text: str, purpose: str) -> str | None:
    """None if ``text`` is a fresh, correct code from the user's linked token; else the
    message to show. Writes one audit line either way."""
    assert state.token is not None
    now = time.time()
    verdict = verify_code(directory(), state.token, text or "", now, config().totp)
    if verdict.accepted:
        log_event(SUCCESS, f"{purpose}: code accepted")
        return None
    log_event(FAILURE, f"{purpose}: code refused ({verdict.outcome})")
    if verdict.outcome == LOCKED:
        return LOCKED_MESSAGE
    if verdict.outcome == BACKOFF and verdict.retry_at is not None:
        return backoff_message(backoff_seconds(verdict.retry_at, now))
    return MISMATCH_MESSAGE
