"""The authd's CPU per login (issue 14: at most 3 ms per off-campus login), over batches of
logins one after the other, after section 1 (the authd long started, its pool of bound
connections filled): the authd's user + system time from /proc/PID/stat before and after
each batch, divided by the logins. /proc counts in 10 ms units, so a batch of n logins
reads within 10/n ms per login; section 1's per-login column is only a rough check.

Off-campus logins type the right code (the token reset before each, as the admin DN,
outside the authd). Back to back, a borrowed connection was used a moment ago; spaced
further apart than the pool's VALIDATE_AFTER, it sat idle, as on a quiet server.

Where that CPU goes: the same off-campus login in this process (policy.login.login with a
pool of its own and a scripted code), its CPU from thread_time (not tick-rounded) and the
LDAP operations it makes, counted at ldap3's Connection.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import ldap3

from devtools.authd import AuthdProcess
from policy.directory.pool import VALIDATE_AFTER, ConnectionPool
from policy.login import login

from .fixture import CAMPUS, OFF, Fixture, User
from .login_once import Scripted
from .pamrun import pamtester, proc_cpu_ms, socket_inodes, tcp_established

BACK_TO_BACK = int(os.environ.get("BENCH_AUTHD_LOGINS", "100"))
SPACED = 20
SPACING = VALIDATE_AFTER + 0.2   # seconds from one login's end to the next one's start
TARGET_MS = 3.0
IN_PROCESS = 100
LDAP_METHODS = ("bind", "search", "compare", "modify", "extended")


@dataclass(frozen=True)
class Batch:
    name: str
    logins: int
    right: int                  # logins that ended as they should (exit status 0)
    authd_cpu_ms: float         # the authd's CPU over the whole batch
    wall_s: float               # the logins' own wall time, without the spacing
    conns: tuple[int, int]      # the authd's connections to slapd before and after

    def per_login_ms(self) -> float:
        return self.authd_cpu_ms / self.logins

    def resolution_ms(self) -> float:
        return 10 / self.logins


def authd_batches(fx: Fixture, user: User, authd: AuthdProcess) -> list[Batch]:
    """Campus back to back; off campus back to back; off campus spaced."""
    service = fx.mfa_services(authd.path)["via authd"]
    slapd_port = fx.ldap.port

    def campus() -> str:
        return ""

    def off_campus() -> str:
        return fx.fresh_code(user) + "\n"

    out = []
    for name, rhost, answer, count, pause in (
            ("campus, back to back", CAMPUS, campus, BACK_TO_BACK, 0.0),
            ("off campus, right code, back to back", OFF, off_campus, BACK_TO_BACK, 0.0),
            (f"off campus, right code, {SPACING:.1f} s apart", OFF, off_campus, SPACED,
             SPACING)):
        conns0 = connections_to(authd.pid, slapd_port)
        cpu0, right, wall = proc_cpu_ms(authd.pid), 0, 0.0
        for _ in range(count):
            if pause:
                time.sleep(pause)
            stdin = answer()       # outside the authd: a reset, as the admin DN
            run = pamtester(service, user.uid, rhost, stdin)
            right += run.ok
            wall += run.seconds
        out.append(Batch(name, count, right, proc_cpu_ms(authd.pid) - cpu0, wall,
                         (conns0, connections_to(authd.pid, slapd_port))))
        print(f"bench:   authd {name}: {out[-1].per_login_ms():.2f} ms CPU per login",
              flush=True)
    return out


def connections_to(pid: int, port: int) -> int:
    """How many established TCP connections process ``pid`` holds to ``port``."""
    mine = socket_inodes(pid)
    return sum(remote == port and inode in mine
               for _, remote, _, inode in tcp_established())


@dataclass(frozen=True)
class InProcess:
    cpu_ms: float               # per off-campus login, this thread's CPU
    ops: dict[str, float]       # LDAP operations per login, by ldap3 method


def in_process(fx: Fixture, user: User) -> InProcess:
    """IN_PROCESS off-campus logins in this thread, after ten to fill the pool."""
    pool = ConnectionPool(fx.config.ldap.uris)
    counts = dict.fromkeys(LDAP_METHODS, 0)

    def one() -> float:
        code = fx.fresh_code(user)  # the admin's modify: not counted, not timed
        with counting(counts, on=measuring):
            began = time.thread_time()
            outcome = login(fx.config, user.uid, OFF, "bench", Scripted(code),
                            pool=pool).outcome
            spent = time.thread_time() - began
        if outcome != "success":
            raise RuntimeError(f"in-process off-campus login: {outcome}")
        return spent
    measuring = False
    for _ in range(10):
        one()
    measuring = True
    cpu = sum(one() for _ in range(IN_PROCESS))
    for pooled in pool.close():
        pooled.conn.unbind()
    return InProcess(1000 * cpu / IN_PROCESS, {m: n / IN_PROCESS for m, n in counts.items()})


@contextmanager
def counting(counts: dict[str, int], on: bool = True) -> Iterator[None]:
    """Count calls of ldap3.Connection's operations meanwhile into ``counts`` (policy/
    looks each method up on the class at every call)."""
    originals = {m: getattr(ldap3.Connection, m) for m in LDAP_METHODS}

    def counted(method: str) -> Callable[..., object]:
        def wrapper(self: ldap3.Connection, *args: object, **kwargs: object) -> object:
            counts[method] += on
            return originals[method](self, *args, **kwargs)
        return wrapper
    for method in LDAP_METHODS:
        setattr(ldap3.Connection, method, counted(method))
    try:
        yield
    finally:
        for method, original in originals.items():
            setattr(ldap3.Connection, method, original)
