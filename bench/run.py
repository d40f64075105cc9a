#!/usr/bin/python3
"""`make bench`: what one login costs beside the peers, measured side by side in one run.

Starts a throwaway slapd (policy.devldap), enrolls bench users, writes PAM services named
campus-mfa-bench-* (removed at the end), and measures, all on loopback:

1. whole-process pamtester cost, interleaved: pam_permit, pam_google_authenticator,
   pam_oath, an empty pam_python module, campus-mfa on and off campus; medians, ratios to
   the empty pam_python module, peak RSS of each pamtester process;
2. where the time goes: ``-X importtime`` and cProfile of bench/login_once.py;
3. N = 10, 50, 200 parallel off-campus pamtester logins, one user each, one in ten with a
   wrong code: throughput, latency percentiles, every verdict checked;
4. warm verifications/s in this process over one reused connection;
5. the enrollment site under gunicorn -w 2 with wrk: login page and QR page.

Replay guard: every accepted code must be of a later time step than the token's last one.
Between runs the bench resets the token as the admin DN (oathTOTPLastTimeStep and
oathFailureCount to 0, oathLastFailure removed), outside the timed part; the peers get the
same treatment (their secret and state files are rewritten before each run).

Writes bench/out/report.md and bench/out/logins.png. BENCH_ROUNDS (default 40) sets the
number of interleaved rounds.
"""
from __future__ import annotations

import os
import platform
import random
import re
import shutil
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

from policy import devldap  # noqa: E402
from policy.config import load_config  # noqa: E402
from policy.directory import Directory  # noqa: E402
from policy.totp import TotpParams, code_at_step, new_secret, time_step, to_base32  # noqa: E402
from policy.verify import verify_code  # noqa: E402

PY = "/usr/bin/python3"
OUT = ROOT / "bench" / "out"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
WARMUP = 3
CONCURRENCY = (10, 50, 200)
LOGINS_PER_LEVEL = 100          # bursts of N until at least this many logins per level
WRONG_EVERY = 10                # in the concurrency bursts, one user in ten types a wrong code
WARM_VERIFICATIONS = 3000
WRK = ("-t2", "-c8", "-d5s", "--latency")
IMPORT_RUNS = 7
RSS_RUNS = 5
OFF, CAMPUS = "203.0.113.7", "127.0.0.1"
PARAMS = TotpParams()
PAM_D = Path("/etc/pam.d")
SERVICE = "campus-mfa-bench-"
PYTHON_FLOOR = "pam_python, empty module"


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
        with Directory(self.config.ldap, write=True) as directory:
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


# -- running pamtester --------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    start: float
    seconds: float
    ok: bool


