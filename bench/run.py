#!/usr/bin/python3
"""`make bench`: what one login costs beside the peers, measured side by side in one run.

Starts a throwaway slapd (devtools.devldap), enrolls bench users, writes PAM services named
campus-mfa-bench-* (removed at the end), and measures, all on loopback:

1. whole-process pamtester cost, interleaved: pam_permit, pam_google_authenticator,
   pam_oath, an empty pam_python module, campus-mfa on and off campus both in-process
   (authd=off) and via the resident authd (policy/authd.py, started for the run with
   its socket in the bench's work directory); medians, ratios to the empty pam_python
   module, peak RSS and CPU of each pamtester process, the authd's CPU per login and its
   own RSS;
2. where the time goes: ``-X importtime`` and cProfile of bench/login_once.py;
3. N = 10, 50, 200 parallel off-campus pamtester logins, one user each, one in ten with a
   wrong code, via the authd and in-process: throughput, latency percentiles, every
   verdict checked (exit status and the audit line, and which process wrote that line);
4. warm verifications/s in this process over one reused connection, and what one LDAP
   search and one modify cost over one reused connection with ldap3 (what policy/ uses)
   and with python-ldap (a C binding to libldap), to explain the ceiling;
5. the enrollment site under gunicorn -w 2 with wrk: login page and QR page.

Before measuring, the bench byte-compiles the checkout (policy/, pam_module/, enroll_web/)
as dh_python3 does for the installed package: pam_python never writes bytecode, so a fresh
clone would otherwise compile every module from source on every login.

Replay guard: every accepted code must be of a later time step than the token's last one.
Between runs the bench resets the token as the admin DN (oathTOTPLastTimeStep and
oathFailureCount to 0, oathLastFailure removed), outside the timed part; the peers get the
same treatment (their secret and state files are rewritten before each run).

Writes bench/out/report.md and bench/out/logins.png. BENCH_ROUNDS (default 40) sets the
number of interleaved rounds. The whole run is bounded (BENCH_DEADLINE seconds, default
570): past it, the bench stops, cleans up and fails.
"""
from __future__ import annotations

import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ldap3  # noqa: E402

from devtools import devldap  # noqa: E402
from policy.config import load_config  # noqa: E402
from policy.secret_file import read_secret_file  # noqa: E402
from policy.directory.enrollment import EnrollmentDirectory
from policy.directory.service import ServiceDirectory
from policy.rules.totp import TotpParams, code_at_step, new_secret, time_step, to_base32  # noqa: E402
from policy.rules.verify import verify_code  # noqa: E402

PY = "/usr/bin/python3"
OUT = ROOT / "bench" / "out"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
WARMUP = 3
CONCURRENCY = (10, 50, 200)
LOGINS_PER_LEVEL = 100          # bursts of N until at least this many logins per level
WRONG_EVERY = 10                # in the concurrency bursts, one user in ten types a wrong code
WARM_VERIFICATIONS = 3000
LDAP_OPS = 1000                 # per operation and client in the per-operation breakdown
LDAP_BLOCKS = 5                 # ... in blocks, the clients alternating
WRK = ("-t2", "-c8", "-d5s", "--latency")
IMPORT_RUNS = 7
RSS_RUNS = 5
OFF, CAMPUS = "203.0.113.7", "127.0.0.1"
PARAMS = TotpParams()
PAM_D = Path("/etc/pam.d")
SERVICE = "campus-mfa-bench-"
PYTHON_FLOOR = "pam_python, empty module"
IN_CAMPUS, IN_OFF = "campus-mfa in-process, campus", "campus-mfa in-process, off campus"
AUTHD_CAMPUS, AUTHD_OFF = "campus-mfa via authd, campus", "campus-mfa via authd, off campus"
COMPILED = ("policy", "pam_module", "enroll_web")
DEADLINE = int(os.environ.get("BENCH_DEADLINE", "570"))
PAMTESTER_TIMEOUT = 60          # one pamtester process; a hung one counts as a wrong verdict
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- fixture ------------------------------------------------------------------------------

@dataclass
class User:
    uid: str
    secret: bytes
    token_dn: str


def code_now(secret: bytes) -> str:
    return code_at_step(secret, time_step(time.time(), PARAMS.period), PARAMS)


def wrong_code(secret: bytes) -> str:
    """A code that matches no step in the window around now."""
    step = time_step(time.time(), PARAMS.period)
    valid = {code_at_step(secret, s, PARAMS) for s in range(step - 2, step + 3)}
    return next(c for c in (f"{n:06d}" for n in range(1000000)) if c not in valid)


class Fixture:
    """slapd, bench users, the PAM services, the peers' secret files, an audit listener."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.ldap = devldap.start(str(work / "ldap"), devldap.free_port())
        self.config_path = self.ldap.config_path
        self.config = load_config(self.config_path)
        self.admin = devldap.admin_connection(self.ldap)
        self.audit_lines: list[str] = []
        self._listen(self.config.audit.syslog_socket)
        self.services: list[Path] = []
        self.peer_secret = new_secret()

    def _listen(self, path: str) -> None:
        """The module's audit lines, so the concurrency test can count outcomes."""
        self.audit_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.audit_sock.bind(path)
        self.audit_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

        def drain() -> None:
            while True:
                try:
                    self.audit_lines.append(self.audit_sock.recv(4096).decode())
                except OSError:
                    return
        threading.Thread(target=drain, daemon=True).start()

    def enroll(self, uids: list[str]) -> list[User]:
        users = []
        with EnrollmentDirectory(self.config.ldap) as directory:
            for uid in uids:
                devldap.add_user(self.ldap, uid, uid + "-pass")
                secret = new_secret()
                dn = directory.create_pending_token(secret, PARAMS, 10, time.time())
                directory.link_token(directory.read_state(uid), dn, 0)
                users.append(User(uid, secret, dn))
        return users

    def reset(self, user: User) -> None:
        """Forget the last accepted step and the failures (admin DN, outside the timing)."""
        self.admin.modify(user.token_dn, {
            "oathTOTPLastTimeStep": [(ldap3.MODIFY_REPLACE, ["0"])],
            "oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
            "oathLastFailure": [(ldap3.MODIFY_REPLACE, [])]})

    def add_service(self, name: str, line: str) -> str:
        path = PAM_D / (SERVICE + name)
        path.write_text(f"# campus-mfa bench (removed when it ends)\n{line}\n")
        self.services.append(path)
        return path.name

    def write_peer_state(self) -> None:
        """Fresh google-authenticator and pam_oath files (their replay state reset)."""
        ga = self.work / "google_authenticator"
        ga.unlink(missing_ok=True)
        fd = os.open(ga, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'{to_base32(self.peer_secret)}\n" TOTP_AUTH\n" WINDOW_SIZE 3\n'
                      f'" DISALLOW_REUSE\n')
        oath = self.work / "users.oath"
        oath.write_text(f"HOTP/T30/6\troot\t-\t{self.peer_secret.hex()}\n")
        oath.chmod(0o600)

    def close(self) -> None:
        for path in self.services:
            path.unlink(missing_ok=True)
        self.audit_sock.close()
        self.admin.unbind()
        devldap.stop(self.ldap.dir)


