"""The OpenSSH lab of tests/test_ssh_e2e.py: two real sshd in the network lab's server
namespace (support/netns.py), local accounts with tokens and keys, and an ssh client that
answers the prompts.

sshd takes its PAM service name from the name it is started under (OpenSSH's
SSHD_PAM_SERVICE is __progname), so it runs through a symlink named campus-mfa-e2e-PID and
/etc/pam.d/sshd is never touched. Two sshd run side by side: port 2222 with the configuration
docs/pam.md shows (passwords or keys, campus Match block), port 2223 with the key-only
variant (the key replaces the password, PAM adds only the code).

su's and sudo's PAM service names are fixed, so the first sshd runs in a private mount
namespace (``unshare --mount --propagation private`` inside ``ip netns exec``) where test
versions of /etc/pam.d/su, su-l, sudo and /etc/sudoers are bind-mounted: only that sshd's
sessions see them; the host's files are never changed. Both sshd write their wtmp, btmp
and lastlog records to empty copies bind-mounted the same way. sshd writes its utmp records
(the client address of each session with a pty) only if /var/run/utmp exists: the ``utmp``
fixture creates it if this machine has none.

The module decides in the session's authd (root namespace, LDAP on loopback there) or, with
``authd=off``, in sshd's own process: the session's slapd listens on 127.0.0.1 of the root
namespace, which sshd cannot reach, so a ``Relay`` (support/tcp.py) listens on
127.0.0.1:389 inside the server namespace and forwards to it.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from devtools import devldap
from devtools.authd import AuthdProcess
from devtools.codes import wrong_code
from devtools.commands import run, stop_process
from devtools.oathtool import oathtool
from devtools.syslog import SyslogListener, audit_pid, parse_audit
from devtools.toml import dump_toml
from policy.config import load_config
from policy.rules.totp import from_base32, to_base32
from support.netns import CAMPUS_NETWORKS, PID, PREFIX, SERVER, Lab, stale, work_dir
from support.pamlab import MODULE
from support.tcp import Relay

SSHD = "/usr/sbin/sshd"
SERVICE = f"campus-mfa-e2e-{PID}"       # the PAM service (and sshd's program name)
KEYS_SERVICE = f"campus-mfa-e2e-{PID}-keys"
PORT = 2222                             # inside the server namespace, so never taken
KEYS_PORT = 2223                        # the key-replaces-password variant
TRIES = 2                               # tries= on the PAM line
LDAP_TIMEOUT = 2                        # ldap.timeout in the test config
RELAY_URI = "ldap://127.0.0.1:389"      # slapd as seen from the server namespace
CAMPUS = CAMPUS_NETWORKS


def remove_stale() -> None:
    """What a killed earlier run left outside the network lab (whose remove_stale takes its
    sshd, namespaces and work directories): its PAM service files and local accounts."""
    for path in Path("/etc/pam.d").glob("campus-mfa-e2e-*"):
        if stale("cmt" + path.name.removeprefix("campus-mfa-e2e-")):
            path.unlink(missing_ok=True)
    with open("/etc/passwd", encoding="utf-8") as passwd:
        names = [line.split(":", 1)[0] for line in passwd]
    for name in names:
        if re.fullmatch(r"cmt\d+u\d+", name) and stale(name):
            subprocess.run(["userdel", "-f", "-r", name], check=False, capture_output=True)


# -- the harness: config, PAM files, the two sshd -------------------------------------------

@dataclass
class Harness:
    net: Lab
    dir: Path
    config_path: Path
    audit: SyslogListener
    relay: Relay
    ldap: devldap.DevLdap
    sshd_log: Path
    authd: AuthdProcess
    in_process: bool = False      # authd=off on every PAM line; else the authd decides
    users: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    pam_files: dict[Path, str] = field(default_factory=dict)  # path -> template

    def write_config(self, ldap: devldap.DevLdap | None = None, **policy: str) -> None:
        """The PAM module's config: the campus networks above, LDAP as the deciding process
        reaches it (the authd: on loopback; the module in sshd: through the relay)."""
        ldap = ldap or self.ldap
        text = dump_toml({
            "ldap": {"uris": [RELAY_URI if self.in_process else ldap.uri],
                     "base_dn": devldap.BASE_DN, "user_base": devldap.PEOPLE_DN,
                     "token_base": devldap.TOKENS_DN, "role_group": devldap.ROLE_GROUP_DN,
                     "bind_dn": devldap.SERVICE_DN,
                     "bind_password_file": f"{ldap.dir}/ldap.secret",
                     "timeout": LDAP_TIMEOUT, "start_tls": False},
            "policy": {"campus_networks": list(CAMPUS), **policy},
            "audit": {"syslog_socket": self.audit.path}})
        tmp = self.config_path.with_suffix(".new")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.config_path)
        load_config(str(self.config_path))  # a typo here should fail the test, not the login

    def write_pam(self, path: Path, template: str) -> None:
        """A PAM service file with the module line for the current mode. In place (same
        inode): some of them are bind-mounted into the first sshd's mount namespace."""
        self.pam_files[path] = template
        where = "authd=off" if self.in_process else f"authd={self.authd.path}"
        with open(path, "w", encoding="utf-8") as out:
            out.write(template.format(module=MODULE, config=self.config_path, tries=TRIES,
                                      where=where))

    def set_mode(self, in_process: bool) -> None:
        """Every PAM line and the config for deciding in sshd's process or in the authd."""
        self.in_process = in_process
        self.write_config()
        for path, template in self.pam_files.items():
            self.write_pam(path, template)

    def deciding_pid_ok(self, pid: int | None) -> bool:
        """The authd decided, or (in-process) anyone but the authd."""
        if pid is None:
            return False
        return pid != self.authd.pid if self.in_process else pid == self.authd.pid


