"""A throwaway OpenLDAP slapd for tests, `make dev-ldap` and demos.

It builds its own cn=config under DIR (never /etc/ldap), applies the shipped
policy/ldap/*.ldif files exactly as an admin would, and writes DIR/campus-mfa.toml.
"""
from __future__ import annotations

import argparse
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

from .commands import run
from .tls import make_tls
from .toml import dump_toml

if TYPE_CHECKING:
    from policy.rules.totp import TotpParams

LDAP_DIR = Path(__file__).resolve().parents[1] / "ldap"
BASE_DN = "dc=example,dc=edu"
ADMIN_DN = f"cn=admin,{BASE_DN}"
SERVICE_DN = f"cn=campus-mfa,ou=services,{BASE_DN}"
ENROLL_DN = f"cn=campus-mfa-enroll,ou=services,{BASE_DN}"
PEOPLE_DN = f"ou=people,{BASE_DN}"
TOKENS_DN = f"ou=tokens,{BASE_DN}"
ROLE_GROUP_DN = f"cn=mfa-users,ou=groups,{BASE_DN}"
DEMO_USERS = (("alice", "alice-pass"), ("bob", "bob-pass"))
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_children: dict[int, subprocess.Popen] = {}  # slapd processes started by this process
PLACEHOLDER = "userPassword: {SSHA}REPLACE_WITH_SLAPPASSWD_OUTPUT"


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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bootstrap_ldif(root: Path, admin_password: str, tls_lines: str = "") -> str:
    """cn=config for slapadd -n0: Debian's layout and default ACL, own paths."""
    schemas = "".join(f"include: file:///etc/ldap/schema/{name}.ldif\n\n"
                      for name in ("core", "cosine", "nis", "inetorgperson"))
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
{tls_lines}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth
  manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {root / "db"}
