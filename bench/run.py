#!/usr/bin/python3
"""`make bench`: what one login costs beside the peers, measured side by side in one run
(docs/performance.md). Run as root; everything is on loopback and removed at the end.

The fixture (fixture.py: a throwaway slapd, bench users, PAM services campus-mfa-bench-*,
and the byte-compile step), a resident authd for the run (devtools.authd, its socket in
the bench's work directory), then the sections, each in its own module:

1. logins.py: one login, a whole pamtester process, interleaved beside the peers; then
   authd_cost.py: the authd's CPU per login over batches of logins;
2. imports.py: where the time goes (``-X importtime``, cProfile of bench/login_once.py);
3. concurrency.py: N = 10, 50, 200 parallel off-campus logins, every verdict checked;
4. warm.py: warm verifications/s over one connection, and one LDAP operation's cost;
5. enrollment_site.py: the enrollment site under gunicorn -w 2 with wrk;
6. gate.py: the web gate's /auth through nginx, beside the ungated file and a bare /auth.

Writes bench/out/report.md, bench/out/logins.png and bench/out/gate.png (report.py).
BENCH_ROUNDS (default 40) sets the number of interleaved rounds. The whole run is bounded
(BENCH_DEADLINE seconds, default 570): past it, the bench stops, cleans up and fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)   # bench.*, devtools, policy; not bench/ itself (no shadowed names)

from bench import authd_cost, concurrency, enrollment_site, imports, logins, warm  # noqa: E402
from bench.fixture import CAMPUS, OFF, Fixture, byte_compile, bytecode_state  # noqa: E402
from bench.gate import gate  # noqa: E402
from bench.gate_report import chart as gate_chart  # noqa: E402
from bench.pamrun import cpu_times, machine_load, proc_status  # noqa: E402
from bench.report import Results, chart, report  # noqa: E402
from devtools.authd import AuthdProcess  # noqa: E402

OUT = ROOT / "bench" / "out"
DEADLINE = int(os.environ.get("BENCH_DEADLINE", "570"))


class Deadline(Exception):
    """The run took longer than BENCH_DEADLINE."""


def on_alarm(signum: int, frame: object) -> None:
    raise Deadline(f"bench: stopped after {DEADLINE} s (BENCH_DEADLINE)")


def measure(fx: Fixture, authd: AuthdProcess) -> dict:
    """The six sections, in order; what each measured, by Results' field names."""
    users = fx.enroll([f"bench{i:03d}" for i in range(max(concurrency.CONCURRENCY) + 1)])
    solo, crowd = users[-1], users[:-1]
    r: dict = {"authd_pid": authd.pid}
    print("bench: 1/6 whole-process logins", flush=True)
    r["whole"] = logins.whole_process(fx, solo, authd)
    r["authd_cost"] = authd_cost.authd_batches(fx, solo, authd)
    r["login_in_process"] = authd_cost.in_process(fx, solo)
    print("bench: 2/6 import times and profile", flush=True)
    r["imports"] = {
        "in-process, campus path": imports.import_times(fx, solo, CAMPUS),
        "in-process, off-campus path": imports.import_times(fx, solo, OFF),
        "via authd, module side": imports.import_times(fx, solo, CAMPUS, authd.path)}
    r["profile"] = imports.profile(fx, solo)
    print("bench: 3/6 parallel logins", flush=True)
    r["levels"] = concurrency.concurrency(fx, crowd, authd)
    print("bench: 4/6 warm verifications and LDAP operations", flush=True)
    r["warm"] = warm.warm_verifications(fx, solo)
    r["ops"] = warm.ldap_op_costs(fx, solo, crowd[0])
    r["ldap_imports"] = {name: imports.import_ms(name) for name in ("ldap3", "ldap")}
    r["authd_end"] = proc_status(authd.pid)
    print("bench: 5/6 enrollment site", flush=True)
    r["web"] = enrollment_site.site(fx)
    print("bench: 6/6 the web gate through nginx", flush=True)
    r["gate"] = gate(fx, solo)
    return r


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (it writes /etc/pam.d/campus-mfa-bench-*)", file=sys.stderr)
        return 2
    began, load_start, cpu_start = time.monotonic(), os.getloadavg()[0], cpu_times()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE)
    OUT.mkdir(parents=True, exist_ok=True)
    # pam_python never writes bytecode: the package's postinst byte-compiles (py3compile);
    # here, so that no login pays for compiling the checkout's sources.
    byte_compile()
    n_modules, stale_start = bytecode_state()
    work = Path(tempfile.mkdtemp(prefix="campus-mfa-bench-"))
    fx = authd = None
    try:
        fx = Fixture(work)
        authd = AuthdProcess(str(work / "authd.sock"))
        print(f"bench: authd pid {authd.pid} at {authd.path}", flush=True)
        measured = measure(fx, authd)
        exit_status = authd.stop()
        results = Results(
            **measured, authd_exit=exit_status,
            authd_stderr=[line.rstrip("\n") for line in authd.reports],
            bytecode=(n_modules, stale_start, bytecode_state()[1]),
            seconds=time.monotonic() - began, load=(load_start, os.getloadavg()[0]),
            busy=machine_load(cpu_start, cpu_times()))
        (OUT / "report.md").write_text(report(results))
        chart(results.whole.variants, results.whole.floor_ms(), OUT / "logins.png")
        gate_chart(results.gate, OUT / "gate.png")
    finally:
        signal.alarm(0)
        try:
            if authd is not None:
                authd.stop()
        finally:
            if fx is not None:
                fx.close()
            shutil.rmtree(work, ignore_errors=True)
    print(OUT / "report.md")
    print(OUT / "logins.png")
    print(OUT / "gate.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
