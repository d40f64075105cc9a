"""Checking a code from the user's existing token: the same verifier as PAM, so the replay
guard and the throttling are shared with every login on every host."""
from __future__ import annotations

import time

from policy.login import LOCKED_MESSAGE, MISMATCH_MESSAGE
from policy.state import UserState
from policy.verify import BACKOFF, LOCKED, verify_code

from .context import config, directory, log_event


def check_current_code(state: UserState, text: str, purpose: str) -> str | None:
    """None if ``text`` is a fresh, correct code from the user's linked token; else the
    message to show. Writes one audit line either way."""
    assert state.token is not None
    now = time.time()
    verdict = verify_code(directory(), state.token, text or "", now, config().totp)
    if verdict.accepted:
        log_event("success", f"{purpose}: code accepted")
        return None
    log_event("failure", f"{purpose}: code refused ({verdict.outcome})", warning=True)
    if verdict.outcome == LOCKED:
        return LOCKED_MESSAGE
    if verdict.outcome == BACKOFF and verdict.retry_at is not None:
        wait = max(1, int(verdict.retry_at - now + 0.999))
        return f"Too many wrong verification codes. Try again in {wait} seconds."
    return MISMATCH_MESSAGE