def spawn(args: list[str], stdin: str = "") -> Run:
    """Run one process to its end: when it started, its wall time, whether it exited 0."""
    start = time.perf_counter()
    done = subprocess.run(args, input=stdin.encode(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    return Run(start, time.perf_counter() - start, done.returncode == 0)


def rss_and_cpu(args: list[str], stdin: str = "") -> tuple[int, float]:
    """Peak RSS (KB) and CPU time (ms, user + system) of the process, from /usr/bin/time
    (wait4 here would report this process's own peak, which a forked child inherits)."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", out.name, *args],
                       input=stdin.encode(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        rss, user, system = out.read().split()[-3:]
        return int(rss), (float(user) + float(system)) * 1000


def login_when_asked(service: str, user: str, rhost: str, answer) -> Run:
    """pamtester, typing ``answer()`` only once the prompt is shown, as a person would:
    a code computed before a slow prompt could be out of the window when it is checked."""
    start = time.perf_counter()
    proc = subprocess.Popen(pamtester_args(service, user, rhost), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    runs: list[Run] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def median_ms(self) -> float:
        return statistics.median(r.seconds for r in self.runs) * 1000

    def quartiles_ms(self) -> tuple[float, float]:
        q = statistics.quantiles([r.seconds * 1000 for r in self.runs], n=4)
        return q[0], q[2]


def whole_process(fx: Fixture, user: User) -> list[Variant]:
    """Section 1: every variant once per round, in a shuffled order each round."""
    module = ROOT / "pam_module" / "pam_campus_mfa.py"
    ga, oath = fx.work / "google_authenticator", fx.work / "users.oath"
    svc = {
        "permit": fx.add_service("permit", "auth required pam_permit.so"),
        "ga": fx.add_service("ga", f"auth required pam_google_authenticator.so "
                                   f"secret={ga} user=root"),
        "oath": fx.add_service("oath", f"auth required pam_oath.so usersfile={oath} "
                                       f"window=1 digits=6"),
        "empty": fx.add_service("empty", f"auth required pam_python.so "
                                         f"{ROOT / 'bench' / 'empty_module.py'}"),
        "mfa": fx.add_service("mfa", f"auth required pam_python.so {module} "
                                     f"config={fx.config_path}"),
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
        Variant("campus-mfa, campus", svc["mfa"], user.uid, CAMPUS, lambda: ""),
        Variant("campus-mfa, off campus", svc["mfa"], user.uid, OFF, off_campus),
    ]
    rng = random.Random(7)
    for round_ in range(WARMUP + ROUNDS):
        order = variants[:]
        rng.shuffle(order)
        for v in order:
            run = pamtester(v.service, v.user, v.rhost, v.prepare())
            if round_ >= WARMUP:
                v.runs.append(run)
    for v in variants:
        measured = [rss_and_cpu(pamtester_args(v.service, v.user, v.rhost), v.prepare())
                    for _ in range(RSS_RUNS)]
        v.rss_kb, v.cpu_ms = [m[0] for m in measured], [m[1] for m in measured]
    return variants


# -- where the time goes ------------------------------------------------------------------

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_times(fx: Fixture, user: User, rhost: str) -> tuple[float, list[tuple]]:
    """Median over runs: total import time after the mark, and the heaviest imports
    (name, depth, cumulative ms, self ms)."""
    script = str(ROOT / "bench" / "login_once.py")
    totals, per_module = [], {}
    for _ in range(IMPORT_RUNS):
        fx.reset(user)
        done = subprocess.run([PY, "-I", "-X", "importtime", script, fx.config_path,
                               user.uid, rhost, code_now(user.secret)],
                              capture_output=True, text=True, check=False)
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
                          capture_output=True, text=True, check=True)
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
    n: int
    logins: int
    seconds: float
    latencies_ms: list[float]
    wrong_verdicts: int
    audit_mismatch: int
    why_wrong: dict[str, int]       # audit reason of each login that ended wrongly

    def pct(self, p: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]


def concurrency(fx: Fixture, users: list[User], service: str) -> list[Level]:
    levels = []
    for n in CONCURRENCY:
        latencies, elapsed, wrong, mismatch, why = [], 0.0, 0, 0, {}
        for _ in range(-(-LOGINS_PER_LEVEL // n)):
            batch = users[:n]
            for u in batch:
                fx.reset(u)
            expect = [i % WRONG_EVERY != WRONG_EVERY - 1 for i in range(n)]
            fx.audit_lines.clear()

            def one(u: User, ok: bool) -> Run:
                return login_when_asked(service, u.uid, OFF, lambda: (
                    code_now(u.secret) if ok else wrong_code(u.secret)))
            with ThreadPoolExecutor(max_workers=n) as pool:
                runs = list(pool.map(one, batch, expect))
            elapsed += max(r.start + r.seconds for r in runs) - min(r.start for r in runs)
            latencies += [r.seconds * 1000 for r in runs]
            wrong += sum(r.ok != ok for r, ok in zip(runs, expect))
            time.sleep(0.2)  # the last audit datagrams
            lines = {re.search(r"user=(\S+)", line)[1]: line for line in fx.audit_lines}
            for u, ok in zip(batch, expect):
                line = lines.get(u.uid, "")
                if ("outcome=success" in line) != ok:
                    mismatch += 1
                    reason = re.search(r'reason="?(.*?)"?$', line)
                    key = re.sub(r"\d+(\.\d+)?", "N", reason[1]) if reason else "no audit line"
                    why[key] = why.get(key, 0) + 1
        levels.append(Level(n, len(latencies), elapsed, latencies, wrong, mismatch, why))
    return levels


# -- warm verifications -------------------------------------------------------------------

def warm_verifications(fx: Fixture, user: User) -> dict[str, float]:
    """Real accepts in this process over one connection: each call uses the next time
    step (``now`` advances 30 s per call), so the replay guard and the CAS write run."""
    fx.reset(user)
    base = time.time()
    nows = [base + PARAMS.period * (k + 1) for k in range(2 * WARM_VERIFICATIONS)]
    codes = [code_at_step(user.secret, time_step(now, PARAMS.period), PARAMS) for now in nows]
    rates = {}
    with Directory(fx.config.ldap) as directory:
        token = directory.read_token(user.token_dn)   # connect and bind once
        start = time.perf_counter()
        for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
            if not verify_code(directory, token, code, now).accepted:
                raise RuntimeError("warm verification refused")
            token = replace(token, last_step=time_step(now, PARAMS.period))
        rates["verify_code (count attempt + HMAC window + CAS write)"] = \
            WARM_VERIFICATIONS / (time.perf_counter() - start)
        start = time.perf_counter()
        for now, code in zip(nows[WARM_VERIFICATIONS:], codes[WARM_VERIFICATIONS:]):
            token = directory.read_token(user.token_dn)
            if not verify_code(directory, token, code, now).accepted:
                raise RuntimeError("warm verification refused")
        rates["read_token + verify_code (2 reads + 2 writes)"] = \
            WARM_VERIFICATIONS / (time.perf_counter() - start)
    from policy.totp import matching_step

    start = time.perf_counter()
    for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
        matching_step(user.secret, code, PARAMS, now)
    rates["matching_step alone (no directory)"] = \
        WARM_VERIFICATIONS / (time.perf_counter() - start)
    return rates


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
        with Directory(fx.config.ldap, write=True) as directory:   # alice gets the role
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
    pkgs = ("libpam-python", "python3-ldap3", "python3-pyotp", "slapd", "pamtester",
            "libpam-google-authenticator", "libpam-oath", "gunicorn", "python3-flask", "wrk")
    return (f"- machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}\n"
            f"- Python {platform.python_version()} ({PY}); "
            + ", ".join(f"{p} {deb(p)}" for p in pkgs) + "\n")


def chart(variants: list[Variant], floor: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.boxplot([[r.seconds * 1000 for r in v.runs] for v in variants], vert=False,
               labels=[v.name for v in variants], showfliers=False)
    for factor, style in ((1.2, ":"), (2.0, "--")):
        ax.axvline(floor * factor, color="grey", linestyle=style,
                   label=f"{factor}x empty pam_python")
    ax.invert_yaxis()
    ax.set_xlabel("ms per pamtester process (whole process, one authentication)")
    ax.set_title(f"One login, {ROUNDS} interleaved rounds")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(variants, imports, prof, levels, warm, web, seconds, load) -> str:
    floor = next(v for v in variants if v.name == PYTHON_FLOOR).median_ms()
    out = ["# campus-mfa benchmark\n", versions(),
           f"- {ROUNDS} interleaved rounds (+{WARMUP} warm-up), whole run {seconds:.0f} s; "
           f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
           "(other work on the machine slows everything, the ratios least)\n",
           "\n## 1. One login, whole pamtester process\n",
           "| variant | median ms | p25-p75 ms | x empty pam_python | CPU ms | peak RSS MB | "
           "verdicts right |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v in variants:
        q1, q3 = v.quartiles_ms()
        rss = statistics.median(v.rss_kb) / 1024
        cpu = statistics.median(v.cpu_ms)
        out.append(f"| {v.name} | {v.median_ms():.1f} | {q1:.1f}-{q3:.1f} | "
                   f"{v.median_ms() / floor:.2f} | {f'{cpu:.0f}' if cpu else '<10'} | "
                   f"{rss:.1f} | "
                   f"{sum(r.ok for r in v.runs)}/{len(v.runs)} |")
    out.append(f"\nTargets: campus <= 1.2x, off campus <= 2x the empty pam_python module. "
               f"CPU ms (10 ms resolution) and peak RSS: median of {RSS_RUNS} more runs under /usr/bin/time.\n")
    out.append("## 2. Where the time goes\n")
    by_name = {v.name: v.median_ms() for v in variants}
    for label, name in (("campus path", "campus-mfa, campus"),
                        ("off-campus path", "campus-mfa, off campus")):
        out.append(f"- {label}: {by_name[name] - floor:.0f} ms over the empty module, of "
                   f"which {imports[label][0]:.0f} ms are imports (below)")
    out.append("")
    for label, (total, rows) in imports.items():
        out.append(f"`-X importtime`, {label}: {total:.1f} ms of imports after interpreter "
                   f"start (median of {IMPORT_RUNS}). Heaviest (cumulative):\n")
        out += ["| import | depth | cumulative ms | self ms |", "|---|---:|---:|---:|"]
        out += [f"| {n} | {d} | {c:.1f} | {s:.1f} |" for n, d, c, s in rows[:12]]
        out.append("")
    out += ["cProfile of one off-campus authentication in a fresh process "
            "(bench/login_once.py: module load + config + policy.login.login):\n",
            "```", prof, "```\n"]
    out += ["## 3. Parallel off-campus logins (one pamtester and one user each, one slapd)\n",
            f"One login in {WRONG_EVERY} types a wrong code; a verdict is right when "
            "pamtester's exit status and the audit line match the code typed.\n",
            "| N | logins | logins/s | p50 ms | p95 ms | p99 ms | wrong verdicts | "
            "audit mismatches |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {lv.n} | {lv.logins} | {lv.logins / lv.seconds:.0f} | {lv.pct(50):.0f} | "
            f"{lv.pct(95):.0f} | {lv.pct(99):.0f} | {lv.wrong_verdicts} | "
            f"{lv.audit_mismatch} |" for lv in levels]
    for lv in levels:
        out += [f"- N = {lv.n}, ended wrongly {count}x: {why}"
                for why, count in sorted(lv.why_wrong.items())]
    out += ["\n## 4. Warm verifications in one process, one reused connection\n",
            "| what | per second |", "|---|---:|"]
    out += [f"| {k} | {v:,.0f} |" for k, v in warm.items()]
    out += ["\n## 5. Enrollment site (gunicorn -w 2, wrk " + " ".join(WRK) + ")\n",
            "| page | requests/s | p50 ms | p99 ms | requests | non-2xx/3xx |",
            "|---|---:|---:|---:|---:|---:|"]
    out += [f"| {w['name']} | {w['rps']:.0f} | {w['p50']:.1f} | {w['p99']:.1f} | "
            f"{w['requests']} | {w['non2xx']} |" for w in web]
    return "\n".join(out) + "\n"


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (it writes /etc/pam.d/campus-mfa-bench-*)", file=sys.stderr)
        return 2
    began, load_start = time.monotonic(), os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    # pam_python never writes bytecode: the package's postinst byte-compiles (py3compile);
    # here, so that no login pays for compiling the checkout's sources.
    subprocess.run([PY, "-m", "compileall", "-q", "policy", "pam_module", "enroll_web"],
                   cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="campus-mfa-bench-"))
    fx = None
    try:
        fx = Fixture(work)
        users = fx.enroll([f"bench{i:03d}" for i in range(max(CONCURRENCY) + 1)])
        solo, crowd = users[-1], users[:-1]
        print("bench: 1/5 whole-process logins", flush=True)
        variants = whole_process(fx, solo)
        print("bench: 2/5 import times and profile", flush=True)
        imports = {"campus path": import_times(fx, solo, CAMPUS),
                   "off-campus path": import_times(fx, solo, OFF)}
        prof = profile(fx, solo)
        print("bench: 3/5 parallel logins", flush=True)
        levels = concurrency(fx, crowd, SERVICE + "mfa")
        print("bench: 4/5 warm verifications", flush=True)
        warm = warm_verifications(fx, solo)
        print("bench: 5/5 enrollment site", flush=True)
        web = site(fx)
        floor = next(v for v in variants if v.name == PYTHON_FLOOR).median_ms()
        (OUT / "report.md").write_text(report(variants, imports, prof, levels, warm, web,
                                              time.monotonic() - began,
                                              (load_start, os.getloadavg()[0])))
        chart(variants, floor, OUT / "logins.png")
    finally:
        if fx is not None:
            fx.close()
        shutil.rmtree(work, ignore_errors=True)
    print(OUT / "report.md")
    print(OUT / "logins.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