# What both sshd share: what a test instance needs (its own port, addresses, host key, no
# PID file), then docs/pam.md's settings.
_SSHD_BASE = """\
Port {port}
ListenAddress {v4}
ListenAddress {v6}
HostKey {dir}/ssh_host_ed25519_key
PidFile none

UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UseDNS no
LoginGraceTime 30
"""

# The tested configuration (docs/pam.md).
SSHD_CONFIG = _SSHD_BASE + """
# Off campus: a key alone is never enough (sshd does not run the PAM auth stack when it
# accepts a key); the PAM conversation, with its verification code, always follows.
AuthenticationMethods publickey,keyboard-interactive keyboard-interactive

# Campus: never wider than policy.campus_networks in campus-mfa.toml.
Match Address {campus}
    AuthenticationMethods publickey keyboard-interactive
"""

# The key-only variant in docs/pam.md: every login needs a key, and the key
# replaces the password; PAM adds only the code, and only off campus. No campus list in
# sshd_config.
KEYS_SSHD_CONFIG = _SSHD_BASE + """\
AuthenticationMethods publickey,keyboard-interactive
"""

KEYS_PAM_SERVICE = """\
# campus-mfa end-to-end test service, key replaces the password; removed after the run.
auth     required   pam_python.so {module} config={config} tries={tries} {where}
account  required   pam_unix.so
session  required   pam_unix.so
password requisite  pam_deny.so
"""

PAM_SERVICE = """\
# campus-mfa end-to-end test service (tests/test_ssh_e2e.py); removed after the run.
auth     requisite  pam_unix.so
auth     required   pam_python.so {module} config={config} tries={tries} {where}
account  required   pam_unix.so
session  required   pam_unix.so
password requisite  pam_deny.so
"""

# su, su-l and sudo as docs/pam.md's su and sudo section has them: common-auth (as Debian 12
# ships it, spelled out: pam_unix ends a wrong password at pam_deny), then the module line.
SU_SUDO_PAM = """\
# campus-mfa end-to-end test: /etc/pam.d/{{su,su-l,sudo}} inside the first sshd's namespace.
auth     [success=1 default=ignore]  pam_unix.so nullok
auth     requisite  pam_deny.so
auth     required   pam_permit.so
auth     required   pam_python.so {module} config={config} tries={tries} {where}
account  required   pam_unix.so
session  required   pam_unix.so
"""

# Every account may run id as root, after the password (and the code, where the module asks
# for one); never cached, so every sudo runs the PAM stack.
SUDOERS = """\
Defaults env_reset
Defaults !lecture
Defaults timestamp_timeout=0
Defaults passwd_tries=1
ALL ALL=(root) /usr/bin/id
"""


