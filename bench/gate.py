"""Section 6: the web gate's hot path (issue 13). Every request to a protected site costs
one ``/auth`` subrequest, so through one nginx (gate_stack.py), side by side, in rounds
of a shuffled order: the small file ungated; behind the shipped snippet asking a bare
Flask /auth (the ceiling of this stack); and behind the same snippet asking the real
portal, with a session signed in from campus.

Before measuring, the gated file must answer 200 with the session's cookie and send a
client without it to the portal's sign-in, so the numbers measure what they claim; every
status nginx logged during a run is counted afterwards. slapd's CPU and its established
connections are read before and after every gated run: the gate answers from the session
store, and a user's state is read again only every web.recheck_seconds.
"""
from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools import devldap
from devtools.nginx import socket_dir, wait_serving
from devtools.toml import toml_value, toml_with
from policy.config import load_config

from .enrollment_site import Page, post_form, wrk
from .fixture import Fixture, User
from .gate_profile import AppCost, app_cost
from .gate_stack import SMALL_BODY, SMALL_FILE, Gunicorn, Nginx, Ports, get
from .pamrun import children_cpu_ms, proc_cpu_ms, tcp_established, tree_cpu_ms

GATE_ROUNDS = 7
GATE_WRK = ("-t2", "-c8", "-d3s", "--latency")   # as section 5, shorter runs, more rounds
SITES = {"ungated": "small file, no gate",
         "bare": "small file, gate asking a bare Flask /auth (the ceiling)",
         "gated": "small file, gate asking the portal's /auth (signed in, campus)"}
COOKIE = "campus-mfa"      # web.cookie_secure = false: neither __Host- nor __Secure-


@dataclass
class GateRun:
    site: str
    page: Page
    statuses: dict[int, int]     # from nginx's access log of the run
    cpu_ms: dict[str, float]     # "nginx", "app" (gunicorn: master + workers), "wrk"
    slapd_cpu_ms: float
    slapd_new: int               # connections to slapd established after, not before
    slapd_conns: tuple[int, int]  # established to slapd before and after
    after_sign_in: float = 0.0   # gated: seconds from the sign-in to the run's end


@dataclass
class Gate:
    runs: list[GateRun]
    checks: list[str]
    recheck_seconds: int
    order: list[list[str]] = field(default_factory=list)
    app: AppCost | None = None

    def of(self, site: str) -> list[GateRun]:
        return [r for r in self.runs if r.site == site]

    def median(self, site: str, attr: str) -> float:
        return statistics.median(getattr(r.page, attr) for r in self.of(site))

    def cpu_per_request(self, site: str, part: str) -> float:
        runs = self.of(site)
        return sum(r.cpu_ms[part] for r in runs) / sum(r.page.requests for r in runs)

    def ratios(self) -> list[float]:
        """The real /auth's rate over the bare handler's, round by round (the two runs of
        a round are seconds apart: the machine's other load drifts less between them)."""
        return [g.page.rps / b.page.rps for g, b in zip(self.of("gated"), self.of("bare"))]

    def ratio(self) -> float:
        return statistics.median(self.ratios())

    def cpu_ratio(self) -> float:
        """The same ratio from the CPU each request cost nginx, gunicorn and wrk: what the
        rates would be on two CPUs with nothing else running (less swayed by other load)."""
        def total(site: str) -> float:
            return sum(self.cpu_per_request(site, part) for part in ("nginx", "app", "wrk"))
        return total("bare") / total("gated")

    def slapd(self) -> tuple[int, float, int]:
        """Over the gated runs: requests, slapd's CPU ms, connections newly established."""
        runs = self.of("gated")
        return (sum(r.page.requests for r in runs), sum(r.slapd_cpu_ms for r in runs),
                sum(r.slapd_new for r in runs))


