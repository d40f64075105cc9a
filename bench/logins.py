"""Section 1: one login, a whole pamtester process, beside the peers. pam_permit,
pam_google_authenticator, pam_oath, an empty pam_python module, campus-mfa on and off
campus both in-process (authd=off) and via the resident authd, interleaved in a shuffled
order each round; peak RSS and CPU of each pamtester process, the authd's CPU per login."""
from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from devtools.authd import AuthdProcess
from devtools.codes import code_now
from devtools.syslog import audit_pid, parse_audit

from .fixture import CAMPUS, OFF, ROOT, Fixture, User
from .pamrun import Run, children_cpu_ms, pamtester, pamtester_peak_rss, proc_cpu_ms, \
    proc_status

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
WARMUP = 3
RSS_RUNS = 5
PYTHON_FLOOR = "pam_python, empty module"
IN_CAMPUS, IN_OFF = "campus-mfa in-process, campus", "campus-mfa in-process, off campus"
AUTHD_CAMPUS, AUTHD_OFF = "campus-mfa via authd, campus", "campus-mfa via authd, off campus"
EMPTY_MODULE = ROOT / "bench" / "empty_module.py"


@dataclass
class Variant:
    name: str
    service: str
    user: str
    rhost: str
    prepare: Callable[[], str]   # the text pamtester types (made just before each run)
    via_authd: bool = False
    runs: list[Run] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)          # per timed run
    authd_cpu_ms: list[float] = field(default_factory=list)   # per timed run

    def median_ms(self) -> float:
        return statistics.median(r.seconds for r in self.runs) * 1000

    def quartiles_ms(self) -> tuple[float, float]:
        q = statistics.quantiles([r.seconds * 1000 for r in self.runs], n=4)
        return q[0], q[2]


@dataclass
class WholeProcess:
    variants: list[Variant]
    authd_after: dict[str, int]        # the authd's /proc status after section 1
    served: dict[str, tuple[int, int]]  # variant -> (its audit lines, those from the authd)

    def by_name(self) -> dict[str, Variant]:
        return {v.name: v for v in self.variants}

    def floor_ms(self) -> float:
        """The empty pam_python module's median: what every ratio is to."""
        return self.by_name()[PYTHON_FLOOR].median_ms()


def variants(fx: Fixture, user: User, authd: AuthdProcess) -> list[Variant]:
    """Every variant with its PAM service; each types what it needs."""
    ga, oath = fx.work / "google_authenticator", fx.work / "users.oath"
    mfa = fx.mfa_services(authd.path)
    permit = fx.add_service("permit", "auth required pam_permit.so")
    google = fx.add_service("ga", f"auth required pam_google_authenticator.so "
                                  f"secret={ga} user=root")
    pam_oath = fx.add_service("oath", f"auth required pam_oath.so usersfile={oath} "
                                      f"window=1 digits=6")
    empty = fx.add_service("empty", f"auth required pam_python.so {EMPTY_MODULE}")

    def nothing() -> str:
        return ""

    def peer() -> str:
        fx.write_peer_state()
        return code_now(fx.peer_secret) + "\n"

    def off_campus() -> str:
        return fx.fresh_code(user) + "\n"

    return [
        Variant("pam_permit (floor)", permit, user.uid, OFF, nothing),
        Variant("pam_google_authenticator", google, "root", OFF, peer),
        Variant("pam_oath", pam_oath, "root", OFF, peer),
        Variant(PYTHON_FLOOR, empty, user.uid, OFF, nothing),
        Variant(IN_CAMPUS, mfa["in-process"], user.uid, CAMPUS, nothing),
        Variant(IN_OFF, mfa["in-process"], user.uid, OFF, off_campus),
        Variant(AUTHD_CAMPUS, mfa["via authd"], user.uid, CAMPUS, nothing, via_authd=True),
        Variant(AUTHD_OFF, mfa["via authd"], user.uid, OFF, off_campus, via_authd=True),
    ]


def whole_process(fx: Fixture, user: User, authd: AuthdProcess) -> WholeProcess:
    """Every variant once per round, in a shuffled order each round; then peak RSS; then
    which process wrote each campus-mfa login's audit line."""
    every = variants(fx, user, authd)
    time.sleep(0.2)
    fx.audit.lines.clear()
    rng = random.Random(7)
    for round_ in range(WARMUP + ROUNDS):
        order = every[:]
        rng.shuffle(order)
        for v in order:
            stdin = v.prepare()
            before = proc_cpu_ms(authd.pid) if v.via_authd else 0.0
            children = children_cpu_ms()
            run = pamtester(v.service, v.user, v.rhost, stdin)
            if round_ >= WARMUP:
                v.runs.append(run)
                v.cpu_ms.append(children_cpu_ms() - children)
                if v.via_authd:
                    v.authd_cpu_ms.append(proc_cpu_ms(authd.pid) - before)
    for v in every:
        for _ in range(RSS_RUNS):
            v.rss_kb.append(pamtester_peak_rss(v.service, v.user, v.rhost, v.prepare()))
    time.sleep(0.3)  # the last audit datagrams
    lines = [(parse_audit(line), audit_pid(line)) for line in fx.audit.audit_lines()]
    served = {}
    for v in every:
        if v.name.startswith("campus-mfa"):
            mine = [pid for fields, pid in lines
                    if fields.get("service") == v.service and fields.get("source") == v.rhost]
            served[v.name] = (len(mine), sum(pid == authd.pid for pid in mine))
    return WholeProcess(every, proc_status(authd.pid), served)
