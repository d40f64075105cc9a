"""A login from the point of view of the second factor: the one call the PAM module makes.

evaluate() is the decision with the directory read it may need (campus and local sources
never touch the directory); login() adds the conversation, the verification and the audit
line. ``campus-mfa check`` runs evaluate() itself, so the helpdesk sees what PAM would do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from .audit import audit
from .config import Config
from .decision import CODE_REQUIRED, DENIED, EXEMPT, Decision, decide, decide_by_source
from .network import Source, normalize_source
from .state import Unreadable, UserState

PROMPT = "Verification code: "
MISMATCH_MESSAGE = "The verification code does not match."
SET_UP_MESSAGE = ("2-step verification is required for logins from off campus. "
                  "Set it up from the campus network first.")
LOCKED_MESSAGE = ("Too many wrong verification codes: 2-step verification is locked. "
                  "Ask the helpdesk to unlock it.")
UNAVAILABLE_MESSAGE = "The verification service is unavailable. Try again later."

SUCCESS, FAILURE, UNAVAILABLE = "success", "failure", "unavailable"


class Conversation(Protocol):
    def ask(self, prompt: str, digits: int) -> str | None:
        """The user's answer with echo off; None if the conversation failed. ``digits``
        is the length of the token's codes (``combined`` splits them off by it)."""

    def error(self, text: str) -> None:
        """Show an error message."""


@dataclass(frozen=True)
class Evaluation:
    source: Source
    decision: Decision
    state: UserState | Unreadable | None   # None: the directory was not consulted


@dataclass(frozen=True)
class LoginResult:
    outcome: str   # SUCCESS, FAILURE or UNAVAILABLE: the PAM module maps these to PAM codes
    reason: str


def evaluate(config: Config, username: str, rhost: str | None, service: str, *,
             tty: str | None = None, pid: int | None = None) -> tuple[Evaluation, object]:
    """The decision for this login, reading the directory only if the source needs it.
    Without PAM_RHOST the source is that of the session process ``pid`` (the PAM caller)
    on ``tty`` (PAM_TTY) was started from (policy/session.py).
    Returns the evaluation and the open directory (or None) for a code check to reuse."""
    source = normalize_source(rhost)
    if not rhost:
        from .session import session_source  # only then: utmp and /proc are read

        source = session_source(tty, pid)
    by_source = decide_by_source(source, config.policy)
    if by_source is not None:
        return Evaluation(source, by_source, None), None
    from .directory import (Directory, DirectoryError, DirectoryUnavailable,  # off campus only
                            UserNotFound)

    directory = Directory(config.ldap)
    try:
        state: UserState | Unreadable = directory.read_state(
            username, config.policy.required_groups)
    except UserNotFound as err:
        state = Unreadable(str(err), user_unknown=True)
    except DirectoryUnavailable as err:
        state = Unreadable(str(err), unreachable=True)
    except DirectoryError as err:
        state = Unreadable(str(err))
    return Evaluation(source, decide(source, state, config.policy), state), directory


def login(config: Config, username: str, rhost: str | None, service: str,
          conversation: Conversation, *, tries: int = 3, code: str | None = None,
          clock: Callable[[], float] = time.time, tty: str | None = None,
          pid: int | None = None) -> LoginResult:
    """Decide, ask for and check the code if needed, write the audit line, and say how it
    ended. ``code``, if given (password+code in one field), is the only attempt.
    ``tty`` and ``pid``: PAM_TTY and the calling process, for a login without PAM_RHOST."""
    evaluation, directory = evaluate(config, username, rhost, service, tty=tty, pid=pid)
    try:
        result = _finish(config, evaluation, directory, conversation, tries, code, clock)
    finally:
        if directory is not None:
            directory.close()
    audit(config.audit, user=username, service=service, source=evaluation.source,
          outcome=result.outcome, reason=result.reason, warning=result.outcome != SUCCESS)
    return result


def _finish(config: Config, evaluation: Evaluation, directory: object,
            conversation: Conversation, tries: int, code: str | None,
            clock: Callable[[], float]) -> LoginResult:
    decision = evaluation.decision
    if decision.outcome == EXEMPT:
        return LoginResult(SUCCESS, decision.reason)
    if decision.outcome == DENIED:
        if decision.directory_error:
            conversation.error(UNAVAILABLE_MESSAGE)
            return LoginResult(UNAVAILABLE, decision.reason)
        if isinstance(evaluation.state, UserState):
            conversation.error(SET_UP_MESSAGE)
        return LoginResult(FAILURE, decision.reason)
    assert decision.outcome == CODE_REQUIRED and isinstance(evaluation.state, UserState)
    from .directory import DirectoryError
    from .verify import verify_code

    token = evaluation.state.token
    refusals = []
    try:
        for _ in range(1 if code is not None else tries):
            if code is None:
                # A person may take minutes to type: hand the LDAP connection back first,
                # so that prompts left open cannot use up the directory's connections.
                directory.close()
            text = code if code is not None else \
                conversation.ask(PROMPT, token.params.digits)
            if text is None:
                refused = f"; code refused ({', '.join(refusals)})" if refusals else ""
                return LoginResult(FAILURE, f"{decision.reason}{refused}; no code entered")
            verdict = verify_code(directory, token, text, clock(), config.totp)
            if verdict.accepted:
                return LoginResult(SUCCESS, f"{decision.reason}; code accepted")
            if verdict.outcome == "locked":
                conversation.error(LOCKED_MESSAGE)
                return LoginResult(FAILURE, f"{decision.reason}; token locked")
            if verdict.outcome == "backoff":
                wait = max(1, int(verdict.retry_at - clock() + 0.999))
                conversation.error(f"Too many wrong verification codes. "
                                   f"Try again in {wait} seconds.")
                return LoginResult(FAILURE, f"{decision.reason}; back-off, retry in {wait}s")
            refusals.append(verdict.outcome)
            conversation.error(MISMATCH_MESSAGE)
            token = directory.read_token(token.dn)
    except DirectoryError as err:
        conversation.error(UNAVAILABLE_MESSAGE)
        return LoginResult(UNAVAILABLE, f"{decision.reason}; directory error ({err})")
    return LoginResult(FAILURE, f"{decision.reason}; code refused ({', '.join(refusals)})")
