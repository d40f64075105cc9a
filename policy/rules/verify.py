"""Checking one code against a token: lock-out, back-off, strict parsing, the window,
replay, and the shared counters. The PAM module and the site both call verify_code, so a
code used over SSH cannot be used again on the site, and failures count everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from ..config import TotpConfig
from ..errors import DirectoryError
from .state import Token
from .totp import matching_step, parse_code

CAS_RETRIES = 8  # attempts counted by others in a row before this one gives up

# The first failures cost nothing (a conversation's worth of typos); each one after that
# doubles the wait before the next code is even looked at: 1, 2, 4, 8 ... seconds.
FREE_FAILURES = 3
MAX_BACKOFF = 3600

ACCEPTED, MISMATCH, REPLAYED, BACKOFF, LOCKED = (
    "accepted", "mismatch", "replayed", "backoff", "locked")


@dataclass(frozen=True)
class Verdict:
    outcome: str               # one of the names above
    retry_at: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED


def backoff_until(token: Token) -> int | None:
    """When the next code may be checked, or None if it may be checked now."""
    if token.failures < FREE_FAILURES or token.last_failure is None:
        return None
    return token.last_failure + min(2 ** (token.failures - FREE_FAILURES), MAX_BACKOFF)


def stricter(token: Token, totp: TotpConfig) -> Token:
    """``token`` with the configuration's window and lock-out limit where those are lower
    than the token's own: lowering totp.window or totp.max_failures counts for the tokens
    that exist already, not only for new ones."""
    return replace(token, params=replace(token.params, window=min(token.params.window,
                                                                  totp.window)),
                   max_failures=min(token.max_failures, totp.max_failures))


class TokenStore(Protocol):
    """Where a token's shared counters live (policy.directory.service.ServiceDirectory;
    the tests also use one in memory). Both writes are compare-and-swaps: False means
    another attempt changed the token since ``token`` was read."""

    def read_token(self, dn: str) -> Token: ...

    def count_attempt(self, token: Token, now: float) -> bool: ...

    def record_success(self, token: Token, step: int, now: float) -> bool: ...


def verify_code(directory: TokenStore, token: Token, text: str, now: float,
                totp: TotpConfig) -> Verdict:
    """Check ``text`` against ``token`` (under the stricter of its own and the configured
    limits) and record the result in the directory.

    The attempt is counted before the code is looked at, by a compare-and-swap on the
    failure counter, and a success clears the counter. So every code checked anywhere has
    won its own increment first: parallel guesses on many connections cannot outrun the
    back-off or the lock.
    """
    token = stricter(token, totp)
    for _ in range(CAS_RETRIES):
        refusal = _throttled(token, now)
        if refusal is not None:
            return refusal
        if directory.count_attempt(token, now):
            break
        token = stricter(directory.read_token(token.dn), totp)  # another attempt came first
    else:
        raise DirectoryError(f"token {token.dn}: failure counter kept changing")
    code = parse_code(text, token.params.digits)
    step = matching_step(token.secret, code, token.params, now) if code else None
    if step is None:
        return Verdict(MISMATCH)
    if step <= token.last_step or not directory.record_success(token, step, now):
        return Verdict(REPLAYED)  # used already, here or on another host (maybe just now)
    return Verdict(ACCEPTED)


def _throttled(token: Token, now: float) -> Verdict | None:
    if token.failures >= token.max_failures:
        return Verdict(LOCKED)
    until = backoff_until(token)
    if until is not None and now < until:
        return Verdict(BACKOFF, retry_at=until)
    return None