def start_sshd(h: Harness, name: str, port: int, config: str, pam: str,
               binds: dict[str, Path] | None = None) -> subprocess.Popen:
    """Write /etc/pam.d/``name`` and start sshd under the program name ``name`` (its PAM
    service) in the server namespace, on ``port``; with ``binds`` (target: source), in a
    private mount namespace where each source is bind-mounted over its target. Return once
    it listens on both addresses."""
    h.write_pam(Path("/etc/pam.d") / name, pam)
    config_path = h.dir / f"{name}.conf"
    config_path.write_text(config.format(port=port, v4=SERVER["campus", "v4"],
                                         v6=SERVER["campus", "v6"], dir=h.dir,
                                         campus=",".join(CAMPUS)))
    program = h.dir / name
    program.symlink_to(SSHD)
    run(str(program), "-t", "-f", str(config_path))
    sshd = [str(program), "-D", "-e", "-f", str(config_path)]
    if binds:
        mounts = " && ".join(f'mount --bind "{source}" "{target}"'
                             for target, source in binds.items())
        sshd = ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", f'{mounts} && exec "$@"', "sh", *sshd]
    log_path = h.dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", h.net.server, *sshd],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    h.procs.append(proc)
    deadline = time.monotonic() + 10
    while log_path.read_text(errors="replace").count("Server listening on") < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start: {log_path.read_text()}")
        time.sleep(0.05)
    return proc


@contextmanager
def harness(net: Lab, slapd: devldap.DevLdap, authd: AuthdProcess) -> Iterator[Harness]:
    """The two sshd instances in the server namespace with their PAM services, su's and
    sudo's in the first one's mount namespace, a relay to slapd, the audit socket and the
    config; all removed afterwards."""
    remove_stale()
    work = work_dir("ssh")
    made_run_sshd = False
    h = relay = audit = None
    try:
        audit = SyslogListener(str(work / "syslog.sock"))
        relay = Relay(net.server, slapd.port)
        h = Harness(net=net, dir=work, config_path=work / "campus-mfa.toml", audit=audit,
                    relay=relay, ldap=slapd, sshd_log=work / f"{SERVICE}.log", authd=authd)
        h.write_config()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
            str(work / "ssh_host_ed25519_key"))
        if not os.path.isdir("/run/sshd"):  # the privilege separation directory
            os.mkdir("/run/sshd", 0o755)
            made_run_sshd = True
        # The host's login records stay out of it: sshd writes its logins to wtmp and
        # lastlog, failed ones to btmp, here to empty copies (utmp itself is the real one:
        # the authd, outside this namespace, reads it).
        logs = {}
        for log in ("wtmp", "btmp", "lastlog"):
            if os.path.exists(f"/var/log/{log}"):
                logs[f"/var/log/{log}"] = work / f"log-{log}"
                logs[f"/var/log/{log}"].write_bytes(b"")
        binds = dict(logs)
        for service in ("su", "su-l", "sudo"):
            binds[f"/etc/pam.d/{service}"] = work / f"pam.d-{service}"
            h.write_pam(binds[f"/etc/pam.d/{service}"], SU_SUDO_PAM)
        binds["/etc/sudoers"] = work / "sudoers"
        binds["/etc/sudoers"].write_text(SUDOERS)
        os.chmod(binds["/etc/sudoers"], 0o440)
        start_sshd(h, SERVICE, PORT, SSHD_CONFIG, PAM_SERVICE, binds)
        start_sshd(h, KEYS_SERVICE, KEYS_PORT, KEYS_SSHD_CONFIG, KEYS_PAM_SERVICE, logs)
        yield h
    finally:
        for proc in h.procs if h is not None else ():
            stop_process(proc, timeout=5)
        for pam_file in h.pam_files if h is not None else ():
            if pam_file.parent == Path("/etc/pam.d"):
                pam_file.unlink(missing_ok=True)
        if relay is not None:
            relay.close()
        if audit is not None:
            audit.close()
        if made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


# -- users --------------------------------------------------------------------------------

@dataclass
class User:
    name: str
    password: str
    secret: str | None = None   # base32, when a token is linked
    key: str | None = None      # private key path, when a public key is authorised

    def code(self, offset: int = 0) -> str:
        """The code of ``offset`` seconds from now, from oathtool (an independent
        implementation)."""
        return oathtool(self.secret, time.time() + offset if offset else None)

    def wrong_code(self) -> str:
        """Six digits that match no step inside the window, now or in a minute."""
        return wrong_code(from_base32(self.secret))


@contextmanager
def accounts(h: Harness) -> Iterator[Callable[..., User]]:
    """Factory: a local account (pam_unix) and the same uid in ``ldap`` (the harness's
    slapd by default), optionally with a linked token and an authorised key; the local
    accounts are removed afterwards."""
    made: list[str] = []

    def make(*, token: bool = True, key: bool = False,
             ldap: devldap.DevLdap | None = None) -> User:
        ldap = ldap or h.ldap
        name = f"{PREFIX}u{len(h.users)}"
        h.users.append(name)
        password = secrets.token_urlsafe(12)
        run("useradd", "-m", "-s", "/bin/sh", name)
        made.append(name)
        run("chpasswd", input=f"{name}:{password}\n")
        devldap.add_user(ldap, name, password)
        user = User(name, password)
        if token:
            user.secret = to_base32(devldap.link_new_token(ldap, name)[0])
        if key:
            user.key = str(h.dir / f"{name}_ed25519")
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", user.key)
            ssh_dir = Path(f"/home/{name}/.ssh")
            ssh_dir.mkdir(mode=0o700)
            shutil.copy(user.key + ".pub", ssh_dir / "authorized_keys")
            run("chown", "-R", f"{name}:{name}", str(ssh_dir))
        return user

    try:
        yield make
    finally:
        for name in made:  # -f: even if a session of it is still closing
            subprocess.run(["userdel", "-f", "-r", name], check=False, capture_output=True)


