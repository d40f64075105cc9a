"""Section 5: the enrollment site under gunicorn -w 2 with wrk: the login page, and the QR
page of a signed-in user who has just started setting up 2-step verification."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devtools import devldap
from devtools.commands import stop_process
from devtools.nginx import wait_serving
from policy.directory.enrollment import EnrollmentDirectory

from .fixture import ROOT, Fixture

if TYPE_CHECKING:
    import requests

WRK = ("-t2", "-c8", "-d5s", "--latency")
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


@dataclass(frozen=True)
class Page:
    name: str
    rps: float
    p50: float      # ms
    p99: float      # ms
    requests: int
    non2xx: int     # responses neither 2xx nor 3xx


def site(fx: Fixture) -> list[Page]:
    """gunicorn on a free loopback port; alice gets the role, signs in and starts setup;
    then wrk on the two pages."""
    import requests

    port = devldap.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAMPUS_MFA_CONFIG": fx.config_path}
    proc = subprocess.Popen(["/usr/bin/gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "enroll_web:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port, "/login", [proc], "gunicorn", timeout=15)
        with EnrollmentDirectory(fx.config.ldap) as directory:
            directory.set_role(directory.find_user("alice")[0], True)
        http = requests.Session()

        post_form(http, base + "/login", {"username": "alice", "password": "alice-pass"})
        post_form(http, base + "/mfa/setup", {"current_code": ""})
        if "<svg" not in http.get(base + "/mfa/token").text:
            raise RuntimeError("no QR code on /mfa/token after setup")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        return [wrk("login page (GET /login)", base + "/login", ""),
                wrk("QR page (GET /mfa/token, signed in, campus)", base + "/mfa/token",
                    cookie)]
    finally:
        stop_process(proc)


def post_form(http: requests.Session, url: str, data: dict[str, str]) -> requests.Response:
    """Post a form of the site with the CSRF token its page carries."""
    token = CSRF.search(http.get(url, timeout=10).text)[1]
    done = http.post(url, data={**data, "csrf_token": token}, timeout=10)
    done.raise_for_status()
    return done


def wrk(name: str, url: str, cookie: str, options: tuple[str, ...] = WRK) -> Page:
    """One wrk run on ``url`` (with ``cookie`` if any), its summary parsed."""
    args = ["wrk", *options, url] + (["-H", f"Cookie: {cookie}"] if cookie else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Page(name, float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), ms("50%"),
                ms("99%"), int(re.search(r"(\d+) requests in", out)[1]),
                int(bad[1]) if bad else 0)
