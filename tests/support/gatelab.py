"""The gate as a university deploys it (docs/web-gate.md, README "Protect a web service"),
in a network lab of its own (support/netns.py, tag "g"):

- Debian's nginx with TLS for two names: the portal's site (the shipped example) and a
  protected site, files.example.edu, written from the README's server block with the
  shipped snippet included; behind it a file share served by nginx itself (``autoindex``
  and WebDAV, libnginx-mod-http-dav-ext) under /share/, and at / a small application
  (Upstream) that answers with the Remote-User header it received;
- two portal processes (gunicorn with the unit's flags, on two unix sockets) behind one
  nginx ``upstream``, sharing sessions and rate limits through one redis (issue 14);
- the session's slapd: a code used over ssh is the same code here; members of
  REQUIRED_GROUP need 2-step verification from off campus.

The lab raises the per-address sign-in and code limits (every test signs in from the same
two addresses); the code limit stays low enough to test it per account across both
processes.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socketserver
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

from devtools import devldap, nginx
from devtools.redis import RedisServer
from devtools.slapd_files import BASE_DN, SERVICE_DN
from devtools.syslog import SyslogListener
from devtools.tls import Tls, make_tls
from devtools.toml import toml_value, toml_with
from support import weblab
from support.netns import CAMPUS_NETWORKS, Lab, work_dir
from support.sitelab import (HOST, ROOT, Site, ask, gunicorn, nginx_site, unit_gunicorn,
                             wait_until_serving)

FILES = "files.example.edu"
README = ROOT / "README.md"
REPORT = b"%PDF-1.4\n% the report behind the gate\n" + bytes(range(256)) * 8
PORTALS = 2
REQUIRED_GROUP = f"cn=gate-required,ou=groups,{BASE_DN}"
CODE_LIMIT = 30      # web.code_rate_limit per minute, per address and per account
RECHECK_SECONDS = 2  # web.recheck_seconds: how soon the gate notices a reset


class Upstream(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The protected application: answers every request with the Remote-User header it
    received (or "-"), and keeps the headers of each request it saw."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.seen: list[dict[str, str]] = []
        super().__init__(path, _Echo)
        os.chmod(path, 0o666)  # nginx's workers (www-data) connect
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        body = f"Remote-User: {self.headers.get('Remote-User', '-')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "nginx"  # a unix socket has no client address

    def log_message(self, *args: object) -> None:
        pass


def readme_server_block() -> str:
    """The README's protected server block, as a sysadmin would copy it."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"```\n(server \{ +# the protected site.*?\n\})\n```", text, re.S)
    assert found, "README: the server block under \"Protect a web service\" is gone"
    return found.group(1)


def files_site(tls: Tls, snippet: Path, upstream: str, share: Path, temp: Path) -> str:
    """The README's block with this lab's certificate, snippet and application, and the
    file share (autoindex, WebDAV) in a location of its own."""
    share_location = (
        "\tlocation /share/ {                               # a file share, nginx itself\n"
        f"\t\talias {share}/;\n"
        "\t\tautoindex on;\n"
        "\t\tdav_methods PUT DELETE MKCOL COPY MOVE;\n"
        "\t\tdav_ext_methods PROPFIND OPTIONS;\n"
        f"\t\tclient_body_temp_path {temp};\n"
        "\t}\n\n\tlocation / {")
    return nginx.substitute(readme_server_block(), [
        ("ssl_certificate /etc/ssl/certs/files.example.edu.pem;",
         f"ssl_certificate {tls.cert};", 1),
        ("ssl_certificate_key /etc/ssl/private/files.example.edu.key;",
         f"ssl_certificate_key {tls.key};", 1),
        ("include /etc/nginx/snippets/campus-mfa-gate.conf;", f"include {snippet};", 1),
        ("proxy_pass http://127.0.0.1:8000;", f"proxy_pass http://unix:{upstream};", 1),
        ("\tlocation / {", share_location, 1),
    ], "README's server block")