# -- bytecode -----------------------------------------------------------------------------

def byte_compile() -> None:
    """What dh_python3 does at install: pam_python sets Py_DontWriteBytecodeFlag and this
    environment may set PYTHONDONTWRITEBYTECODE, so without this every login would compile
    the checkout's modules from source."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "SOURCE_DATE_EPOCH")}  # timestamp .pyc
    subprocess.run([PY, "-m", "compileall", "-q", *COMPILED], cwd=ROOT, env=env, check=True,
                   timeout=120)


def bytecode_state() -> tuple[int, list[str]]:
    """How many of the compiled directories' modules there are, and which of them have no
    up-to-date .pyc (timestamp-checked, as Python checks it at import)."""
    import importlib.util

    sources = sorted(p for d in COMPILED for p in (ROOT / d).rglob("*.py"))
    stale = []
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = pyc.read_bytes()[:16]
        except OSError:
            stale.append(str(source.relative_to(ROOT)))
            continue
        st = source.stat()
        if (header[:4] != importlib.util.MAGIC_NUMBER
                or int.from_bytes(header[4:8], "little") != 0   # not hash-based
                or int.from_bytes(header[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                or int.from_bytes(header[12:16], "little") != st.st_size & 0xFFFFFFFF):
            stale.append(str(source.relative_to(ROOT)))
    return len(sources), stale


# -- the resident authd ------------------------------------------------------------------

def proc_cpu_ms(pid: int) -> float:
    """User + system CPU of a process so far, all its threads, ended ones included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def children_cpu_ms() -> float:
    """User + system CPU of this process's children that have ended and been waited for
    (the pamtester processes; getrusage, not tick-rounded)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def cpu_times() -> list[int]:
    """The machine's CPU time so far (/proc/stat ``cpu`` line, in ticks)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def machine_load(start: list[int], end: list[int]) -> str:
    """How busy the CPUs were between two cpu_times(): everyone, this bench included."""
    delta = [b - a for a, b in zip(start, end)]
    total = sum(delta[:8]) or 1       # user nice system idle iowait irq softirq steal
    busy = total - delta[3] - delta[4]
    return f"CPUs busy {100 * busy / total:.0f}% of the run, steal {100 * delta[7] / total:.0f}%"


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (KB) and Threads of a running process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