# -- the client ---------------------------------------------------------------------------

@dataclass
class Login:
    status: int
    output: str
    prompts: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0 and self.said("ok")

    def said(self, word: str) -> bool:
        """Whether the remote command printed ``word`` on a line of its own."""
        return re.search(rf"^{re.escape(word)}\r?$", self.output, re.M) is not None


Answer = str | Callable[[], str]   # a callable is asked when its prompt appears


def ssh(h: Harness, where: str, family: str, user: User, *, codes: tuple[Answer, ...] = (),
        methods: str = "keyboard-interactive", verbose: bool = False,
        port: int = PORT, command: str = "echo ok", passwords: tuple[Answer, ...] = (),
        tty: bool = False) -> Login:
    """ssh from the ``where`` client namespace to the server's campus-side ``family``
    address, run ``command`` (with a pty if ``tty``: ``ssh -tt``) and answer the prompts of
    the login and of the command: password prompts (sudo's "[sudo] password for ...: " too)
    with ``passwords`` in turn, then ``user``'s password; code prompts with ``codes`` in
    turn, then an empty answer."""
    argv = ["netns", "exec", h.net.clients[where], "ssh", "-F", "/dev/null", "-p", str(port),
            "-o", f"PreferredAuthentications={methods}", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=5",
            "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes"]
    if user.key:
        argv += ["-i", user.key]
    else:
        argv += ["-o", "PubkeyAuthentication=no"]
    # LogLevel stays at its default (INFO): the client shows the PAM messages that end a
    # failed conversation (e.g. the last "does not match") only at that level.
    argv += ["-v"] if verbose else []
    argv += ["-tt"] if tty else []
    argv += [f"{user.name}@{SERVER['campus', family]}", command]
    pending, typed = list(codes), list(passwords)
    prompts: list[str] = []
    transcript = ""
    start = time.monotonic()
    child = pexpect.spawn("ip", argv, encoding="utf-8", timeout=25, echo=False)
    try:
        while True:
            i = child.expect([r"[Pp]assword(?: for [^:\r\n]*)?: ", r"Verification code: ",
                              pexpect.EOF])
            transcript += child.before + (child.after if isinstance(child.after, str) else "")
            if i == 2:
                break
            prompts.append(("password", "code")[i])
            if i == 0:
                answer = typed.pop(0) if typed else user.password
            else:
                answer = pending.pop(0) if pending else ""
            child.sendline(answer() if callable(answer) else answer)
        seconds = time.monotonic() - start
    finally:
        child.close(force=True)
    status = child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus
    return Login(status, transcript, prompts, seconds)


# -- what a login left: audit lines, and what to show when it went wrong ---------------------

def audits(h: Harness, user: User, count: int) -> list[dict[str, str]]:
    """Exactly ``count`` audit lines for ``user``, each from the process that should have
    decided (the authd, unless in-process), parsed."""
    lines = h.audit.about(user.name, count)
    assert len(lines) == count, f"expected {count} audit line(s) for {user.name}: {lines}"
    assert all(h.deciding_pid_ok(audit_pid(line)) for line in lines), (h.authd.pid, lines)
    return [parse_audit(line) for line in lines]


def one_audit(h: Harness, user: User, count: int = 1,
              service: str = SERVICE) -> dict[str, str]:
    """The ``count``-th (and last) audit line for ``user`` (see audits), service checked."""
    fields = audits(h, user, count)[-1]
    assert fields["service"] == service, fields
    return fields


def refused(login: Login) -> bool:
    return login.status == 255 and "Permission denied" in login.output and not login.ok


def explain(h: Harness, login: Login) -> str:
    return (f"status {login.status}, prompts {login.prompts}, {login.seconds:.1f}s\n"
            f"--- client ---\n{login.output}\n--- sshd (tail) ---\n"
            + "\n".join(h.sshd_log.read_text(errors="replace").splitlines()[-15:]))