@dataclass
class Gate:
    """The deployed stack; ``site`` is the portal as support/sitelab.py knows it."""

    site: Site
    upstream: Upstream
    share: Path
    sockets: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://{FILES}{path}"

    def clients(self, where: str) -> tuple[weblab.Client, weblab.Client]:
        """(portal, files) clients in the ``where`` namespace, with one cookie jar: the
        portal's cookie is set for the parent domain, so a browser sends it to both."""
        portal, files = self.site.client(where), self.site.client(where, FILES)
        files.cookies = portal.cookies
        return portal, files

    def password_step(self, where: str, uid: str, password: str, page: str = "/app/",
                      headers: dict[str, str] | None = None
                      ) -> tuple[weblab.Client, weblab.Client, str]:
        """From ``where``, ask for ``page`` on the protected site, be sent to the portal's
        sign-in (``rd``: exactly that page) and give the password: (portal, files, the
        portal's next step, /verify?...)."""
        portal, files = self.clients(where)
        first = files.get(page, headers=headers)
        sign_in = f"https://{HOST}/login?rd={quote(self.url(page), safe='')}"
        assert (first.status, first.location) == (302, sign_in), first
        step = portal.post_form(sign_in.removeprefix(f"https://{HOST}"),
                                {"username": uid, "password": password}, headers=headers)
        assert step.status == 302 and step.location.startswith("/verify?"), step
        return portal, files, step.location


@contextmanager
def deployed(net: Lab, slapd: devldap.DevLdap, redis: RedisServer) -> Iterator[Gate]:
    """The stack of the module docstring on ``net``, for ``slapd``, with sessions and rate
    limits in ``redis``."""
    conn = devldap.admin_connection(slapd)
    try:
        conn.add(REQUIRED_GROUP, ["groupOfNames"], {"cn": "gate-required",
                                                     "member": SERVICE_DN})
    finally:
        conn.unbind()
    work = work_dir("gate")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        run_dir = nginx.socket_dir(work / "run")
        audit = SyslogListener(str(work / "syslog.sock"))
        stack.callback(audit.close)
        config = work / "campus-mfa.toml"
        config.write_text(toml_with(Path(slapd.config_path).read_text(), {
            "policy": {"campus_networks": toml_value(CAMPUS_NETWORKS),
                       "required_groups": toml_value([REQUIRED_GROUP])},
            "audit": {"syslog_socket": toml_value(audit.path)},
            "web": {"trusted_proxies": "1", "cookie_secure": "true",
                    "session_dir": toml_value(str(work / "sessions")),
                    "session_store": toml_value(redis.session_url),
                    "rate_limit_storage": toml_value(redis.limits_url),
                    "portal_url": toml_value(f"https://{HOST}"),
                    "protected_hosts": toml_value([FILES]),
                    "cookie_domain": toml_value("example.edu"),
                    "recheck_seconds": str(RECHECK_SECONDS),
                    "login_rate_limit": toml_value("100 per minute"),
                    "code_rate_limit": toml_value(f"{CODE_LIMIT} per minute")}}))
        sockets = [str(run_dir / f"web{n}.sock") for n in range(PORTALS)]
        for n, path in enumerate(sockets):
            log = work / f"gunicorn{n}.log"
            proc = stack.enter_context(gunicorn(unit_gunicorn(path), config, log,
                                                group="www-data", extra_groups=[]))
            wait_until_serving(proc, lambda: ask(weblab.UnixHTTPConnection(path)), log)
        upstream = Upstream(str(run_dir / "app.sock"))
        stack.callback(upstream.stop)
        share = work / "share"
        (share / "reports").mkdir(parents=True)
        (share / "reports" / "report.pdf").write_bytes(REPORT)
        www = pwd.getpwnam("www-data")
        for path in (share, share / "reports", share / "reports" / "report.pdf"):
            os.chown(path, www.pw_uid, www.pw_gid)  # WebDAV writes as nginx's workers
        snippet = work / "campus-mfa-gate.conf"
        snippet.write_text(nginx.gate_snippet("campus_mfa_portal"))
        tls = make_tls(work / "tls", HOST, FILES)
        nginx_dir = work / "nginx"
        (nginx_dir / "temp" / "dav").mkdir(parents=True)
        os.chown(nginx_dir / "temp" / "dav", www.pw_uid, www.pw_gid)
        servers = "".join(f"\tserver unix:{path};\n" for path in sockets)
        server = weblab.Nginx(net, nginx_dir, "\n".join((
            f"upstream campus_mfa_portal {{\n{servers}}}",
            nginx_site("campus_mfa_portal", tls),
            files_site(tls, snippet, upstream.server_address, share,
                       nginx_dir / "temp" / "dav"))))
        stack.callback(server.stop)
        site = Site(net, tls, server, config, audit, hosts=(HOST, FILES))
        yield Gate(site, upstream, share, sockets)
