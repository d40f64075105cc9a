"""verify_code against a token store in memory (the TokenStore protocol): replay, the window,
counting before looking, back-off and lock-out, the stricter limits, and a compare-and-swap
lost to another host, each at a fixed time. test_directory.py runs the same rules against
slapd; this file needs no server and fails on the rule, not on the transport."""
from __future__ import annotations

import dataclasses

import pytest

from policy.config import TotpConfig
from policy.errors import DirectoryError
from policy.rules.state import Token
from policy.rules.totp import TotpParams, code_at_step
from policy.rules.verify import (ACCEPTED, BACKOFF, CAS_RETRIES, FREE_FAILURES, LOCKED, MISMATCH,
                                 REPLAYED, verify_code)

SECRET = bytes(range(20))
PARAMS = TotpParams()               # SHA1, 6 digits, 30 s, window 1
NOW = 2_000_000_000.0               # a fixed instant (2033), step 66_666_666
STEP = int(NOW // PARAMS.period)
CONFIG = TotpConfig()               # window 1, max_failures 10


class MemoryStore:
    """One token's counters, changed only by compare-and-swap, as slapd changes them.
    ``lose`` compare-and-swaps fail first, as if another host had just counted one."""

    def __init__(self, lose: int = 0) -> None:
        self.token = Token(dn="cn=t,ou=tokens,dc=example,dc=edu", secret=SECRET,
                           params=PARAMS, max_failures=10, last_step=0, failures=0,
                           last_failure=None)
        self.lose = lose
        self.writes: list[str] = []

    def read_token(self, dn: str) -> Token:
        assert dn == self.token.dn
        return self.token

    def count_attempt(self, token: Token, now: float) -> bool:
        if self.lose:
            self.lose -= 1
            self.token = dataclasses.replace(self.token, failures=self.token.failures + 1,
                                             last_failure=int(now))
            return False
        if token.failures != self.token.failures:
            return False
        self.writes.append("attempt")
        self.token = dataclasses.replace(self.token, failures=token.failures + 1,
                                         last_failure=int(now))
        return True

    def record_success(self, token: Token, step: int, now: float) -> bool:
        if token.last_step != self.token.last_step:
            return False
        self.writes.append(f"success {step}")
        self.token = dataclasses.replace(self.token, last_step=step, failures=0)
        return True


def code(step: int) -> str:
    return code_at_step(SECRET, step, PARAMS)


def check(store: MemoryStore, text: str, now: float = NOW, config: TotpConfig = CONFIG) -> str:
    return verify_code(store, store.token, text, now, config).outcome


def test_a_code_is_accepted_once_and_its_step_recorded():
    store = MemoryStore()
    assert check(store, code(STEP)) == ACCEPTED
    assert store.writes == ["attempt", f"success {STEP}"]  # counted before it was looked at
    assert (store.token.last_step, store.token.failures) == (STEP, 0)
    assert check(store, code(STEP)) == REPLAYED
    assert check(store, code(STEP - 1)) == REPLAYED  # inside the window, but older
    assert store.token.failures == 2 and store.token.last_step == STEP


@pytest.mark.parametrize("offset, outcome", [
    (-2, MISMATCH), (-1, ACCEPTED), (0, ACCEPTED), (1, ACCEPTED), (2, MISMATCH)])
def test_the_window_is_one_step_either_side(offset, outcome):
    assert check(MemoryStore(), code(STEP + offset)) == outcome


@pytest.mark.parametrize("text", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "1" * 10_000,
                                  "123\x00456"])
def test_malformed_input_is_a_counted_mismatch(text):
    store = MemoryStore()
    assert check(store, text) == MISMATCH
    assert store.writes == ["attempt"]


def test_spaces_a_person_types_are_allowed():
    value = code(STEP)
    assert check(MemoryStore(), f" {value[:3]} {value[3:]} ") == ACCEPTED


def test_back_off_after_the_free_failures_then_the_lock():
    store = MemoryStore()
    for _ in range(FREE_FAILURES):
        assert check(store, "000000") == MISMATCH
    verdict = verify_code(store, store.token, code(STEP), NOW, CONFIG)
    assert (verdict.outcome, verdict.retry_at) == (BACKOFF, int(NOW) + 1)
    assert store.token.failures == FREE_FAILURES  # refused unchecked, not even counted
    later = NOW
    while store.token.failures < store.token.max_failures:
        later += 10_000
        assert check(store, "000000", later) == MISMATCH
    later += 10_000
    assert check(store, code(int(later // 30)), later) == LOCKED


def test_the_stricter_of_config_and_token_counts():
    strict = dataclasses.replace(CONFIG, window=0, max_failures=2)
    assert check(MemoryStore(), code(STEP - 1), config=strict) == MISMATCH
    store = MemoryStore()
    for at in (NOW, NOW + 10_000):
        assert check(store, "000000", at, strict) == MISMATCH
    assert check(store, code(STEP + 1000), NOW + 30_000, strict) == LOCKED
    assert check(store, code(int((NOW + 30_000) // 30)), NOW + 30_000) == ACCEPTED


def test_a_lost_compare_and_swap_is_counted_again_on_the_fresh_token():
    store = MemoryStore(lose=2)  # two other attempts counted first
    assert check(store, code(STEP)) == ACCEPTED
    assert store.writes == ["attempt", f"success {STEP}"]


def test_many_attempts_elsewhere_bring_on_the_back_off_here():
    store = MemoryStore(lose=CAS_RETRIES)  # each lost race is a failure counted elsewhere
    assert check(store, code(STEP)) == BACKOFF
    assert store.writes == [] and store.token.failures == FREE_FAILURES


def test_a_counter_that_keeps_changing_is_a_directory_error():
    """Compare-and-swaps lost CAS_RETRIES times in a row without the count reaching the
    back-off (another host's successes keep resetting it): the login ends unavailable."""
    class Racing(MemoryStore):
        def count_attempt(self, token: Token, now: float) -> bool:
            self.writes.append("lost")
            return False

    store = Racing()
    with pytest.raises(DirectoryError, match=r"failure counter kept changing$"):
        check(store, code(STEP))
    assert store.writes == ["lost"] * CAS_RETRIES