olcSuffix: {BASE_DN}
olcRootDN: {ADMIN_DN}
olcRootPW: {admin_password}
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to attrs=shadowLastChange by self write by * read
olcAccess: {{2}}to * by * read
"""


def _tls_lines(root: Path) -> str:
    """A throwaway CA and a server certificate for 127.0.0.1; the cn=config lines using them."""
    tls = make_tls(root / "tls", "127.0.0.1")
    return (f"olcTLSCACertificateFile: {tls.ca}\n"
            f"olcTLSCertificateFile: {tls.cert}\n"
            f"olcTLSCertificateKeyFile: {tls.key}\n")


def _user_ldif(uid: str, password: str) -> str:
    return (f"dn: uid={uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid}\nsn: {uid}\nuserPassword: {password}\n")


def _tree_ldif(service_password: str, enroll_password: str) -> str:
    """The shipped example tree with real service passwords, plus the demo users."""
    records = (LDAP_DIR / "example-tree.ldif").read_text(encoding="utf-8").split("\n\n")
    passwords = {SERVICE_DN: service_password, ENROLL_DN: enroll_password}
    out = []
    for record in records:
        for dn, password in passwords.items():
            if f"dn: {dn}\n" in record:
                record = record.replace(PLACEHOLDER, f"userPassword: {password}")
        if PLACEHOLDER in record:
            raise RuntimeError("example-tree.ldif: a password placeholder was not replaced")
        out.append(record.strip("\n"))
    out += [_user_ldif(uid, password) for uid, password in DEMO_USERS]
    return "\n\n".join(out) + "\n"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` before any content is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_config(root: Path, uri: str, campus_networks: tuple[str, ...],
                  tls: bool = False) -> Path:
    """Write DIR/campus-mfa.toml and its secret files; validate it with load_config."""
    from policy.config import load_config

    _write(root / "web.secret", secrets.token_hex(32) + "\n")
    path = root / "campus-mfa.toml"
    _write(path, dump_toml({
        "ldap": {"uris": [uri], "base_dn": BASE_DN, "user_base": PEOPLE_DN,
                 "user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
                 "token_base": TOKENS_DN, "role_group": ROLE_GROUP_DN,
                 "bind_dn": SERVICE_DN, "bind_password_file": str(root / "ldap.secret"),
                 "write_bind_dn": ENROLL_DN,
                 "write_bind_password_file": str(root / "ldap-write.secret"),
                 "timeout": 3, "start_tls": tls,
                 "ca_file": str(root / "tls" / "ca.pem") if tls else ""},
        "policy": {"campus_networks": list(campus_networks)},
        "audit": {"syslog_socket": str(root / "syslog.sock")},
        "web": {"secret_key_file": str(root / "web.secret"),
                "session_dir": str(root / "sessions"), "cookie_secure": False}}), 0o644)
    load_config(str(path))
    return path


def _tcp_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not LISTEN
        try:
            sock.bind(("127.0.0.1", port))
        except (OSError, OverflowError):
            return False
    return True


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
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"slapd at {uri} did not come up (timeout {START_TIMEOUT}s, "
                       f"exit status {proc.returncode}); {log} ends with:\n{tail}")


def start(dir: str, port: int,
          campus_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
          tls: bool = False) -> DevLdap:
    """Build a fresh directory in ``dir`` (which must not exist or be empty) and start slapd.
    With ``tls``, slapd offers StartTLS with a certificate from a throwaway CA, and the
    config uses it (start_tls = true, ca_file = DIR/tls/ca.pem)."""
    uri = f"ldap://127.0.0.1:{port}"
    if not _tcp_free(port):
        raise RuntimeError(f"127.0.0.1:{port} is already in use")
    root = Path(dir).resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise RuntimeError(f"{root} is not empty; stop the old directory first")
    (root / "slapd.d").mkdir(mode=0o700)
    (root / "db").mkdir(mode=0o700)
    admin_password = secrets.token_urlsafe(24)
    service_password = secrets.token_urlsafe(24)
    enroll_password = secrets.token_urlsafe(24)
    _write(root / "ldap.secret", service_password + "\n")
    _write(root / "ldap-write.secret", enroll_password + "\n")
    _write(root / "admin.secret", admin_password + "\n")

    conf = str(root / "slapd.d")
    tls_lines = _tls_lines(root) if tls else ""
    _write(root / "bootstrap.ldif", _bootstrap_ldif(root, admin_password, tls_lines))
    run("slapadd", "-n0", "-F", conf, "-l", str(root / "bootstrap.ldif"))
    # The shipped files, applied as an admin would apply them with ldapmodify.
    run("slapmodify", "-n0", "-F", conf, "-l", str(LDAP_DIR / "otp-module.ldif"))
    run("slapmodify", "-n0", "-F", conf, "-l", str(LDAP_DIR / "acl.ldif"))
    _write(root / "tree.ldif", _tree_ldif(service_password, enroll_password))
    run("slapadd", "-q", "-F", conf, "-b", BASE_DN, "-l", str(root / "tree.ldif"))
    config_path = _write_config(root, uri, tuple(campus_networks), tls)

    log = root / "slapd.log"
    with open(log, "wb") as out:
        # -d none: stay in the foreground and log only errors.
        proc = subprocess.Popen(["slapd", "-d", "none", "-F", conf, "-h",
                                 f"{uri} {ldapi_uri(root)}"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    _write(root / "slapd.pid", f"{proc.pid}\n", 0o644)
    _wait_until_up(port, uri, proc, log)
    _children[proc.pid] = proc
    return DevLdap(uri=uri, dir=str(root), pid=proc.pid, config_path=str(config_path),
                   admin_dn=ADMIN_DN, admin_password=admin_password)


def stop(dir: str) -> None:
    """Stop the slapd recorded in ``dir``/slapd.pid (TERM, then KILL) and remove ``dir``."""
    root = Path(dir)
    try:
        pid = int((root / "slapd.pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        _terminate(pid)
    shutil.rmtree(root, ignore_errors=True)


def _terminate(pid: int) -> None:
    """SIGTERM ``pid``, wait a bounded time, then SIGKILL it."""
    proc = _children.pop(pid, None)
    if proc is not None:  # our own child: wait on it (and reap it)
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    try:  # started by an earlier command (make dev-ldap): poll for its exit
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
        handle = start(args.dir, args.port,
                       tuple(args.campus) if args.campus else ("127.0.0.0/8", "::1/128"))
    except RuntimeError as err:
        print(f"devldap: {err}", file=sys.stderr)
        return 1
    print(f"slapd pid {handle.pid} at {handle.uri}")
    print(handle.config_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
