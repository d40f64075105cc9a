"""A login from the point of view of the second factor: the one call the PAM module makes
(in the login process, or in campus-mfa-authd for it).

The source decides first: a campus or local login never touches the directory (nor loads
ldap3). Otherwise the user's state is read, the decision made, the code asked for and
checked, and one audit line written. ``campus-mfa check`` runs the same decision.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from .audit import FAILURE, SUCCESS, UNAVAILABLE, audit
from .config import Config
from .messages import (LOCKED_MESSAGE, MISMATCH_MESSAGE, PROMPT, SET_UP_MESSAGE,
                       UNAVAILABLE_MESSAGE, backoff_message, backoff_seconds)
from .rules.decision import CODE_REQUIRED, DENIED, EXEMPT, Decision, decide, decide_by_source
from .rules.network import Source, normalize_source
from .rules.state import Unreadable, UserState

if TYPE_CHECKING:  # the campus path never loads ldap3
    from .directory.pool import ConnectionPool
    from .directory.service import ServiceDirectory


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
    state: UserState | Unreadable | None   # None: the source decided, no directory read


@dataclass(frozen=True)
class LoginResult:
    outcome: str   # SUCCESS, FAILURE or UNAVAILABLE: the PAM module maps these to PAM codes
    reason: str


def source_of(rhost: str | None, tty: str | None = None, pid: int | None = None) -> Source:
    """PAM_RHOST as a Source; without one, the source of the session that process ``pid``
    (the PAM caller) on ``tty`` (PAM_TTY) was started from (policy/origin.py)."""
    if rhost:
        return normalize_source(rhost)
    from .origin import session_source  # only then: utmp and /proc are read

    return session_source(tty, pid)


def evaluate(config: Config, username: str, source: Source,
             directory: ServiceDirectory) -> Evaluation:
    """The decision for ``username`` from ``source``, with the user's state read from
    ``directory`` unless the source alone decides. The caller owns the directory."""
    by_source = decide_by_source(source, config.policy)
    if by_source is not None:
        return Evaluation(source, by_source, None)
    from .errors import DirectoryError, DirectoryUnavailable, UserNotFound

    try:
        state: UserState | Unreadable = directory.read_state(
            username, config.policy.required_groups)
    except UserNotFound as err:
        state = Unreadable(str(err), user_unknown=True)
    except DirectoryUnavailable as err:
        state = Unreadable(str(err), unreachable=True)
    except DirectoryError as err:
        state = Unreadable(str(err))
    return Evaluation(source, decide(source, state, config.policy), state)


def check(config: Config, username: str, rhost: str) -> Evaluation:
    """What a login of ``username`` from ``rhost`` would meet (``campus-mfa check``; an
    empty ``rhost`` has no session to take a source from: off campus)."""
    source = source_of(rhost)
    by_source = decide_by_source(source, config.policy)
    if by_source is not None:
        return Evaluation(source, by_source, None)
    from .directory.service import ServiceDirectory

    with ServiceDirectory(config.ldap) as directory:
        return evaluate(config, username, source, directory)


def login(config: Config, username: str, rhost: str | None, service: str,
          conversation: Conversation, *, tries: int = 3,
          clock: Callable[[], float] = time.time, tty: str | None = None,
          pid: int | None = None, pool: ConnectionPool | None = None) -> LoginResult:
    """Decide, ask for and check the code if needed, write the audit line, and say how it
    ended. ``tty`` and ``pid``: PAM_TTY and the calling process, for a login without
    PAM_RHOST; ``pool``: bound connections kept between logins (campus-mfa-authd)."""
    source = source_of(rhost, tty, pid)
    by_source = decide_by_source(source, config.policy)
    if by_source is not None:
        result = LoginResult(SUCCESS, by_source.reason)
    else:
        from .directory.service import ServiceDirectory  # off campus only

        with ServiceDirectory(config.ldap, pool) as directory:
            evaluation = evaluate(config, username, source, directory)
            result = _finish(config, evaluation, directory, conversation, tries, clock)
    audit(config.audit, user=username, service=service, source=source,
          outcome=result.outcome, reason=result.reason, warning=result.outcome != SUCCESS)
    return result


def _finish(config: Config, evaluation: Evaluation, directory: ServiceDirectory,
            conversation: Conversation, tries: int, clock: Callable[[], float]) -> LoginResult:
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
    from .errors import DirectoryError
    from .rules.verify import BACKOFF, LOCKED, verify_code

    token = evaluation.state.token
    refusals = []
    try:
        for _ in range(tries):
            # A person may take minutes to type: hand the LDAP connection back first, so
            # that prompts left open cannot use up the directory's connections.
            directory.close()
            text = conversation.ask(PROMPT, token.params.digits)
            if text is None:
                refused = f"; code refused ({', '.join(refusals)})" if refusals else ""
                return LoginResult(FAILURE, f"{decision.reason}{refused}; no code entered")
            now = clock()
            verdict = verify_code(directory, token, text, now, config.totp)
            if verdict.accepted:
                return LoginResult(SUCCESS, f"{decision.reason}; code accepted")
            if verdict.outcome == LOCKED:
                conversation.error(LOCKED_MESSAGE)
                return LoginResult(FAILURE, f"{decision.reason}; token locked")
            if verdict.outcome == BACKOFF:
                wait = backoff_seconds(verdict.retry_at, now)
                conversation.error(backoff_message(wait))
                return LoginResult(FAILURE, f"{decision.reason}; back-off, retry in {wait}s")
            refusals.append(verdict.outcome)
            conversation.error(MISMATCH_MESSAGE)
            token = directory.read_token(token.dn)
    except DirectoryError as err:
        conversation.error(UNAVAILABLE_MESSAGE)
        return LoginResult(UNAVAILABLE, f"{decision.reason}; directory error ({err})")
    return LoginResult(FAILURE, f"{decision.reason}; code refused ({', '.join(refusals)})")
