"""Debian's nginx in the foreground with a prefix of its own (pid, logs, temp paths), its
workers running as www-data as on Debian, and the shipped nginx files with the few
substitutions a deployment makes. Used by `make demo`, the bench (bench/gate_stack.py) and
the tests (tests/support/weblab.py, which runs it in a network namespace)."""
from __future__ import annotations

import grp
import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

from .commands import stop_process

NGINX = "/usr/sbin/nginx"
EXAMPLES = Path(__file__).resolve().parents[1] / "packaging" / "debian" / "examples"
SNIPPET = EXAMPLES / "campus-mfa-gate.conf"
PORTAL_SITE = EXAMPLES / "nginx-campus-mfa-enroll.conf"

MAIN = """\
# Written by devtools/nginx.py: a private nginx, run in the foreground.
daemon off;
master_process on;
user www-data www-data;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log {level};
include /etc/nginx/modules-enabled/*.conf;
events {{ worker_connections {connections}; }}
http {{
	sendfile on;
	tcp_nopush on;
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr';
	log_format status '$status';
	access_log {prefix}/access.log upstream;
	client_body_temp_path {prefix}/temp/body;
	proxy_temp_path {prefix}/temp/proxy;
	fastcgi_temp_path {prefix}/temp/fastcgi;
	uwsgi_temp_path {prefix}/temp/uwsgi;
	scgi_temp_path {prefix}/temp/scgi;
	include {prefix}/site.conf;
}}
"""


def substitute(text: str, table: list[tuple[str, str, int]], what: str) -> str:
    """Replace each ``old`` of the table by ``new``; ``old`` must occur exactly ``count``
    times, so an edit of the original that a caller relies on fails loudly instead of
    slipping past it."""
    for old, new, count in table:
        found = text.count(old)
        if found != count:
            raise AssertionError(f"{what}: expected {old!r} {count} time(s), found {found}")
        text = text.replace(old, new)
    return text


def portal_location(backend: str) -> str:
    """The shipped portal site's ``location /`` block, passing requests to ``backend``
    (``unix:PATH``), for a plain-HTTP server on loopback (the demo, the bench)."""
    text = PORTAL_SITE.read_text()
    start = text.index("\tlocation / {")
    block = text[start:text.index("\t}\n", start) + 3]
    return substitute(block, [("proxy_pass http://unix:/run/campus-mfa-enroll/web.sock;",
                               f"proxy_pass http://{backend};", 1)], str(PORTAL_SITE))


def gate_snippet(backend: str, host: str | None = None) -> str:
    """The shipped snippet asking ``backend`` (``unix:PATH``, or an ``upstream`` block's
    name) for /auth, with Host ``host`` (default: as shipped, mfa.example.edu)."""
    table = [("proxy_pass http://unix:/run/campus-mfa-enroll/web.sock:/auth;",
              f"proxy_pass http://{backend}/auth;" if not backend.startswith("unix:")
              else f"proxy_pass http://{backend}:/auth;", 1)]
    if host is not None:
        table.append(("proxy_set_header Host mfa.example.edu;",
                      f"proxy_set_header Host {host};", 1))
    return substitute(SNIPPET.read_text(), table, str(SNIPPET))


def socket_dir(path: Path) -> Path:
    """A directory for the sockets that nginx's workers (www-data) may enter, as the unit's
    RuntimeDirectory is."""
    path.mkdir(mode=0o750)
    os.chown(path, 0, grp.getgrnam("www-data").gr_gid)
    return path


def wait_serving(port: int, path: str, procs: list[subprocess.Popen], what: str,
                 timeout: float = 30) -> None:
    """Until GET ``path`` on 127.0.0.1:``port`` answers 200 (nginx says 502 until the app
    behind it is up); RuntimeError if one of ``procs`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.1)


class Nginx:
    """nginx with ``site`` (the http block's servers) in ``prefix``; ``argv_prefix`` runs
    it through another command (``ip netns exec NS``). The caller waits until it answers."""

    def __init__(self, prefix: Path, site: str, *, workers: str = "1",
                 connections: int = 128, level: str = "info",
                 argv_prefix: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        # Debian's modules-enabled files name modules relative to the prefix.
        (prefix / "modules").symlink_to("/usr/lib/nginx/modules")
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(MAIN.format(
            prefix=prefix, workers=workers, connections=connections, level=level))
        self.out = open(prefix / "nginx.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*argv_prefix, NGINX, "-p", f"{prefix}/", "-e", str(prefix / "error.log"),
             "-c", str(prefix / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in
                         (self.prefix / "nginx.out", self.prefix / "error.log")
                         if p.exists())[-4000:]

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT, 15)  # graceful: finishes open requests
        self.out.close()
