"""What the bench measures against, all on loopback: a throwaway slapd (devtools.devldap)
with bench users and their tokens, the PAM services campus-mfa-bench-* (removed at the
end), the peers' secret files, and a syslog listener for the audit lines. Also the
byte-compile step the installed package does.

Replay guard: every accepted code must be of a later time step than the token's last one.
Between runs the bench resets the token as the admin DN (reset()), outside the timed
part; the peers get the same treatment (write_peer_state()).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

from devtools import devldap
from devtools.codes import code_now
from devtools.syslog import SyslogListener
from policy.config import load_config
from policy.directory.enrollment import EnrollmentDirectory
from policy.rules.totp import TotpParams, new_secret, to_base32

ROOT = Path(__file__).resolve().parent.parent
PY = "/usr/bin/python3"
PARAMS = TotpParams()
OFF, CAMPUS = "203.0.113.7", "127.0.0.1"
PAM_D = Path("/etc/pam.d")
SERVICE = "campus-mfa-bench-"
MODULE = ROOT / "pam_module" / "pam_campus_mfa.py"
COMPILED = ("policy", "pam_module", "enroll_web")


@dataclass(frozen=True)
class User:
    uid: str
    secret: bytes
    token_dn: str


class Fixture:
    """slapd, bench users, the PAM services, the peers' secret files, an audit listener."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.ldap = devldap.start(str(work / "ldap"), devldap.free_port())
        self.config_path = self.ldap.config_path
        self.config = load_config(self.config_path)
        self.admin = devldap.admin_connection(self.ldap)
        self.audit = SyslogListener(self.config.audit.syslog_socket)
        self.services: list[Path] = []
        self.peer_secret = new_secret()
        self._mfa: dict[str, str] = {}

    def enroll(self, uids: list[str]) -> list[User]:
        """Users with an active token each, made as the enrollment site makes them."""
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

    def fresh_code(self, user: User) -> str:
        """A code the next login accepts: the token reset first (outside the timing)."""
        self.reset(user)
        return code_now(user.secret)

    def add_service(self, name: str, line: str) -> str:
        """/etc/pam.d/campus-mfa-bench-NAME with one auth line; its service name."""
        path = PAM_D / (SERVICE + name)
        path.write_text(f"# campus-mfa bench (removed when it ends)\n{line}\n")
        self.services.append(path)
        return path.name

    def mfa_services(self, authd_socket: str) -> dict[str, str]:
        """The two campus-mfa PAM services, made at the first call: in-process (authd=off,
        said explicitly) and via the authd (authd=its socket)."""
        if not self._mfa:
            mfa = f"auth required pam_python.so {MODULE} config={self.config_path}"
            self._mfa = {"in-process": self.add_service("mfa", f"{mfa} authd=off"),
                         "via authd": self.add_service("authd", f"{mfa} authd={authd_socket}")}
        return self._mfa

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
        self.audit.close()
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