class Authd:
    """policy.authd, started for the run: its socket is in the bench's work directory
    (mode 0700, root's), so only this run's PAM services (authd=SOCKET) use it."""

    def __init__(self, work: Path) -> None:
        self.socket = str(work / "authd.sock")
        self.stderr: list[str] = []
        self.proc = subprocess.Popen([PY, "-m", "policy.authd", "--socket", self.socket],
                                     cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        ready = f"campus-mfa-authd: listening on {self.socket}"
        deadline = time.monotonic() + 20
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                self.stop()
                raise RuntimeError("the authd did not say it was listening within 20 s")
            chunk = os.read(self.proc.stderr.fileno(), 1)
            if not chunk:
                self.stop()
                raise RuntimeError(f"the authd exited: {line.decode(errors='replace')}")
            line += chunk
        if line.decode().strip() != ready:
            self.stop()
            raise RuntimeError(f"the authd said {line.decode(errors='replace')!r}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        """Anything else it prints (tracebacks of handler threads) goes into the report."""
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))

    def cpu_ms(self) -> float:
        return proc_cpu_ms(self.pid)

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def stop(self) -> int | None:
        """SIGTERM (the authd exits 0 and removes its socket); SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


AUDIT_PID = re.compile(r"campus-mfa\[(\d+)\]: ")


def audit_pid(line: str) -> int | None:
    m = AUDIT_PID.search(line)
    return int(m[1]) if m else None


# -- running pamtester --------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    start: float
    seconds: float
    ok: bool


class Watchdog:
    """Kills a pamtester that runs longer than PAMTESTER_TIMEOUT (it then counts as a wrong
    verdict). Not subprocess's own timeout: with one, Popen.wait polls and sleeps up to
    50 ms between polls, which would round every measured time up to those steps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: dict[subprocess.Popen, float] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def watch(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs[proc] = time.monotonic() + PAMTESTER_TIMEOUT

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.pop(proc, None)

    def _run(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            with self.lock:
                late = [p for p, deadline in self.procs.items() if deadline < now]
            for proc in late:
                proc.kill()


WATCHDOG = Watchdog()


def run_to_end(args: list[str], stdin: str) -> int:
    """Run one process to its end (bounded by the watchdog); its exit status."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    WATCHDOG.watch(proc)
    try:
        proc.communicate(stdin.encode())   # no timeout: waitpid blocks, no polling
    finally:
        WATCHDOG.done(proc)
    return proc.returncode


def spawn(args: list[str], stdin: str = "") -> Run:
    """Run one process to its end: when it started, its wall time, whether it exited 0."""
    start = time.perf_counter()
    status = run_to_end(args, stdin)
    return Run(start, time.perf_counter() - start, status == 0)


def peak_rss(args: list[str], stdin: str = "") -> int:
    """Peak RSS (KB) of the process, from /usr/bin/time (wait4 here would report this
    process's own peak, which a forked child inherits)."""
    with tempfile.NamedTemporaryFile("r") as out:
        run_to_end(["/usr/bin/time", "-f", "%M", "-o", out.name, *args], stdin)
        return int(out.read().split()[-1])


def login_when_asked(service: str, user: str, rhost: str, answer) -> Run:
    """pamtester, typing ``answer()`` only once the prompt is shown, as a person would:
    a code computed before a slow prompt could be out of the window when it is checked."""
    start = time.perf_counter()
    proc = subprocess.Popen(pamtester_args(service, user, rhost), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    WATCHDOG.watch(proc)
    shown = b""
    while not shown.endswith(b": "):
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        shown += chunk
    try:
        proc.stdin.write(answer().encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.stderr.read()
    proc.stderr.close()
    ok = proc.wait() == 0
    WATCHDOG.done(proc)
    return Run(start, time.perf_counter() - start, ok)


def pamtester_args(service: str, user: str, rhost: str) -> list[str]:
    return ["pamtester", "-I", f"rhost={rhost}", service, user, "authenticate"]


def pamtester(service: str, user: str, rhost: str, stdin: str = "") -> Run:
    return spawn(pamtester_args(service, user, rhost), stdin)


@dataclass
class Variant:
    name: str
    service: str
    user: str
    rhost: str
    prepare: object   # () -> the text pamtester types
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


def mfa_services(fx: Fixture, authd: Authd) -> dict[str, str]:
    """The two campus-mfa PAM services, made once: in-process (authd=off, said
    explicitly) and via the authd (authd=its socket)."""
    mfa = (f"auth required pam_python.so {ROOT / 'pam_module' / 'pam_campus_mfa.py'} "
           f"config={fx.config_path}")
    names = {"in-process": SERVICE + "mfa", "via authd": SERVICE + "authd"}
    if not (PAM_D / names["in-process"]).exists():
        fx.add_service("mfa", f"{mfa} authd=off")
        fx.add_service("authd", f"{mfa} authd={authd.socket}")
    return names


def whole_process(fx: Fixture, user: User, authd: Authd) -> WholeProcess:
    """Section 1: every variant once per round, in a shuffled order each round."""
    ga, oath = fx.work / "google_authenticator", fx.work / "users.oath"
    mfa = mfa_services(fx, authd)
    svc = {
        "permit": fx.add_service("permit", "auth required pam_permit.so"),
        "ga": fx.add_service("ga", f"auth required pam_google_authenticator.so "
                                   f"secret={ga} user=root"),
        "oath": fx.add_service("oath", f"auth required pam_oath.so usersfile={oath} "
                                       f"window=1 digits=6"),
        "empty": fx.add_service("empty", f"auth required pam_python.so "
                                         f"{ROOT / 'bench' / 'empty_module.py'}"),
        "mfa": mfa["in-process"],
        "authd": mfa["via authd"],
    }

    def peer() -> str:
        fx.write_peer_state()
        return code_now(fx.peer_secret) + "\n"

    def off_campus() -> str:
        fx.reset(user)
        return code_now(user.secret) + "\n"

    variants = [
        Variant("pam_permit (floor)", svc["permit"], user.uid, OFF, lambda: ""),
        Variant("pam_google_authenticator", svc["ga"], "root", OFF, peer),
        Variant("pam_oath", svc["oath"], "root", OFF, peer),
        Variant(PYTHON_FLOOR, svc["empty"], user.uid, OFF, lambda: ""),
        Variant(IN_CAMPUS, svc["mfa"], user.uid, CAMPUS, lambda: ""),
        Variant(IN_OFF, svc["mfa"], user.uid, OFF, off_campus),
        Variant(AUTHD_CAMPUS, svc["authd"], user.uid, CAMPUS, lambda: "", via_authd=True),
        Variant(AUTHD_OFF, svc["authd"], user.uid, OFF, off_campus, via_authd=True),
    ]
    time.sleep(0.2)
    fx.audit_lines.clear()
    rng = random.Random(7)
    for round_ in range(WARMUP + ROUNDS):
        order = variants[:]
        rng.shuffle(order)
        for v in order:
            stdin = v.prepare()
            before = authd.cpu_ms() if v.via_authd else 0.0
            children = children_cpu_ms()
            run = pamtester(v.service, v.user, v.rhost, stdin)
            if round_ >= WARMUP:
                v.runs.append(run)
                v.cpu_ms.append(children_cpu_ms() - children)
                if v.via_authd:
                    v.authd_cpu_ms.append(authd.cpu_ms() - before)
    for v in variants:
        for _ in range(RSS_RUNS):
            stdin = v.prepare()
            v.rss_kb.append(peak_rss(pamtester_args(v.service, v.user, v.rhost), stdin))
    time.sleep(0.3)  # the last audit datagrams
    served = {}
    for v in variants:
        if v.name.startswith("campus-mfa"):
            lines = [line for line in fx.audit_lines
                     if f"service={v.service} " in line and f"source={v.rhost} " in line]
            served[v.name] = (len(lines), sum(audit_pid(line) == authd.pid for line in lines))
    return WholeProcess(variants, authd.status(), served)


# -- where the time goes ------------------------------------------------------------------

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_times(fx: Fixture, user: User, rhost: str,
                 authd: str | None = None) -> tuple[float, list[tuple]]:
    """Median over runs: total import time after the mark, and the heaviest imports
    (name, depth, cumulative ms, self ms). ``authd``: the module's side of a login that
    the authd at that socket runs."""
    script = str(ROOT / "bench" / "login_once.py")
    via = ["--authd", authd] if authd else []
    totals, per_module = [], {}
    for _ in range(IMPORT_RUNS):
        fx.reset(user)
        done = subprocess.run([PY, "-I", "-X", "importtime", script, *via, fx.config_path,
                               user.uid, rhost, code_now(user.secret)],
                              capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"login_once failed:\n{done.stderr[-2000:]}")
        lines = done.stderr.split("bench: imports start here\n", 1)[1].splitlines()
        total = 0
        for line in lines:
            m = IMPORT_LINE.match(line)
            if not m:
                continue
            self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
            total += self_us
            per_module.setdefault((name, indent // 2), []).append((cum_us, self_us))
        totals.append(total / 1000)
    rows = [(name, depth, statistics.median(c for c, _ in v) / 1000,
             statistics.median(s for _, s in v) / 1000)
            for (name, depth), v in per_module.items()]
    rows.sort(key=lambda r: -r[2])
    return statistics.median(totals), rows


def profile(fx: Fixture, user: User) -> str:
    fx.reset(user)
    done = subprocess.run([PY, "-I", str(ROOT / "bench" / "login_once.py"), "--profile",
                           fx.config_path, user.uid, OFF, code_now(user.secret)],
                          capture_output=True, text=True, check=True, timeout=60)
    text = done.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(text) if "function calls" in line)
    noise = ("<frozen importlib", "builtins.exec", "List reduced")
    kept = [line.rstrip().replace(str(ROOT) + "/", "")
            .replace("/usr/lib/python3/dist-packages/", "").replace("/usr/lib/python3.11/", "")
            for line in text[start:] if not any(n in line for n in noise)]
    return "\n".join(kept[:30])


# -- concurrency --------------------------------------------------------------------------

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
        fx.audit_lines.clear()

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
        for line in fx.audit_lines:
            if f"service={service} " in line:
                lines.setdefault(re.search(r"user=(\S+)", line)[1], []).append(line)
        for u, ok, run in zip(batch, expect, runs):
            found = lines.get(u.uid, [])
            line = found[0] if found else ""
            by_authd = audit_pid(line) == authd_pid
            from_authd += by_authd
            right += run.ok == ok and len(found) == 1 and by_authd == (mode == "via authd") \
                and ("outcome=success" in line) == ok
            if not line:
                key = "no audit line"
            elif len(found) > 1:
                key = f"{len(found)} audit lines"
            elif by_authd != (mode == "via authd"):
                key = f"audit line from pid {audit_pid(line)} ({mode})"
            elif ("outcome=success" in line) != ok:
                reason = re.search(r'reason="?(.*?)"?$', line)
                key = re.sub(r"\d+(\.\d+)?", "N", reason[1]) if reason else line
            else:
                continue
            mismatch += 1
            why[key] = why.get(key, 0) + 1
    return Level(mode, n, len(latencies), elapsed, latencies, wrong, mismatch, from_authd,
                 right, why, children_cpu / len(latencies), authd_cpu / len(latencies))


def concurrency(fx: Fixture, users: list[User], authd: Authd) -> list[Level]:
    """Each N via the authd and in-process, one right after the other."""
    service = mfa_services(fx, authd)
    levels = []
    for n in CONCURRENCY:
        for mode in ("via authd", "in-process"):
            levels.append(burst_level(fx, users, service[mode], n, mode, authd.pid))
            print(f"bench:   N = {n} {mode}: {levels[-1].logins} logins, "
                  f"{levels[-1].wrong_verdicts} wrong", flush=True)
    return levels


# -- warm verifications -------------------------------------------------------------------

WARM_VERIFY = "verify_code (count-attempt CAS modify + HMAC window + success CAS modify)"
WARM_READ_VERIFY = "read_token + verify_code (2 searches + 2 modifies)"
WARM_HMAC = "matching_step alone (HMAC window, no directory)"


@dataclass(frozen=True)
class Warm:
    rate: float          # calls per second
    cpu_ms: float        # this process's CPU per call
    slapd_cpu_ms: float  # slapd's CPU per call


def warm_verifications(fx: Fixture, user: User) -> dict[str, Warm]:
    """Real accepts in this process over one connection: each call uses the next time
    step (``now`` advances 30 s per call), so the replay guard and the CAS write run."""
    fx.reset(user)
    base = time.time()
    nows = [base + PARAMS.period * (k + 1) for k in range(2 * WARM_VERIFICATIONS)]
    codes = [code_at_step(user.secret, time_step(now, PARAMS.period), PARAMS) for now in nows]
    out = {}

    def timed(name: str, loop) -> None:
        slapd, cpu, wall = proc_cpu_ms(fx.ldap.pid), time.process_time(), time.perf_counter()
        loop()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[name] = Warm(WARM_VERIFICATIONS / wall, cpu / WARM_VERIFICATIONS * 1000,
                         (proc_cpu_ms(fx.ldap.pid) - slapd) / WARM_VERIFICATIONS)

    with ServiceDirectory(fx.config.ldap) as directory:
        token = directory.read_token(user.token_dn)   # connect and bind once

        def verify_only() -> None:
            nonlocal token
            for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
                if not verify_code(directory, token, code, now).accepted:
                    raise RuntimeError("warm verification refused")
                token = replace(token, last_step=time_step(now, PARAMS.period))

        def read_and_verify() -> None:
            for now, code in zip(nows[WARM_VERIFICATIONS:], codes[WARM_VERIFICATIONS:]):
                fresh = directory.read_token(user.token_dn)
                if not verify_code(directory, fresh, code, now).accepted:
                    raise RuntimeError("warm verification refused")
        timed(WARM_VERIFY, verify_only)
        timed(WARM_READ_VERIFY, read_and_verify)
    from policy.rules.totp import matching_step

    def hmac_only() -> None:
        for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
            matching_step(user.secret, code, PARAMS, now)
    timed(WARM_HMAC, hmac_only)
    fx.reset(user)
    return out


@dataclass
class OpCost:
    """One LDAP operation, over one reused connection, LDAP_OPS times."""
    client: str
    op: str
    count: int = 0
    wall: float = 0.0        # seconds, all counted operations
    cpu: float = 0.0         # this process's CPU seconds (user + system)
    slapd_cpu: float = 0.0   # slapd's CPU seconds meanwhile

    def per_op_ms(self, what: str) -> float:
        return getattr(self, what) / self.count * 1000


def ldap_op_costs(fx: Fixture, user: User,
                  other: User) -> tuple[list[OpCost], dict[str, float]]:
    """A base search of the token entry (what read_token does, twice) and a compare-and-
    swap modify shaped like record_success (delete the last step, add the next, two
    replaces), as the service DN over one connection, with ldap3 (the connection
    policy.directory opens) and with python-ldap (libldap), in alternating blocks; in the
    same blocks, policy's verify_code over that ldap3 connection, on ``other``'s token (the
    modifies above change ``user``'s last step), so that the two compare under the same
    load. Also what importing each costs in a fresh interpreter."""
    import ldap   # python-ldap: a measurement only, policy/ uses ldap3

    cfg = fx.config.ldap
    dn = user.token_dn
    fx.reset(user)
    fx.reset(other)
    directory = ServiceDirectory(cfg)
    l3 = directory.conn                                   # open + bind, as in production
    token = directory.read_token(other.token_dn)
    clock = [time.time()]
    pl = ldap.initialize(cfg.uris[0])
    pl.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    pl.set_option(ldap.OPT_NETWORK_TIMEOUT, cfg.timeout)
    pl.set_option(ldap.OPT_TIMEOUT, cfg.timeout)
    pl.simple_bind_s(cfg.bind_dn, read_secret_file(cfg.bind_password_file, "bind"))
    step = [0]

    def next_step() -> tuple[str, str, str]:
        step[0] += 1
        return str(step[0] - 1), str(step[0]), time.strftime("%Y%m%d%H%M%SZ", time.gmtime())

    def l3_search() -> None:
        l3.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                  attributes=["oathSecret", "oathTOTPParams", "oathTOTPLastTimeStep",
                              "oathFailureCount", "oathLastFailure"])
        if len(l3.response) != 1:
            raise RuntimeError("ldap3 search found no token")

    def l3_modify() -> None:
        old, new, when = next_step()
        l3.modify(dn, {"oathTOTPLastTimeStep": [(ldap3.MODIFY_DELETE, [old]),
                                                (ldap3.MODIFY_ADD, [new])],
                       "oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
                       "oathLastLogin": [(ldap3.MODIFY_REPLACE, [when])]})

    def pl_search() -> None:
        found = pl.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)",
                            ["oathSecret", "oathTOTPParams", "oathTOTPLastTimeStep",
                             "oathFailureCount", "oathLastFailure"])
        if len(found) != 1:
            raise RuntimeError("python-ldap search found no token")

    def pl_modify() -> None:
        old, new, when = (v.encode() for v in next_step())
        pl.modify_s(dn, [(ldap.MOD_DELETE, "oathTOTPLastTimeStep", [old]),
                         (ldap.MOD_ADD, "oathTOTPLastTimeStep", [new]),
                         (ldap.MOD_REPLACE, "oathFailureCount", [b"0"]),
                         (ldap.MOD_REPLACE, "oathLastLogin", [when])])

    def policy_verify() -> None:
        nonlocal token
        clock[0] += PARAMS.period                         # the next step: a real accept
        step_now = time_step(clock[0], PARAMS.period)
        if not verify_code(directory, token, code_at_step(other.secret, step_now, PARAMS),
                           clock[0]).accepted:
            raise RuntimeError("verify_code refused in the per-operation blocks")
        token = replace(token, last_step=step_now)

    costs = {("policy", "verify_code"): (OpCost("policy (ldap3)", "verify_code"),
                                         policy_verify),
             ("ldap3", "search"): (OpCost("ldap3", "search"), l3_search),
             ("python-ldap", "search"): (OpCost("python-ldap", "search"), pl_search),
             ("ldap3", "modify"): (OpCost("ldap3", "modify"), l3_modify),
             ("python-ldap", "modify"): (OpCost("python-ldap", "modify"), pl_modify)}
    try:
        for _, run in costs.values():      # warm both connections and code paths
            for _ in range(20):
                run()
        per_block = LDAP_OPS // LDAP_BLOCKS
        for block in range(LDAP_BLOCKS):
            order = list(costs.values())
            if block % 2:
                order.reverse()
            for cost, run in order:
                slapd0, cpu0, wall0 = proc_cpu_ms(fx.ldap.pid), time.process_time(), \
                    time.perf_counter()
                for _ in range(per_block):
                    run()
                cost.wall += time.perf_counter() - wall0
                cost.cpu += time.process_time() - cpu0
                cost.slapd_cpu += (proc_cpu_ms(fx.ldap.pid) - slapd0) / 1000
                cost.count += per_block
    finally:
        pl.unbind_s()
        directory.close()
        fx.reset(user)
        fx.reset(other)

    imports = {}
    for name in ("ldap3", "ldap"):
        times = []
        for _ in range(IMPORT_RUNS):
            done = subprocess.run([PY, "-I", "-X", "importtime", "-c", f"import {name}"],
                                  capture_output=True, text=True, check=True, timeout=60)
            for line in done.stderr.splitlines():
                m = IMPORT_LINE.match(line)
                if m and m[4] == name and not m[3]:
                    times.append(int(m[2]) / 1000)
        imports[name] = statistics.median(times)
    return [cost for cost, _ in costs.values()], imports


# -- the enrollment site ------------------------------------------------------------------

def site(fx: Fixture) -> list[dict]:
    import requests

    port = devldap.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAMPUS_MFA_CONFIG": fx.config_path}
    proc = subprocess.Popen(["/usr/bin/gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "enroll_web:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(base + "/login", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not come up")
                time.sleep(0.1)
        with EnrollmentDirectory(fx.config.ldap) as directory:   # alice gets the role
            directory.set_role(directory.find_user("alice")[0], True)
        http = requests.Session()
        csrf = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')

        def post(path: str, data: dict) -> None:
            token = csrf.search(http.get(base + path).text)[1]
            http.post(base + path, data={**data, "csrf_token": token}).raise_for_status()
        post("/login", {"username": "alice", "password": "alice-pass"})
        post("/mfa/setup", {"current_code": ""})
        if "<svg" not in http.get(base + "/mfa/token").text:
            raise RuntimeError("no QR code on /mfa/token after setup")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        return [wrk("login page (GET /login)", base + "/login", ""),
                wrk("QR page (GET /mfa/token, signed in, campus)", base + "/mfa/token",
                    cookie)]
    finally:
        proc.terminate()
        proc.wait(10)


def wrk(name: str, url: str, cookie: str) -> dict:
    args = ["wrk", *WRK, url] + (["-H", f"Cookie: {cookie}"] if cookie else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"name": name, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50": ms("50%"), "p99": ms("99%"),
            "requests": int(re.search(r"(\d+) requests in", out)[1]),
            "non2xx": int(bad[1]) if bad else 0}


# -- report -------------------------------------------------------------------------------

def versions() -> str:
    def deb(pkg: str) -> str:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                              capture_output=True, text=True, check=False)
        return done.stdout or "?"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.machine())
    pkgs = ("libpam-python", "python3-ldap3", "python3-ldap", "python3-pyotp", "slapd", "pamtester",
            "libpam-google-authenticator", "libpam-oath", "gunicorn", "python3-flask", "wrk")
    return (f"- machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}\n"
            f"- Python {platform.python_version()} ({PY}); "
            + ", ".join(f"{p} {deb(p)}" for p in pkgs) + "\n")


def chart(variants: list[Variant], floor: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.boxplot([[r.seconds * 1000 for r in v.runs] for v in variants], vert=False,
               labels=[f"{v.name}  ({v.median_ms() / floor:.2f}x)" for v in variants],
               showfliers=False)
    for factor, style in ((1.2, ":"), (2.0, "--")):
        ax.axvline(floor * factor, color="grey", linestyle=style,
                   label=f"{factor}x empty pam_python")
    ax.invert_yaxis()
    ax.set_xlabel("ms per pamtester process (whole process, one authentication)")
    ax.set_title(f"One login, {ROUNDS} interleaved rounds (median x empty pam_python)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def report(r: dict) -> str:
    """The report from everything main() measured (``r``)."""
    wp: WholeProcess = r["whole"]
    variants = wp.variants
    by_name = {v.name: v for v in variants}
    floor = by_name[PYTHON_FLOOR].median_ms()

    def ratio(name: str) -> float:
        return by_name[name].median_ms() / floor

    levels: list[Level] = r["levels"]
    warm: dict[str, Warm] = r["warm"]
    ops: list[OpCost] = r["ops"]
    cost = {(o.client, o.op): o for o in ops}
    hmac_ms = 1000 / warm[WARM_HMAC].rate
    verify_rate = warm[WARM_VERIFY].rate

    def ceiling(client: str, searches: int, modifies: int, what: str = "wall") -> float:
        per = (searches * cost[(client, "search")].per_op_ms(what)
               + modifies * cost[(client, "modify")].per_op_ms(what))
        return per + hmac_ms
    serial = {c: 1000 / ceiling(c, 0, 2) for c in ("ldap3", "python-ldap")}
    pv_ms = cost[("policy (ldap3)", "verify_code")].per_op_ms("wall")
    top = {lv.mode: lv for lv in levels if lv.n == max(CONCURRENCY)}

    def right(lv: Level) -> str:
        return (f"{lv.right}/{lv.logins} right "
                f"({lv.wrong_verdicts} wrong exit statuses, {lv.audit_mismatch} audit "
                f"mismatches)")
    def ok(lv: Level) -> bool:
        return lv.wrong_verdicts == 0 and lv.audit_mismatch == 0 and lv.right == lv.logins
    all_right = all(ok(lv) for lv in levels)
    h_campus, h_off = ratio(AUTHD_CAMPUS), ratio(AUTHD_OFF)
    i_campus, i_off = ratio(IN_CAMPUS), ratio(IN_OFF)
    n_top = max(CONCURRENCY)
    out = ["# campus-mfa benchmark\n",
           "| target (issue) | measured | |", "|---|---|---|",
           f"| campus path <= 1.2x the empty pam_python module | **{h_campus:.2f}x** via the "
           f"authd (in-process, authd=off: {i_campus:.2f}x) | {verdict(h_campus <= 1.2)} |",
           f"| off-campus path, correct code (LDAP read, verify, CAS write) <= 2x | "
           f"**{h_off:.2f}x** via the authd (in-process, authd=off: {i_off:.2f}x) | "
           f"{verdict(h_off <= 2.0)} |",
           f"| every verdict right at N = {n_top} parallel logins | via the authd "
           f"{right(top['via authd'])}; in-process {right(top['in-process'])} | "
           f"{verdict(all(ok(lv) for lv in top.values()))} |",
           f"| >= 2,000 warm verifications/s, one process, one reused connection | "
           f"**{verify_rate:,.0f}/s** with ldap3 ({1000 / pv_ms:,.0f}/s interleaved with the "
           f"per-operation costs, where 2 modifies + HMAC give a ceiling of "
           f"{serial['ldap3']:,.0f}/s with ldap3 and {serial['python-ldap']:,.0f}/s with "
           f"python-ldap; section 4) | "
           f"{verdict(verify_rate >= 2000)} |", ""]
    hv = by_name[AUTHD_OFF]
    out.append(f"Not in the via-authd ratios: the authd's own CPU, about "
               f"{statistics.mean(hv.authd_cpu_ms):.0f} ms per off-campus login and "
               f"{statistics.mean(by_name[AUTHD_CAMPUS].authd_cpu_ms):.1f} ms per campus "
               f"login, and its memory, {mb(r['authd_end']['VmHWM'])} MB peak RSS resident "
               f"for all logins (section 1). The in-process ratios are what a login costs "
               f"when no authd runs (authd=off, or no socket).\n")
    checks = []
    sec1_wrong = sum(len(v.runs) - sum(x.ok for x in v.runs) for v in variants)
    checks.append(f"section 1: {'every' if not sec1_wrong else f'{sec1_wrong} NOT'} login "
                  f"ended as expected")
    expected = WARMUP + ROUNDS + RSS_RUNS
    for name, (lines, helped) in wp.served.items():
        want = lines if name.startswith("campus-mfa via authd") else 0
        if lines != expected or helped != want:
            checks.append(f"**{name}: {lines} audit lines for {expected} logins, {helped} "
                          f"from the authd (expected {want})**")
    if all(lines == expected and helped == (lines if n.startswith("campus-mfa via") else 0)
           for n, (lines, helped) in wp.served.items()):
        checks.append(f"the authd (pid {r['authd_pid']}) wrote the audit line of every "
                      f"via-authd login and of no in-process one ({expected} each)")
    checks.append("section 3: every verdict right at every N, both ways" if all_right
                  else "**section 3: some verdicts wrong (below)**")
    checks.append("the authd printed nothing besides its ready line" if not r["authd_stderr"]
                  else f"**the authd printed {len(r['authd_stderr'])} more lines (end of "
                       f"the report)**")
    checks.append(f"the authd exited with status {r['authd_exit']} on SIGTERM")
    out.append("Checks: " + "; ".join(checks) + ".\n")

    n_mod, stale_start, stale_end = r["bytecode"]
    out += [versions(),
            f"- {ROUNDS} interleaved rounds (+{WARMUP} warm-up), whole run {r['seconds']:.0f} s; "
            f"1-minute load average {r['load'][0]:.1f} at the start, {r['load'][1]:.1f} at the "
            f"end; {r['busy']} (other work on the machine slows everything, the ratios "
            "least)",
            "- Bytecode: before measuring, the bench byte-compiled "
            f"{', '.join(c + '/' for c in COMPILED)} "
            f"(`{PY} -m compileall -q`, PYTHONDONTWRITEBYTECODE unset for that call), as "
            "dh_python3 does for the installed package; pam_python never writes .pyc files, "
            "so a fresh clone would compile every module from source on every login. "
            f"{n_mod} modules; without an up-to-date .pyc after compiling: "
            f"{', '.join(stale_start) or 'none'}; at the end of the run: "
            f"{', '.join(stale_end) or 'none'}. (pam_python reads the module file named on "
            "the PAM line, pam_module/pam_campus_mfa.py and bench/empty_module.py, from "
            "source every time, installed or not; both are small.)",
            f"- Authd: `{PY} -m policy.authd --socket <work dir>/authd.sock`, started for the "
            "run (pid "
            f"{r['authd_pid']}); the via-authd variants use the PAM option "
            "`authd=<that socket>`, the in-process ones `authd=off`.\n"]

    out += ["## 1. One login, whole pamtester process\n",
            "| variant | median ms | p25-p75 ms | x empty pam_python | CPU ms (pamtester) | "
            "authd CPU ms | peak RSS MB (pamtester) | verdicts right |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in variants:
        q1, q3 = v.quartiles_ms()
        cpu = statistics.median(v.cpu_ms)
        authd_cpu = f"{statistics.mean(v.authd_cpu_ms):.1f}" if v.via_authd else "-"
        out.append(f"| {v.name} | {v.median_ms():.1f} | {q1:.1f}-{q3:.1f} | "
                   f"{v.median_ms() / floor:.2f} | {cpu:.1f} | "
                   f"{authd_cpu} | {mb(statistics.median(v.rss_kb))} | "
                   f"{sum(x.ok for x in v.runs)}/{len(v.runs)} |")
    h1, h3 = wp.authd_after, r["authd_end"]
    out.append(f"\nTargets: campus <= 1.2x, off campus <= 2x the empty pam_python module. "
               f"The chart is bench/out/logins.png. CPU ms (pamtester): "
               f"user + system time of each timed pamtester process (getrusage of this "
               f"process's children), median. Authd CPU ms: the authd process's user + "
               f"system time during each timed via-authd login (/proc/PID/stat, which counts "
               f"in 10 ms units), mean of {ROUNDS}; it is not in the pamtester columns. Peak "
               f"RSS: median of {RSS_RUNS} more runs under /usr/bin/time.\n")
    out.append(f"**The authd's own memory** (pid {r['authd_pid']}; the via-authd pamtester "
               f"RSS above does not include ldap3 or the parsed configuration, this process "
               f"holds them once for all logins): after section 1 ({expected * 2} via-authd "
               f"logins, one at a time) VmRSS {mb(h1['VmRSS'])} MB, VmHWM (peak) "
               f"{mb(h1['VmHWM'])} MB, {h1['Threads']} threads; at the end of the run, after "
               f"section 3's N = {n_top} parallel logins, VmRSS {mb(h3['VmRSS'])} MB, VmHWM "
               f"{mb(h3['VmHWM'])} MB, {h3['Threads']} threads. The empty pam_python "
               f"pamtester peaks at {mb(statistics.median(by_name[PYTHON_FLOOR].rss_kb))} MB.\n")

    out.append("## 2. Where the time goes\n")
    imports = r["imports"]
    for label, name, key in (("in-process, campus path", IN_CAMPUS, "in-process, campus path"),
                             ("in-process, off-campus path", IN_OFF,
                              "in-process, off-campus path")):
        out.append(f"- {label}: {by_name[name].median_ms() - floor:.0f} ms over the empty "
                   f"module, of which {imports[key][0]:.0f} ms are imports (below)")
    hkey = "via authd, module side"
    for label, name in (("via authd, campus path", AUTHD_CAMPUS),
                        ("via authd, off-campus path", AUTHD_OFF)):
        v = by_name[name]
        out.append(f"- {label}: {v.median_ms() - floor:.1f} ms over the empty module; the "
                   f"module side imports {imports[hkey][0]:.1f} ms (below), the rest is the "
                   f"socket round trips and the authd's work, which took "
                   f"{statistics.mean(v.authd_cpu_ms):.1f} ms of the authd's CPU per login")
    out.append("")
    for label, (total, rows) in imports.items():
        out.append(f"`-X importtime`, {label}: {total:.1f} ms of imports after interpreter "
                   f"start (median of {IMPORT_RUNS}). Heaviest (cumulative):\n")
        out += ["| import | depth | cumulative ms | self ms |", "|---|---:|---:|---:|"]
        out += [f"| {n} | {d} | {c:.1f} | {s_:.1f} |" for n, d, c, s_ in rows[:12]]
        out.append("")
    out += ["cProfile of one in-process off-campus authentication in a fresh process "
            "(bench/login_once.py: module load + config + policy.login.login):\n",
            "```", r["profile"], "```\n"]

    out += [f"## 3. Parallel off-campus logins (one pamtester and one user each, one slapd)\n",
            f"Each N via the authd and in-process (authd=off), one right after the other. "
            f"One login in {WRONG_EVERY} types a wrong code; a verdict is right when "
            "pamtester's exit status and the login's audit line match the code typed, and "
            "the audit line came from the authd's pid (via the authd) or from another "
            "(in-process). Via the authd the audit lines are written by the authd, to the "
            "config's audit socket the bench listens on.\n",
            "| mode | N | logins | logins/s | p50 ms | p95 ms | p99 ms | CPU ms per login: "
            "pamtester + authd | wrong verdicts | audit mismatches | audit lines from the "
            "authd |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {lv.mode} | {lv.n} | {lv.logins} | {lv.logins / lv.seconds:.0f} | "
            f"{lv.pct(50):.0f} | {lv.pct(95):.0f} | {lv.pct(99):.0f} | "
            f"{lv.pamtester_cpu_ms:.0f} + {lv.authd_cpu_ms:.0f} | {lv.wrong_verdicts} | "
            f"{lv.audit_mismatch} | {lv.from_authd} |" for lv in levels]
    out.append(f"\nCPU per login: the pamtester processes' user + system time (getrusage of "
               f"this process's children) and the authd's (/proc/PID/stat) over each level, "
               f"divided by its logins; the machine has {os.cpu_count()} CPUs.")
    for lv in levels:
        out += [f"- {lv.mode}, N = {lv.n}, ended wrongly {count}x: {why}"
                for why, count in sorted(lv.why_wrong.items())]

    out += ["\n## 4. Warm verifications in one process, one reused connection\n",
            "| what | per second | ms per call | CPU ms per call (this process) | "
            "slapd CPU ms per call |", "|---|---:|---:|---:|---:|"]
    out += [f"| {k} | {w.rate:,.0f} | {1000 / w.rate:.3f} | {w.cpu_ms:.3f} | "
            f"{w.slapd_cpu_ms:.3f} |" for k, w in warm.items()]
    out += [f"\n### What one LDAP operation costs (one reused connection, service DN, "
            f"{LDAP_OPS} each, in {LDAP_BLOCKS} blocks alternating the clients)\n",
            "policy (ldap3) verify_code: the whole accepting call as in the table above, in "
            "the same alternating blocks (on another bench user's token), so that it compares "
            "with the operations under the same load. "
            "search: a base search of the token entry with read_token's attributes; modify: "
            "a compare-and-swap shaped like record_success (delete the last step and add the "
            "next, replace the failure count and the last login). ldap3 over the connection "
            "policy.directory opens; python-ldap (Debian's python3-ldap, a C binding to "
            "libldap) over `ldap.initialize` + `simple_bind_s` to the same slapd. "
            "A measurement only: policy/ uses ldap3.\n",
            "| client | operation | wall ms/op | ops/s, one at a time | client CPU ms/op | "
            "slapd CPU ms/op |", "|---|---|---:|---:|---:|---:|"]
    out += [f"| {o.client} | {o.op} | {o.per_op_ms('wall'):.3f} | "
            f"{1000 / o.per_op_ms('wall'):,.0f} | {o.per_op_ms('cpu'):.3f} | "
            f"{o.per_op_ms('slapd_cpu'):.3f} |" for o in ops]
    imp = r["ldap_imports"]
    l3m, plm = cost[("ldap3", "modify")], cost[("python-ldap", "modify")]
    l3s, pls = cost[("ldap3", "search")], cost[("python-ldap", "search")]
    pv = cost[("policy (ldap3)", "verify_code")]
    measured_ms = pv.per_op_ms("wall")
    overhead = measured_ms - ceiling("ldap3", 0, 2)
    overhead_cpu = pv.per_op_ms("cpu") - ceiling("ldap3", 0, 2, "cpu")
    cpus = os.cpu_count() or 1

    def cpu_bound(client: str) -> float:
        return cpus * 1000 / (ceiling(client, 0, 2, "cpu") + ceiling(client, 0, 2, "slapd_cpu")
                              - hmac_ms)
    out += ["",
            f"Importing each in a fresh interpreter (`-X importtime`, median of "
            f"{IMPORT_RUNS}): ldap3 {imp['ldap3']:.0f} ms, python-ldap (`import ldap`) "
            f"{imp['ldap']:.0f} ms.\n",
            "**Operations per verification.** A verify_code call that accepts makes two LDAP "
            "operations, both modifies: `count_attempt` (a compare-and-swap on "
            "oathFailureCount, before the code is looked at) and `record_success` (a "
            "compare-and-swap on oathTOTPLastTimeStep that also clears the counter); it "
            "searches nothing, since the token was read before (policy/verify.py, "
            "policy/directory.py). A lost compare-and-swap adds a read_token (2 searches: "
            "token and params) and another modify per retry. A whole off-campus login adds "
            "connect + bind and 4 searches (user, groups, token, params) before that; a "
            "wrong code costs one modify, then 2 searches to re-read the token.\n",
            f"**The ceiling that follows**, one connection, one call at a time: 2 x modify + "
            f"the HMAC window ({hmac_ms:.3f} ms, matching_step above):\n",
            f"- ldap3: 2 x {l3m.per_op_ms('wall'):.3f} + {hmac_ms:.3f} = "
            f"{ceiling('ldap3', 0, 2):.3f} ms, at most **{serial['ldap3']:,.0f}/s**. "
            f"verify_code in the same blocks: {measured_ms:.3f} ms "
            f"({1000 / measured_ms:,.0f}/s; {verify_rate:,.0f}/s in the run of "
            f"{WARM_VERIFICATIONS} above); "
            + (f"the difference, {overhead:.3f} ms ({overhead_cpu:.3f} ms of CPU), is "
               "policy's own Python around the two calls (Directory._call, its exception "
               "handling, the Verdict)." if overhead > 0 else
               f"the difference, {overhead:.3f} ms, is within the noise: policy's own Python "
               f"around the two calls costs little ({overhead_cpu:.3f} ms of CPU)."),
            f"- python-ldap: 2 x {plm.per_op_ms('wall'):.3f} + {hmac_ms:.3f} = "
            f"{ceiling('python-ldap', 0, 2):.3f} ms, at most "
            f"**{serial['python-ldap']:,.0f}/s**, "
            f"{serial['python-ldap'] / serial['ldap3']:.1f}x ldap3's ceiling.",
            f"- with a fresh read_token first (2 searches + 2 modifies): ldap3 "
            f"{1000 / ceiling('ldap3', 2, 2):,.0f}/s, python-ldap "
            f"{1000 / ceiling('python-ldap', 2, 2):,.0f}/s (measured with ldap3: "
            f"{warm[WARM_READ_VERIFY].rate:,.0f}/s).",
            f"- where a modify's wall time goes: ldap3 spends {l3m.per_op_ms('cpu'):.3f} ms "
            f"of client CPU per modify ({l3s.per_op_ms('cpu'):.3f} per search), python-ldap "
            f"{plm.per_op_ms('cpu'):.3f} ({pls.per_op_ms('cpu'):.3f}); slapd spends about "
            f"{(l3m.per_op_ms('slapd_cpu') + plm.per_op_ms('slapd_cpu')) / 2:.3f} ms of CPU "
            "per modify whichever client sends it, and the rest is the loopback round "
            "trip and scheduling. A C binding removes most of the client's share, not "
            "slapd's.",
            f"- with many connections in parallel the bound is CPU, not latency: this "
            f"machine has {cpus} CPUs and a verification costs client + slapd CPU, so at "
            f"most about {cpu_bound('ldap3'):,.0f}/s with ldap3 and "
            f"{cpu_bound('python-ldap'):,.0f}/s with python-ldap, if nothing else ran; "
            f"slapd's two modifies alone would allow about "
            f"{cpus * 1000 / (l3m.per_op_ms('slapd_cpu') + plm.per_op_ms('slapd_cpu')):,.0f}"
            f"/s with a client that cost nothing.",
            ""]

    web = r["web"]
    out += ["## 5. Enrollment site (gunicorn -w 2, wrk " + " ".join(WRK) + ")\n",
            "| page | requests/s | p50 ms | p99 ms | requests | non-2xx/3xx |",
            "|---|---:|---:|---:|---:|---:|"]
    out += [f"| {w['name']} | {w['rps']:.0f} | {w['p50']:.1f} | {w['p99']:.1f} | "
            f"{w['requests']} | {w['non2xx']} |" for w in web]
    if r["authd_stderr"]:
        out += ["\n## The authd's other output\n", "```", *r["authd_stderr"][-60:], "```"]
    return "\n".join(out) + "\n"


class Deadline(Exception):
    """The run took longer than BENCH_DEADLINE."""


def on_alarm(signum, frame) -> None:
    raise Deadline(f"bench: stopped after {DEADLINE} s (BENCH_DEADLINE)")


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
    r: dict = {}
    try:
        fx = Fixture(work)
        users = fx.enroll([f"bench{i:03d}" for i in range(max(CONCURRENCY) + 1)])
        solo, crowd = users[-1], users[:-1]
        authd = Authd(work)
        r["authd_pid"] = authd.pid
        print(f"bench: authd pid {authd.pid} at {authd.socket}", flush=True)
        print("bench: 1/5 whole-process logins", flush=True)
        r["whole"] = whole_process(fx, solo, authd)
        print("bench: 2/5 import times and profile", flush=True)
        r["imports"] = {
            "in-process, campus path": import_times(fx, solo, CAMPUS),
            "in-process, off-campus path": import_times(fx, solo, OFF),
            "via authd, module side": import_times(fx, solo, CAMPUS, authd.socket)}
        r["profile"] = profile(fx, solo)
        print("bench: 3/5 parallel logins", flush=True)
        r["levels"] = concurrency(fx, crowd, authd)
        print("bench: 4/5 warm verifications and LDAP operations", flush=True)
        r["warm"] = warm_verifications(fx, solo)
        r["ops"], r["ldap_imports"] = ldap_op_costs(fx, solo, crowd[0])
        r["authd_end"] = authd.status()
        print("bench: 5/5 enrollment site", flush=True)
        r["web"] = site(fx)
        r["authd_exit"] = authd.stop()
        time.sleep(0.1)
        r["authd_stderr"] = authd.stderr
        r["bytecode"] = (n_modules, stale_start, bytecode_state()[1])
        r["seconds"] = time.monotonic() - began
        r["load"] = (load_start, os.getloadavg()[0])
        r["busy"] = machine_load(cpu_start, cpu_times())
        (OUT / "report.md").write_text(report(r))
        floor = next(v for v in r["whole"].variants if v.name == PYTHON_FLOOR).median_ms()
        chart(r["whole"].variants, floor, OUT / "logins.png")
    finally:
        signal.alarm(0)
        if authd is not None:
            authd.stop()
        if fx is not None:
            fx.close()
        shutil.rmtree(work, ignore_errors=True)
    print(OUT / "report.md")
    print(OUT / "logins.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
