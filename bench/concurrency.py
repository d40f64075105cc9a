"""Section 3: N = 10, 50, 200 parallel off-campus pamtester logins, one user each, one in
ten with a wrong code, via the authd and in-process: throughput, latency percentiles, and
every verdict checked (exit status, the audit line, and which process wrote that line)."""
from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from devtools.authd import AuthdProcess
from devtools.codes import code_now, wrong_code
from devtools.syslog import audit_pid, parse_audit

from .fixture import OFF, Fixture, User
from .pamrun import Run, children_cpu_ms, login_when_asked, proc_cpu_ms

CONCURRENCY = (10, 50, 200)
LOGINS_PER_LEVEL = 100          # bursts of N until at least this many logins per level
WRONG_EVERY = 10                # one user in ten types a wrong code
MODES = ("via authd", "in-process")


@dataclass(frozen=True)
class Level:
    mode: str                       # "via authd" or "in-process"
    n: int
    logins: int
    seconds: float
    latencies_ms: list[float]
    wrong_verdicts: int
    audit_mismatch: int
    from_authd: int                # audit lines written by the authd's pid
    right: int                      # logins whose exit status and audit line are right
    why_wrong: dict[str, int]       # audit reason of each login that ended wrongly
    pamtester_cpu_ms: float         # per login: the pamtester processes (getrusage)
    authd_cpu_ms: float            # per login: the authd process (/proc/PID/stat)

    def pct(self, p: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]

    def all_right(self) -> bool:
        return self.wrong_verdicts == 0 and self.audit_mismatch == 0 \
            and self.right == self.logins


def what_went_wrong(found: list[str], by_authd: bool, mode: str, ok: bool) -> str | None:
    """Why a login's audit lines do not match what it typed and where it ran; None if they
    do (one line, from the authd exactly when via the authd, the outcome expected)."""
    if not found:
        return "no audit line"
    if len(found) > 1:
        return f"{len(found)} audit lines"
    if by_authd != (mode == "via authd"):
        return f"audit line from pid {audit_pid(found[0])} ({mode})"
    fields = parse_audit(found[0])
    if (fields.get("outcome") == "success") != ok:
        return re.sub(r"\d+(\.\d+)?", "N", fields.get("reason", found[0]))
    return None


def burst_level(fx: Fixture, users: list[User], service: str, n: int, mode: str,
                authd_pid: int) -> Level:
    """Bursts of ``n`` parallel logins until LOGINS_PER_LEVEL; every verdict checked by
    pamtester's exit status and by the login's audit line, which must come from the
    authd's pid via the authd and from another pid in-process."""
    latencies, elapsed, wrong, mismatch, from_authd, why = [], 0.0, 0, 0, 0, {}
    right = 0                       # exit status and the one audit line both as expected
    children_cpu, authd_cpu = 0.0, 0.0
    for _ in range(-(-LOGINS_PER_LEVEL // n)):
        batch = users[:n]
        for u in batch:
            fx.reset(u)
        expect = [i % WRONG_EVERY != WRONG_EVERY - 1 for i in range(n)]
        time.sleep(0.2)
        fx.audit.lines.clear()

        def one(u: User, ok: bool) -> Run:
            return login_when_asked(service, u.uid, OFF, lambda: (
                code_now(u.secret) if ok else wrong_code(u.secret)))
        children, authd0 = children_cpu_ms(), proc_cpu_ms(authd_pid)
        with ThreadPoolExecutor(max_workers=n) as pool:
            runs = list(pool.map(one, batch, expect))
        children_cpu += children_cpu_ms() - children
        authd_cpu += proc_cpu_ms(authd_pid) - authd0
        elapsed += max(r.start + r.seconds for r in runs) - min(r.start for r in runs)
        latencies += [r.seconds * 1000 for r in runs]
        wrong += sum(r.ok != ok for r, ok in zip(runs, expect))
        time.sleep(0.3)  # the last audit datagrams
        lines: dict[str, list[str]] = {}
        for line in fx.audit.audit_lines():
            fields = parse_audit(line)
            if fields.get("service") == service:
                lines.setdefault(fields.get("user", ""), []).append(line)
        for u, ok, run in zip(batch, expect, runs):
            found = lines.get(u.uid, [])
            by_authd = bool(found) and audit_pid(found[0]) == authd_pid
            from_authd += by_authd
            key = what_went_wrong(found, by_authd, mode, ok)
            right += run.ok == ok and key is None
            if key is not None:
                mismatch += 1
                why[key] = why.get(key, 0) + 1
    return Level(mode, n, len(latencies), elapsed, latencies, wrong, mismatch, from_authd,
                 right, why, children_cpu / len(latencies), authd_cpu / len(latencies))


def concurrency(fx: Fixture, users: list[User], authd: AuthdProcess) -> list[Level]:
    """Each N via the authd and in-process, one right after the other."""
    service = fx.mfa_services(authd.path)
    levels = []
    for n in CONCURRENCY:
        for mode in MODES:
            levels.append(burst_level(fx, users, service[mode], n, mode, authd.pid))
            print(f"bench:   N = {n} {mode}: {levels[-1].logins} logins, "
                  f"{levels[-1].wrong_verdicts} wrong", flush=True)
    return levels
