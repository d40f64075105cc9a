"""The stack section 6 measures, on loopback: Debian's nginx (foreground, its own prefix)
with three sites that serve one small file -- behind the shipped gate snippet asking the
real portal, without a gate, and behind the same snippet asking a bare Flask /auth -- plus
the portal's own site for signing in; the portal and the bare app each under gunicorn on a
unix socket with the same flags.

The snippet is packaging/debian/examples/campus-mfa-gate.conf as shipped, but for the
portal's socket and Host name (devtools/nginx.py: each substitution must match exactly
once, so an edit of the snippet that the bench relies on stops it loudly).
"""
from __future__ import annotations

import http.client
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools import nginx
from devtools.commands import stop_process

from .fixture import ROOT

# Two sync workers, one request at a time each: two processes for two CPUs. (The shipped
# unit runs --workers 1 --threads 4: with rate_limit_storage = "memory://" more processes
# would multiply the allowed attempts; threads share one GIL.) No access log in gunicorn.
GUNICORN_FLAGS = ("--workers", "2", "--umask", "0117")
SMALL_FILE = "small.txt"
SMALL_BODY = b"A small file behind the gate.\n" * 16     # 480 bytes

SITE = """\
server {{  # the small file behind the gate, asking the portal
	listen 127.0.0.1:{gated};
	root {html};
	access_log {prefix}/gated.log status;
	include {prefix}/gate-portal.conf;
}}
server {{  # the same file, no gate
	listen 127.0.0.1:{ungated};
	root {html};
	access_log {prefix}/ungated.log status;
}}
server {{  # the same file behind the same snippet, asking the bare /auth
	listen 127.0.0.1:{bare};
	root {html};
	access_log {prefix}/bare.log status;
	include {prefix}/gate-bare.conf;
}}
server {{  # the portal, for signing in (the shipped site's location, plain HTTP)
	listen 127.0.0.1:{portal};
	access_log {prefix}/portal.log status;
{portal_location}}}
"""


@dataclass(frozen=True)
class Ports:
    gated: int
    ungated: int
    bare: int
    portal: int


class Nginx(nginx.Nginx):
    """devtools/nginx.py's nginx with the four sites above, as many workers as CPUs."""

    def __init__(self, prefix: Path, ports: Ports, html: Path, portal_socket: str,
                 bare_socket: str) -> None:
        prefix.mkdir(parents=True)
        (prefix / "gate-portal.conf").write_text(
            nginx.gate_snippet(f"unix:{portal_socket}", "127.0.0.1"))
        (prefix / "gate-bare.conf").write_text(
            nginx.gate_snippet(f"unix:{bare_socket}", "127.0.0.1"))
        site = SITE.format(prefix=prefix, html=html, **vars(ports),
                           portal_location=nginx.portal_location(f"unix:{portal_socket}"))
        super().__init__(prefix, site, workers="auto", connections=1024, level="warn")

    def statuses(self, site: str) -> dict[int, int]:
        """How many requests of each status ``site``'s access log holds."""
        counts: dict[int, int] = {}
        for line in (self.prefix / f"{site}.log").read_text().split():
            counts[int(line)] = counts.get(int(line), 0) + 1
        return counts

    def clear_log(self, site: str) -> None:
        """Empty ``site``'s access log (nginx appends, so it goes on at the new end)."""
        os.truncate(self.prefix / f"{site}.log", 0)


class Gunicorn:
    """gunicorn on a unix socket (root:www-data 0660, as the unit makes it), its own
    process group so that stop() ends the master and its workers."""

    def __init__(self, app: str, socket_path: str, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["/usr/bin/gunicorn", "--bind", f"unix:{socket_path}", *GUNICORN_FLAGS, app],
            cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True, group="www-data",
            extra_groups=[])
        self.pid = self.proc.pid

    def errors(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=15, group=True)
        self.log.close()


def get(port: int, path: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    """One GET to 127.0.0.1:``port`` (no proxy from the environment): status, headers,
    body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()

