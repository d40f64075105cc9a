"""The enrollment site as it is deployed, for the tests that drive it from outside:
Debian's nginx with the shipped example site terminating TLS (a throwaway CA) in a lab's
server namespace, in front of gunicorn on a unix socket with the unit's own flags
(support/netns.py has the namespaces; support/weblab.py nginx, the clients and chromium)."""
from __future__ import annotations

import grp
import http.client
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import nginx
from devtools.commands import stop_process
from devtools.syslog import SyslogListener
from devtools.tls import Tls, make_tls
from devtools.toml import toml_value, toml_with
from support import weblab
from support.netns import SERVER, Lab, entered, work_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = nginx.PORTAL_SITE
UNIT = ROOT / "packaging" / "debian" / "campus-mfa-enroll.service"
HOST = "mfa.example.edu"


def nginx_site(backend: str, tls: Tls) -> str:
    """The shipped example site, verbatim but for the certificate paths and the backend
    (``unix:PATH``, or the name of an ``upstream`` block)."""
    return nginx.substitute(EXAMPLE.read_text(), [
        ("server_name mfa.example.edu;", f"server_name {tls.host};", 2),
        ("ssl_certificate /etc/ssl/certs/mfa.example.edu.pem;",
         f"ssl_certificate {tls.cert};", 1),
        ("ssl_certificate_key /etc/ssl/private/mfa.example.edu.key;",
         f"ssl_certificate_key {tls.key};", 1),
        ("proxy_pass http://unix:/run/campus-mfa-enroll/web.sock;",
         f"proxy_pass http://{backend};", 1),
    ], str(EXAMPLE))


def unit_gunicorn(socket_path: str) -> list[str]:
    """The unit's ExecStart, verbatim but for the socket path and where the code is."""
    line = next(line for line in UNIT.read_text().splitlines()
                if line.startswith("ExecStart="))
    return shlex.split(nginx.substitute(line.removeprefix("ExecStart="), [
        ("--bind unix:/run/campus-mfa-enroll/web.sock ", f"--bind unix:{socket_path} ", 1),
        ("--pythonpath /usr/share/campus-mfa ", f"--pythonpath {ROOT} ", 1),
    ], f"{UNIT} ExecStart"))


def wait_until_serving(proc: subprocess.Popen, ask: Any, log: Path) -> None:
    """Until ``ask()`` gets the login page (gunicorn imports the app first)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if ask() == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("gunicorn did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.1)


@contextmanager
def gunicorn(argv: list[str], config: Path, log: Path, **popen: Any
             ) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "CAMPUS_MFA_CONFIG": str(config)}, **popen)
        try:
            yield proc
        finally:
            stop_process(proc, timeout=15, group=True)  # the master and its workers


@dataclass
class Site:
    lab: Lab
    tls: Tls
    nginx: weblab.Nginx
    config: Path
    audit: SyslogListener
    hosts: tuple[str, ...] = (HOST,)   # the names nginx serves (the portal's first)

    def url(self, path: str = "/") -> str:
        return f"https://{HOST}{path}"

    def audit_line(self, fragment: str) -> str:
        """The audit line containing ``fragment``, once it arrived (within 5 s)."""
        return self.audit.line_with(fragment)

    def client(self, where: str, host: str = HOST) -> weblab.Client:
        return weblab.Client(self.lab.clients[where], host, SERVER[where, "v4"], self.tls.ca)

    @contextmanager
    def browser(self, where: str) -> Iterator[Any]:
        """A chromium in the ``where`` namespace that trusts the lab's CA and resolves
        the site's names to the server's address on that network."""
        with entered(self.lab.clients[where]):
            with weblab.chromium({host: SERVER[where, "v4"] for host in self.hosts},
                                 self.tls.ca) as driver:
                yield driver


def ask(conn: http.client.HTTPConnection) -> int:
    """The status of GET /login on ``conn`` (no proxy from the environment is asked)."""
    try:
        conn.request("GET", "/login")
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def deployed(net: Lab, config_text: str, campus_networks: tuple[str, ...]) -> Iterator[Site]:
    """nginx (the example site) -> unix socket -> gunicorn (the unit's flags), as deployed:
    the socket is root:www-data 0660 and nginx's workers run as www-data. ``net``: the lab
    (netns.lab()); ``config_text``: a campus-mfa.toml for the directory to use."""
    work = work_dir("site")
    run_dir = nginx.socket_dir(work / "run")
    socket_path = str(run_dir / "web.sock")
    audit = SyslogListener(str(work / "syslog.sock"))
    config = work / "campus-mfa.toml"
    config.write_text(toml_with(config_text, {
        "policy": {"campus_networks": toml_value(campus_networks)},
        "audit": {"syslog_socket": toml_value(audit.path)},
        "web": {"trusted_proxies": "1", "cookie_secure": "true",
                "session_dir": toml_value(str(work / "sessions"))}}))
    tls = make_tls(work / "tls", HOST)
    log = work / "gunicorn.log"
    proxy = None
    try:
        with gunicorn(unit_gunicorn(socket_path), config, log, group="www-data",
                      extra_groups=[]) as proc:
            wait_until_serving(proc, lambda: ask(weblab.UnixHTTPConnection(socket_path)), log)
            info = os.stat(socket_path)  # as the unit makes it: nginx reaches it by group
            assert (info.st_mode & 0o777, grp.getgrgid(info.st_gid).gr_name) == \
                (0o660, "www-data")
            proxy = weblab.Nginx(net, work / "nginx", nginx_site(f"unix:{socket_path}", tls))
            yield Site(net, tls, proxy, config, audit)
    finally:
        if proxy is not None:
            proxy.stop()
        audit.close()
        shutil.rmtree(work, ignore_errors=True)