def gate(fx: Fixture, user: User) -> Gate:
    """Start the stack, sign ``user`` in from campus, check the gate, then the rounds."""
    base = Path(tempfile.mkdtemp(prefix="campus-mfa-bench-gate-"))
    base.chmod(0o755)               # nginx's workers (www-data) read the file below
    html = base / "html"
    html.mkdir(mode=0o755)
    (html / SMALL_FILE).write_bytes(SMALL_BODY)
    (html / SMALL_FILE).chmod(0o644)
    run = socket_dir(base / "run")
    ports = free_ports()
    config = fx.work / "gate.toml"
    config.write_text(toml_with(Path(fx.config_path).read_text(), {"web": {
        "trusted_proxies": "1", "cookie_secure": "false",
        "portal_url": toml_value(f"http://127.0.0.1:{ports.portal}"),
        "protected_hosts": toml_value(["127.0.0.1"]),
        "session_dir": toml_value(str(fx.work / "gate-sessions"))}}))
    recheck = load_config(str(config)).web.recheck_seconds
    procs: list[Gunicorn | Nginx] = []
    try:
        portal = Gunicorn("enroll_web:create_app()", str(run / "portal.sock"),
                          {"CAMPUS_MFA_CONFIG": str(config)}, fx.work / "gate-portal.log")
        procs.append(portal)
        bare = Gunicorn("bench.bare_auth:app", str(run / "bare.sock"), {},
                        fx.work / "gate-bare.log")
        procs.append(bare)
        nginx = Nginx(base / "nginx", ports, html, str(run / "portal.sock"),
                      str(run / "bare.sock"))
        procs.append(nginx)
        popens = [p.proc for p in procs]
        try:
            wait_serving(ports.portal, "/login", popens, "the portal behind nginx")
            wait_serving(ports.bare, "/" + SMALL_FILE, popens, "the bare /auth behind nginx")
        except RuntimeError as err:
            said = "\n".join(p.errors()[-2000:] for p in procs)
            raise RuntimeError(f"{err}:\n{said}") from None
        cookie = sign_in(ports, user)
        checks = check_gate(ports, cookie)
        result = Gate([], checks, recheck)
        apps = {"gated": portal.pid, "bare": bare.pid}
        rng = random.Random(13)
        for _ in range(GATE_ROUNDS):
            order = list(SITES)
            rng.shuffle(order)
            result.order.append(order)
            for site in order:
                signed = None
                if site == "gated":   # a fresh session: the run starts right after sign-in
                    cookie = sign_in(ports, user)
                    check_gate(ports, cookie)
                    signed = time.monotonic()
                    time.sleep(0.5)   # the sign-in's LDAP connection closes
                one = measure(fx, nginx, site, getattr(ports, site), apps.get(site), cookie)
                if signed is not None:
                    one.after_sign_in = time.monotonic() - signed
                    if one.after_sign_in >= recheck:
                        raise RuntimeError(f"gated run ended {one.after_sign_in:.0f} s after "
                                           f"sign-in, not within web.recheck_seconds")
                result.runs.append(one)
                print(f"bench:   {site}: {one.page.rps:,.0f} requests/s", flush=True)
        result.app = app_cost(config, cookie, f"http://127.0.0.1:{ports.gated}/{SMALL_FILE}")
        return result
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)


def measure(fx: Fixture, nginx: Nginx, site: str, port: int, app_pid: int | None,
            cookie: str) -> GateRun:
    """One wrk run on ``site``, with the CPU of nginx, the app, wrk and slapd meanwhile."""
    slapd_port = fx.ldap.port
    nginx.clear_log(site)
    conns0, slapd0 = to_slapd(slapd_port), proc_cpu_ms(fx.ldap.pid)
    nginx0, app0 = tree_cpu_ms(nginx.pid), tree_cpu_ms(app_pid) if app_pid else 0.0
    wrk0 = children_cpu_ms()
    page = wrk(SITES[site], f"http://127.0.0.1:{port}/{SMALL_FILE}", cookie, GATE_WRK)
    cpu = {"wrk": children_cpu_ms() - wrk0, "nginx": tree_cpu_ms(nginx.pid) - nginx0,
           "app": tree_cpu_ms(app_pid) - app0 if app_pid else 0.0}
    slapd_cpu, conns = proc_cpu_ms(fx.ldap.pid) - slapd0, to_slapd(slapd_port)
    return GateRun(site, page, nginx.statuses(site), cpu, slapd_cpu, len(conns - conns0),
                   (len(conns0), len(conns)))


def to_slapd(port: int) -> set[str]:
    """The connections established to slapd, by their client's address and port."""
    return {peer for local, _, peer, _ in tcp_established() if local == port}


def sign_in(ports: Ports, user: User) -> str:
    """Log in through the portal's site (its form, with the CSRF token) from 127.0.0.1,
    which is campus: the password is enough. The session's Cookie header."""
    import requests

    http = requests.Session()
    http.trust_env = False          # no proxy from the environment
    portal = f"http://127.0.0.1:{ports.portal}"
    done = post_form(http, portal + "/login",
                     {"username": user.uid, "password": user.uid + "-pass"})
    value = http.cookies.get(COOKIE)
    if not value or "/login" in done.url:
        raise RuntimeError(f"signing in as {user.uid} failed (ended at {done.url})")
    return f"{COOKIE}={value}"


def check_gate(ports: Ports, cookie: str) -> list[str]:
    """The gate lets the session through and sends a client without it to sign in; the
    two other sites serve the file. What was checked, in words."""
    def expect(port: int, with_cookie: bool, status: int) -> dict[str, str]:
        got, headers, body = get(port, "/" + SMALL_FILE, cookie if with_cookie else "")
        if got != status or (status == 200 and body != SMALL_BODY):
            raise RuntimeError(f"GET 127.0.0.1:{port}/{SMALL_FILE} "
                               f"({'with' if with_cookie else 'without'} the cookie): "
                               f"{got}, expected {status}")
        return headers
    expect(ports.gated, True, 200)
    location = expect(ports.gated, False, 302).get("Location", "")
    sign_in_page = f"http://127.0.0.1:{ports.portal}/login"
    if not location.startswith(sign_in_page):
        raise RuntimeError(f"the gate sent a client without a session to {location!r}")
    expect(ports.ungated, False, 200)
    expect(ports.bare, True, 200)
    return ["gated, with the session's cookie: 200 and the file",
            f"gated, without it: 302 to {location}",
            "ungated: 200 and the file", "bare /auth, with the cookie: 200 and the file"]


def free_ports() -> Ports:
    """Four distinct free ports on 127.0.0.1."""
    found: list[int] = []
    while len(found) < 4:
        port = devldap.free_port()
        if port not in found:
            found.append(port)
    return Ports(*found)
