"""A throwaway OpenLDAP slapd for the tests, `make dev-ldap`, the demo and the benchmark.

It builds its own cn=config under DIR (never /etc/ldap) with Debian's defaults, applies the
shipped ldap/*.ldif files exactly as an admin would, and writes DIR/campus-mfa.toml. It can
also be a second provider loaded from a first one (devtools/replication.py), or hold a
directory of a university's size (``bulk``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import ldap3

from .commands import free_port, run, stop_process, tcp_free
from .slapd_files import (ADMIN_DN, BASE_DN, ENROLL_DN, LDAP_DIR, PEOPLE_DN, ROLE_GROUP_DN,
                          SERVICE_DN, TOKENS_DN, bootstrap_ldif, bulk_ldif, tree_ldif, write,
                          write_config)
from .tls import make_tls

if TYPE_CHECKING:
    from policy.rules.totp import TotpParams

__all__ = ["ADMIN_DN", "BASE_DN", "ENROLL_DN", "PEOPLE_DN", "ROLE_GROUP_DN", "SERVICE_DN",
           "TOKENS_DN", "DevLdap", "add_user",
           "admin_connection", "apply_ldif", "free_port", "link_new_token", "restart", "start",
           "stop"]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
CAMPUS = ("127.0.0.0/8", "::1/128")
_children: dict[int, subprocess.Popen] = {}  # slapd processes started by this process


@dataclass(frozen=True)
class DevLdap:
    """A running throwaway slapd and where its files are."""

    uri: str
    dir: str
    pid: int
    config_path: str
    admin_dn: str
    admin_password: str
    base_dn: str = BASE_DN
    debug: str = "none"      # slapd -d: what it writes to DIR/slapd.log

    @property
    def port(self) -> int:
        """The TCP port of ``uri`` (ldap://127.0.0.1:PORT)."""
        return int(self.uri.rsplit(":", 1)[1])

    @property
    def ldapi_uri(self) -> str:
        """The local socket slapd also listens on; root manages cn=config through it
        (``ldapmodify -Y EXTERNAL -H URI``), as on a Debian install."""
        return ldapi_uri(Path(self.dir))

    def secret(self, name: str) -> str:
        """Return the content of a secret file in DIR ('ldap.secret', 'ldap-write.secret')."""
        return Path(self.dir, name).read_text(encoding="utf-8").strip()


def ldapi_uri(root: Path) -> str:
    return "ldapi://" + quote(str(root / "ldapi"), safe="")


def start(dir: str, port: int, campus_networks: tuple[str, ...] = CAMPUS, tls: bool = False,
          *, clone_of: DevLdap | None = None, bulk: tuple[int, int, int] | None = None,
          debug: str = "none") -> DevLdap:
    """Build a fresh directory in ``dir`` (which must not exist or be empty) and start slapd.

    With ``tls``, slapd offers StartTLS with a certificate from a throwaway CA (that of
    ``clone_of``, if given) and the config uses it. With ``clone_of``, the entries are that
    directory's own (slapcat there, slapadd -w here, as an admin loads a second provider),
    and so are its passwords. With ``bulk`` = (users, role members, tokens), the example
    tree holds that many more people, group members and linked tokens (slapd_files.py;
    their secrets from DIR/bulk.secret and bulk_secret())."""
    uri = f"ldap://127.0.0.1:{port}"
    if not tcp_free(port):
        raise RuntimeError(f"127.0.0.1:{port} is already in use")
    root = Path(dir).resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise RuntimeError(f"{root} is not empty; stop the old directory first")
    (root / "slapd.d").mkdir(mode=0o700)
    (root / "db").mkdir(mode=0o700)
    source = Path(clone_of.dir) if clone_of else None
    for name in ("ldap.secret", "ldap-write.secret", "admin.secret"):
        write(root / name, (source / name).read_text() if source
              else secrets.token_urlsafe(24) + "\n")
    admin_password = (root / "admin.secret").read_text().strip()

    conf = str(root / "slapd.d")
    cert = make_tls(root / "tls", "127.0.0.1", ca_from=source / "tls" if source else None) \
        if tls else None
    write(root / "bootstrap.ldif", bootstrap_ldif(root, admin_password, cert))
    run("slapadd", "-n0", "-F", conf, "-l", str(root / "bootstrap.ldif"))
    # The shipped files, applied as an admin would apply them with ldapmodify.
    for name in ("otp-module.ldif", "acl.ldif", "indexes.ldif"):
        run("slapmodify", "-n0", "-F", conf, "-l", str(LDAP_DIR / name))
    _load(root, conf, clone_of, bulk)
    config_path = write_config(root, [uri], tuple(campus_networks), cert.ca if cert else None)
    return _launch(DevLdap(uri=uri, dir=str(root), pid=0, config_path=str(config_path),
                           admin_dn=ADMIN_DN, admin_password=admin_password,
                           debug=debug))


def _load(root: Path, conf: str, clone_of: DevLdap | None,
          bulk: tuple[int, int, int] | None) -> None:
    """The entries: a copy of ``clone_of``'s, or the example tree (and the bulk)."""
    if clone_of is not None:
        entries = run("slapcat", "-F", str(Path(clone_of.dir) / "slapd.d"), "-b", BASE_DN)
        write(root / "tree.ldif", entries)
        run("slapadd", "-q", "-w", "-F", conf, "-b", BASE_DN, "-l", str(root / "tree.ldif"))
        return
    extra, members = "", ""
    if bulk:
        write(root / "bulk.secret", secrets.token_hex(16) + "\n")
        extra, members = bulk_ldif(*bulk, password="s-pass",
                                   seed=(root / "bulk.secret").read_text().strip())
    write(root / "tree.ldif", tree_ldif((root / "ldap.secret").read_text().strip(),
                                        (root / "ldap-write.secret").read_text().strip(),
                                        members) + ("\n" + extra if extra else ""))
    run("slapadd", "-q", "-F", conf, "-b", BASE_DN, "-l", str(root / "tree.ldif"),
        timeout=600)


def _launch(handle: DevLdap) -> DevLdap:
    """Start slapd for ``handle``'s directory and wait until it answers."""
    root = Path(handle.dir)
    log = root / "slapd.log"
    with open(log, "ab") as out:
        # -d: stay in the foreground (none: log only errors).
        proc = subprocess.Popen(["slapd", "-d", handle.debug, "-F", str(root / "slapd.d"), "-h",
                                 f"{handle.uri} {ldapi_uri(root)}"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    write(root / "slapd.pid", f"{proc.pid}\n", 0o644)
    _wait_until_up(handle.port, handle.uri, proc, log)
    _children[proc.pid] = proc
    return dataclasses.replace(handle, pid=proc.pid)


def restart(handle: DevLdap, how: int = signal.SIGTERM) -> DevLdap:
    """Stop slapd (``how``: SIGTERM, or SIGKILL to crash it) and start it again on the same
    files and port; the new handle (its pid)."""
    _end(handle.pid, how)
    return _launch(handle)


def stop(dir: str) -> None:
    """Stop the slapd recorded in ``dir``/slapd.pid (TERM, then KILL) and remove ``dir``."""
    root = Path(dir)
    try:
        pid = int((root / "slapd.pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        _end(pid, signal.SIGTERM)
    shutil.rmtree(root, ignore_errors=True)


def _end(pid: int, how: int) -> None:
    """Signal ``pid`` with ``how`` and wait (a bounded time, then SIGKILL) until it is gone."""
    proc = _children.pop(pid, None)
    if proc is not None:  # our own child: wait on it (and reap it)
        try:
            proc.send_signal(signal.SIGCONT)  # a stopped one could not act on SIGTERM
        except ProcessLookupError:
            pass
        stop_process(proc, how, STOP_TIMEOUT)
        return
    try:  # started by an earlier command (make dev-ldap): poll for its exit
        os.kill(pid, how)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _answers(host: str, port: int, uri: str) -> bool:
    """True when slapd accepts TCP and an anonymous bind (TCP first: ldap3 leaks refused sockets)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return False
    conn = ldap3.Connection(ldap3.Server(uri, get_info=ldap3.NONE, connect_timeout=1),
                            receive_timeout=2)
    try:
        return conn.bind()
    except ldap3.core.exceptions.LDAPException:
        return False
    finally:
        conn.unbind()


def _wait_until_up(port: int, uri: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll until slapd answers; raise with the log tail if it does not in time."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers("127.0.0.1", port, uri):
            time.sleep(0.2)  # a slapd that lost the port race exits at once
            if proc.poll() is None:
                return
        time.sleep(0.05)
    stop_process(proc, signal.SIGKILL, STOP_TIMEOUT)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"slapd at {uri} did not come up (timeout {START_TIMEOUT}s, "
                       f"exit status {proc.returncode}); {log} ends with:\n{tail}")


def apply_ldif(handle: DevLdap, ldif: str) -> None:
    """Apply changes to the running slapd as root over its local socket, the way an admin
    applies the shipped files: ``ldapmodify -Y EXTERNAL -H ldapi://...``."""
    run("ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", handle.ldapi_uri, input=ldif, timeout=30)


def admin_connection(handle: DevLdap) -> ldap3.Connection:
    """Return a bound connection as the rootdn (bypasses every ACL)."""
    server = ldap3.Server(handle.uri, get_info=ldap3.NONE, connect_timeout=3)
    return ldap3.Connection(server, handle.admin_dn, handle.admin_password,
                            auto_bind=True, raise_exceptions=True, receive_timeout=5)


def add_user(handle: DevLdap, uid: str, password: str) -> str:
    """Create an inetOrgPerson uid=``uid`` under ou=people; return its DN."""
    dn = f"uid={uid},{PEOPLE_DN}"
    conn = admin_connection(handle)
    try:
        conn.add(dn, ["inetOrgPerson"],
                 {"uid": uid, "cn": uid, "sn": uid, "userPassword": password})
    finally:
        conn.unbind()
    return dn


def link_new_token(handle: DevLdap, uid: str, params: TotpParams | None = None,
                   max_failures: int = 10) -> tuple[bytes, str]:
    """Give ``uid`` a new token the way the site does (a pending entry, then the link, as
    the enrollment DN); return its secret and DN."""
    from policy.config import load_config
    from policy.directory.enrollment import EnrollmentDirectory
    from policy.rules.totp import TotpParams, new_secret

    secret = new_secret()
    with EnrollmentDirectory(load_config(handle.config_path).ldap) as directory:
        dn = directory.create_pending_token(secret, params or TotpParams(), max_failures,
                                            time.time())
        directory.link_token(directory.read_state(uid), dn, 0)
    return secret, dn


def main(argv: list[str] | None = None) -> int:
    """CLI: start or stop a throwaway directory."""
    parser = argparse.ArgumentParser(prog="python3 -m devtools.devldap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start_p = sub.add_parser("start", help="build DIR and start slapd in the background")
    start_p.add_argument("--dir", required=True)
    start_p.add_argument("--port", type=int, required=True)
    start_p.add_argument("--campus", action="append", metavar="CIDR",
                         help="campus network (repeatable; default 127.0.0.0/8 and ::1/128)")
    stop_p = sub.add_parser("stop", help="stop slapd and remove DIR")
    stop_p.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop(args.dir)
        return 0
    try:
        handle = start(args.dir, args.port, tuple(args.campus) if args.campus else CAMPUS)
    except RuntimeError as err:
        print(f"devldap: {err}", file=sys.stderr)
        return 1
    print(f"slapd pid {handle.pid} at {handle.uri}")
    print(handle.config_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
