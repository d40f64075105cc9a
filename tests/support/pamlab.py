"""The PAM lab: real libpam + pam_python.so + pam_campus_mfa.py, driven by pamtester, against
the session's throwaway slapd. A ``PamLab`` is the ``pam`` fixture (conftest.py):

- configs: derived from the slapd's own, with the lab's campus networks and syslog socket;
- services: files in /etc/pam.d with unique names, the module in-process (``authd=off``) or
  through the session's resident authd;
- users and tokens: directory users, enrolled the way the site does it, and their token
  entries as the rootdn reads and changes them;
- running: pamtester with answers, or on a pty of its own with a utmp record;
- teardown: removes what it wrote, and proves that no registered secret value (code, secret,
  password) reached a syslog line or pamtester's output, and that every audit line came from
  the process that should decide (in authd mode the authd: a test cannot pass by silently
  falling back to in-process).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
import pexpect
import tomllib

from devtools import devldap
from devtools.authd import AuthdProcess
from devtools.codes import wrong_code
from devtools.oathtool import oathtool
from devtools.pamtester import CODE_PROMPT, PamRun, clean_env, run_pamtester
from devtools.syslog import SyslogListener, audit_pid, parse_audit
from devtools.toml import dump_toml
from policy.rules.totp import TotpParams, to_base32
from support.tcp import Tripwire
from support.utmp import LOGIN_PROCESS, record

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "pam_module" / "pam_campus_mfa.py"
PAM_DIR = Path("/etc/pam.d")
PYTHON = "/usr/bin/python3"

CAMPUS_V4 = "192.0.2.0/24"
CAMPUS_V6 = "2001:db8:c0::/48"
CAMPUS_ADDRESS = "192.0.2.7"
OFF_CAMPUS = "198.51.100.7"


def service_name() -> str:
    return f"campus-mfa-test-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Enrolled:
    """A directory user with a linked token."""

    uid: str
    password: str
    secret: bytes
    token_dn: str
    params: TotpParams

    @property
    def b32(self) -> str:
        return to_base32(self.secret)

    def code(self, at: float | None = None) -> str:
        return oathtool(self.b32, at, digits=self.params.digits, period=self.params.period)

    def wrong_code(self) -> str:
        """A well-formed code that matches no step within three of now."""
        return wrong_code(self.secret, self.params)


@dataclass
class PamLab:
    slapd: devldap.DevLdap
    tmp_path: Path
    fresh_user: Any
    authd: AuthdProcess | None = None  # None: the services run the module in-process
    idle_authd_pid: int = -1            # in-process: an authd that must not be used
    in_process_lines: bool = False       # set by a test whose lines come from pamtester
    secret_values: set[str] = field(default_factory=set)  # must appear in no output
    outputs: list[str] = field(default_factory=list)
    _services: list[Path] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Unix socket paths are limited to 108 bytes: keep the socket out of tmp_path.
        self.sock_dir = tempfile.mkdtemp(prefix="cmfa-", dir="/tmp")
        self.syslog = SyslogListener(os.path.join(self.sock_dir, "log"))
        self.base = tomllib.loads(Path(self.slapd.config_path).read_text(encoding="utf-8"))
        self.secret_values.update({self.slapd.secret("ldap.secret"), self.slapd.admin_password,
                                   self.slapd.secret("ldap-write.secret")})

    # -- configs and services -----------------------------------------------------------------

    def config(self, *, ldap_uri: str | None = None, **sections: dict[str, Any]) -> str:
        """A config derived from the fixture's: our campus set and syslog socket, then
        ``sections`` merged in (e.g. policy={"enforcement": "required"})."""
        data = {section: dict(table) for section, table in self.base.items()}
        data["policy"]["campus_networks"] = [CAMPUS_V4, CAMPUS_V6]
        data["audit"]["syslog_socket"] = self.syslog.path
        if ldap_uri is not None:
            data["ldap"]["uris"] = [ldap_uri]
        for section, changes in sections.items():
            data.setdefault(section, {}).update(changes)
        path = self.tmp_path / f"campus-mfa-{secrets.token_hex(4)}.toml"
        path.write_text(dump_toml(data), encoding="utf-8")
        return str(path)

    @property
    def where(self) -> str:
        """The module option that says where the login runs."""
        return f"authd={self.authd.path}" if self.authd else "authd=off"

    def service(self, options: str = "", *, config: str | None = None,
                stack: str | None = None, name: str | None = None) -> str:
        """Write /etc/pam.d/campus-mfa-test-<hex> (or ``name`` from service_name());
        ``stack`` replaces the default lines."""
        name = name or service_name()
        if stack is None:
            config = config or self.config()
            stack = (f"auth required pam_python.so {MODULE} config={config} {self.where} "
                     f"{options}\n"
                     "account required pam_permit.so\n")
        path = PAM_DIR / name
        self._services.append(path)
        path.write_text(stack, encoding="utf-8")
        return name

    def tripwire(self, *, hang: bool = False) -> Tripwire:
        """A misbehaving "directory" (support/tcp.py), closed at teardown."""
        wire = Tripwire(hang=hang)
        self._closers.append(wire.close)
        return wire

    # -- users and tokens ---------------------------------------------------------------------

    def user(self) -> tuple[str, str]:
        uid, password = self.fresh_user()
        self.secret_values.add(password)
        return uid, password

    def enrolled(self, params: TotpParams = TotpParams(), max_failures: int = 10) -> Enrolled:
        """A fresh user with a linked token, enrolled the way the site does it."""
        uid, password = self.user()
        secret, dn = devldap.link_new_token(self.slapd, uid, params, max_failures)
        self.secret_values.update({to_base32(secret), secret.hex(), str(secret)[2:-1]})
        return Enrolled(uid, password, secret, dn, params)

    def admin(self) -> ldap3.Connection:
        return devldap.admin_connection(self.slapd)

    def read(self, dn: str, *attributes: str) -> dict[str, list[bytes]]:
        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=list(attributes))
            return dict(conn.response[0]["raw_attributes"])
        finally:
            conn.unbind()

    def token(self, dn: str) -> dict[str, Any]:
        """The counters of a token entry as the rootdn sees them."""
        raw = self.read(dn, "oathTOTPLastTimeStep", "oathFailureCount", "oathLastFailure",
                        "oathLastLogin")
        one = {name: values[0].decode() for name, values in raw.items() if values}
        return {"last_step": int(one["oathTOTPLastTimeStep"]),
                "failures": int(one["oathFailureCount"]),
                "last_failure": one.get("oathLastFailure"),
                "last_login": one.get("oathLastLogin")}

    def modify(self, dn: str, **values: list[Any]) -> None:
        """Replace attributes as the rootdn (to corrupt or preset an entry)."""
        conn = self.admin()
        try:
            assert conn.modify(dn, {name: [(ldap3.MODIFY_REPLACE, v)]
                                    for name, v in values.items()}), conn.result
        finally:
            conn.unbind()

    # -- running ------------------------------------------------------------------------------

    def run(self, service: str, user: str, rhost: str | None, answers: list[str] = (),
            **kwargs: Any) -> PamRun:
        """pamtester once; its output joins what the teardown checks for secrets."""
        self.secret_values.update(a for a in answers if a)
        result = run_pamtester(service, user, rhost, answers, **kwargs)
        self.outputs.append(result.output)
        return result

    def run_on_tty(self, service: str, user: str, answers: list[str] = (), *,
                   host: str | None = None, kind: int = LOGIN_PROCESS,
                   record_pid: int | None = None, age: float = 0) -> PamRun:
        """pamtester without PAM_RHOST in a pty of its own, with PAM_TTY set to that pty
        (``-I tty=``), as ``login`` on a console. With ``host`` (``""``: none), the pty gets
        a utmp record before PAM starts: by default a LOGIN_PROCESS record carrying
        pamtester's own pid, as agetty writes one for the login it becomes; ``record_pid``
        names another process, ``age`` backdates the record. Answers go to the prompts in
        turn, then end of input; the whole output is in ``stderr`` (a pty has one stream)."""
        self.secret_values.update(a for a in answers if a)
        command = f'read go && exec pamtester -I tty="$(tty)" {service} {user} authenticate'
        started = time.monotonic()
        child = pexpect.spawn("sh", ["-c", command], env=clean_env(), encoding="utf-8",
                              timeout=30, echo=False)
        try:
            tty = os.readlink(f"/proc/{child.pid}/fd/0")  # sh waits at `read`
            with (record(kind, record_pid or child.pid, tty, host, age=age)
                  if host is not None else contextlib.nullcontext()):
                child.sendline("")  # now sh becomes pamtester, with the same pid
                pending, output = list(answers), ""
                while child.expect([r"[Pp]assword: ", CODE_PROMPT, pexpect.EOF]) != 2:
                    output += child.before + child.after
                    if pending:
                        child.sendline(pending.pop(0))
                    else:
                        child.sendeof()  # end of input, as run() gives once answers run out
                output += child.before
        finally:
            child.close(force=True)
        result = PamRun(child.exitstatus if child.exitstatus is not None else -1, "",
                        output.replace("\r\n", "\n"), time.monotonic() - started)
        self.outputs.append(result.output)
        return result

    def audit(self, count: int = 1) -> list[dict[str, str]]:
        """The audit lines so far (waiting for ``count``), parsed."""
        self.syslog.wait_for(count)
        return [parse_audit(line) for line in self.syslog.audit_lines()]

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        for path in self._services:
            path.unlink(missing_ok=True)
        for closer in self._closers:
            closer()
        self.syslog.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def assert_lines_from_the_right_process(self) -> None:
        """Authd mode: every line from the authd; in-process: none from an authd."""
        pids = {audit_pid(line) for line in self.syslog.lines}
        if self.authd is not None and not self.in_process_lines:
            assert pids <= {self.authd.pid}, f"lines not from the authd: {pids}"
        else:
            assert self.idle_authd_pid not in pids, "an in-process service used an authd"

    def assert_no_secret_leaked(self) -> None:
        # Past the "<pri>campus-mfa[pid]: " prefix, whose digits could hold a code by chance.
        texts = [line.split(": ", 1)[1] for line in self.syslog.lines] + self.outputs
        for value in self.secret_values:
            if len(value) < 4:
                continue
            leaks = [text for text in texts if value in text]
            assert leaks == [], f"a secret value reached output: {leaks}"


def make_lab(slapd: devldap.DevLdap, tmp_path: Path, fresh_user: Any,
             authd: AuthdProcess | None, idle_authd_pid: int = -1) -> Iterator[PamLab]:
    """The fixture's body: the lab, then the teardown checks, then the clean-up."""
    lab = PamLab(slapd, tmp_path, fresh_user, authd, idle_authd_pid)
    try:
        yield lab
        lab.assert_no_secret_leaked()
        lab.assert_lines_from_the_right_process()
    finally:
        lab.close()
