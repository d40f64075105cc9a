"""End to end with Debian's OpenSSH: real clients log in from a campus and an off-campus
network namespace to a real sshd whose PAM stack is pam_unix followed by campus-mfa (issue 6),
and inside those sessions run su and sudo, whose logins carry no PAM_RHOST (issue 11, 2).

As installed, the module hands each login to a running campus-mfa-authd (the session's
``authd`` fixture, in the root namespace; its LDAP is the session's slapd on loopback there),
and every audit line must carry the authd's pid. One test runs the login story with
``authd=off`` instead, the module deciding in sshd's own process (LDAP through the relay
below), as it does wherever no authd answers.

Layout, all of it created here and removed afterwards (also after a crash of an earlier run):

    campus client ns            server ns (sshd)                 off-campus client ns
    192.0.2.2/24       <-veth-> 192.0.2.1/24      198.51.100.1/24 <-veth-> 198.51.100.2/24
    2001:db8:c0::2/64           2001:db8:c0::1/64 2001:db8:ff::1/64        2001:db8:ff::2/64
                                127.0.0.1:389 -- relay --> the session's slapd (root ns loopback)

Both clients connect to 192.0.2.1 / 2001:db8:c0::1; the off-campus one through a host route
via the server side of its own link. No interface of the root namespace is touched, so nothing
can leave these namespaces. The session's slapd listens on 127.0.0.1 of the root namespace,
which sshd cannot reach; an in-process relay listens on 127.0.0.1 inside the server namespace
(its socket is created by a thread that entered that namespace) and forwards to it.

sshd takes its PAM service name from the name it is started under (OpenSSH's
SSHD_PAM_SERVICE is __progname), so it runs through a symlink named campus-mfa-e2e-PID and
/etc/pam.d/sshd is never touched. Two sshd run side by side: port 2222 with the configuration
docs/pam.md shows (passwords or keys, campus Match block), port 2223 with the key-only
variant (the key replaces the password, PAM adds only the code).

su's and sudo's PAM service names are fixed, so the first sshd runs in a private mount
namespace (``unshare --mount --propagation private`` inside ``ip netns exec``) where test
versions of /etc/pam.d/su, su-l, sudo and /etc/sudoers are bind-mounted: only that sshd's
sessions see them; the host's files are never changed. Both sshd write their wtmp, btmp
and lastlog records to empty copies bind-mounted the same way. sshd writes its utmp records (the
client address of each session with a pty) only if /var/run/utmp exists: the ``utmp``
fixture creates it if this machine has none.
"""
from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pytest

from support import sitelab
from support import weblab
from support.pamlab import AuthdProcess
from devtools import devldap
from policy.config import load_config
from policy.directory.enrollment import EnrollmentDirectory
from policy.messages import MISMATCH_MESSAGE, SET_UP_MESSAGE, UNAVAILABLE_MESSAGE
from policy.origin import USER_PROCESS, read_utmp
from policy.rules.totp import TotpParams, new_secret, to_base32

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "pam_module" / "pam_campus_mfa.py"
SSHD = "/usr/sbin/sshd"
PID = os.getpid()
PREFIX = f"cmfa{PID}"                  # namespaces and users of this run
SERVICE = f"campus-mfa-e2e-{PID}"       # the PAM service (and sshd's program name)
PAM_FILE = Path("/etc/pam.d") / SERVICE
STALE = re.compile(r"^(?:cmfa|campus-mfa-e2e-)(\d+)")
PORT = 2222                             # inside the server namespace, so never taken
KEYS_PORT = 2223                        # the key-replaces-password variant
KEYS_SERVICE = f"campus-mfa-e2e-{PID}-keys"
TRIES = 2                               # tries= on the PAM line
LDAP_TIMEOUT = 2                        # ldap.timeout in the test config
RELAY_URI = "ldap://127.0.0.1:389"      # slapd as seen from the server namespace
CAMPUS = ("192.0.2.0/24", "2001:db8:c0::/48")
SERVER = {"v4": "192.0.2.1", "v6": "2001:db8:c0::1"}
SERVER_OFF_V4 = "198.51.100.1"        # the server on the off-campus link (the site's nginx)
CLIENT = {("campus", "v4"): "192.0.2.2", ("campus", "v6"): "2001:db8:c0::2",
          ("off", "v4"): "198.51.100.2", ("off", "v6"): "2001:db8:ff::2"}
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*args: str, input: str | None = None) -> str:
    """Run a command; fail with its output if it fails."""
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=30,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                           f"{done.stdout}{done.stderr}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """What an earlier run that was killed (no finally ran) left behind, by its dead PID:
    its sshd, namespaces, PAM service file and users."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:  # the path it was started as, or the title sshd gives itself later
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        match = re.match(r"^(?:\S*/)?campus-mfa-e2e-(\d+)", cmdline)
        if match and not _alive(int(match.group(1))) and os.path.realpath(
                f"/proc/{proc.name}/exe") == SSHD:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for name in run("ip", "netns", "list").split():
        match = STALE.match(name)
        if match and not _alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    for path in Path("/etc/pam.d").glob("campus-mfa-e2e-*"):
        match = STALE.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
    for path in Path(tempfile.gettempdir()).glob("cmfa*-*"):
        match = STALE.match(path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
    with open("/etc/passwd", encoding="utf-8") as passwd:
        for line in passwd:
            name = line.split(":", 1)[0]
            match = re.match(r"^cmfa(\d+)u\d+$", name)
            if match and not _alive(int(match.group(1))):
                subprocess.run(["userdel", "-f", "-r", name], check=False, capture_output=True)


# -- network ------------------------------------------------------------------------------

def in_netns(netns: str, make):  # type: ignore[no-untyped-def]
    """Call ``make()`` in a short-lived thread that has entered ``netns``: sockets it
    creates belong to that namespace for their whole life. The caller's thread stays put."""
    result: dict = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            result["value"] = make()
        except BaseException as err:  # handed to the caller
            result["error"] = err

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@dataclass
class Net:
    server: str
    clients: dict[str, str]   # "campus" / "off" -> namespace name


@pytest.fixture(scope="module")
def net() -> Net:
    """Three namespaces joined by two veth pairs; no interface in the root namespace."""
    remove_stale()
    names = {"server": f"{PREFIX}s", "campus": f"{PREFIX}c", "off": f"{PREFIX}o"}
    made: list[str] = []
    try:
        for name in names.values():
            run("ip", "netns", "add", name)
            made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        s = names["server"]
        links = {"campus": ("192.0.2", "2001:db8:c0::"), "off": ("198.51.100", "2001:db8:ff::")}
        for side, (v4, v6) in links.items():
            c = names[side]
            here, there = f"{PREFIX}{side[0]}0", f"{PREFIX}{side[0]}1"
            run("ip", "link", "add", here, "netns", s, "type", "veth",
                "peer", "name", there, "netns", c)
            for ns, dev, host in ((s, here, "1"), (c, there, "2")):
                run("ip", "-n", ns, "addr", "add", f"{v4}.{host}/24", "dev", dev)
                run("ip", "-n", ns, "-6", "addr", "add", f"{v6}{host}/64", "dev", dev, "nodad")
                run("ip", "-n", ns, "link", "set", dev, "up")
        o = names["off"]
        run("ip", "-n", o, "route", "add", f"{SERVER['v4']}/32", "via", "198.51.100.1")
        run("ip", "-n", o, "-6", "route", "add", f"{SERVER['v6']}/128", "via", "2001:db8:ff::1")
        yield Net(server=s, clients={"campus": names["campus"], "off": o})
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class Relay:
    """127.0.0.1:389 inside the server namespace -> 127.0.0.1:``target`` here. When the
    target refuses, the accepted connection is reset, as a stopped slapd would do."""

    def __init__(self, netns: str, target: int) -> None:
        self.target = target
        self.listener = in_netns(netns, lambda: socket.create_server(("127.0.0.1", 389)))
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                down, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                down.close()
                continue
            up.settimeout(None)
            down.settimeout(None)
            self.sockets += [up, down]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.listener.close()
        for sock in self.sockets:
            sock.close()


# -- audit, config, sshd ------------------------------------------------------------------

class AuditSink:
    """A datagram socket where the module's syslog lines arrive (config audit.syslog_socket)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.lines: list[str] = []

    def _drain(self) -> None:
        while True:
            try:
                self.lines.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except (TimeoutError, socket.timeout):
                return

    def of(self, user: str, count: int = 1, wait: float = 10.0) -> list[str]:
        """The audit lines (not debug lines) about ``user``; waits for ``count`` of them.

        ``wait=0`` reads what has arrived, without waiting: enough to prove that a finished
        login wrote no (further) line. The deciding process sends its line (a datagram,
        queued here when send returns) before the answer that lets sshd go on, so by the
        time the ssh client has exited every line of its login is here."""
        deadline = time.monotonic() + wait
        while True:
            self._drain()
            found = [line for line in self.lines
                     if f" user={user} " in line and ": debug: " not in line]
            if len(found) >= count or time.monotonic() > deadline:
                return found

    def close(self) -> None:
        self.sock.close()


@dataclass
class Harness:
    net: Net
    dir: Path
    config_path: Path
    sink: AuditSink
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
        uri = RELAY_URI if self.in_process else ldap.uri
        extra = "".join(f'{key} = "{value}"\n' for key, value in policy.items())
        text = f"""\
[ldap]
uris = ["{uri}"]
base_dn = "{devldap.BASE_DN}"
user_base = "{devldap.PEOPLE_DN}"
token_base = "{devldap.TOKENS_DN}"
role_group = "{devldap.ROLE_GROUP_DN}"
bind_dn = "{devldap.SERVICE_DN}"
bind_password_file = "{ldap.dir}/ldap.secret"
timeout = {LDAP_TIMEOUT}
start_tls = false

[policy]
campus_networks = ["{CAMPUS[0]}", "{CAMPUS[1]}"]
{extra}
[audit]
syslog_socket = "{self.sink.path}"
"""
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

    def deciding_pid_ok(self, pid: int) -> bool:
        """The authd decided, or (in-process) anyone but the authd."""
        return pid != self.authd.pid if self.in_process else pid == self.authd.pid


SSHD_CONFIG = """\
# The tested configuration (docs/pam.md), plus what a test instance needs:
# its own port, addresses, host key and no PID file.
Port 2222
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
KEYS_SSHD_CONFIG = """\
Port 2223
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


def start_sshd(h: Harness, name: str, config: str, pam: str,
               binds: dict[str, Path] | None = None) -> subprocess.Popen:
    """Write /etc/pam.d/``name`` and start sshd under the program name ``name`` (its PAM
    service) in the server namespace; with ``binds`` (target: source), in a private mount
    namespace where each source is bind-mounted over its target. Return once it listens on
    both addresses."""
    h.write_pam(Path("/etc/pam.d") / name, pam)
    config_path = h.dir / f"{name}.conf"
    config_path.write_text(config.format(v4=SERVER["v4"], v6=SERVER["v6"], dir=h.dir,
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


@pytest.fixture(scope="module")
def harness(net: Net, slapd: devldap.DevLdap, authd: AuthdProcess, utmp: str) -> Harness:
    """The two sshd instances in the server namespace with their PAM services, su's and
    sudo's in the first one's mount namespace, a relay to slapd, the audit socket and the
    config; all removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    os.chmod(work, 0o755)
    made_run_sshd = False
    h = relay = sink = None
    try:
        sink = AuditSink(str(work / "syslog.sock"))
        relay = Relay(net.server, int(slapd.uri.rsplit(":", 1)[1]))
        h = Harness(net=net, dir=work, config_path=work / "campus-mfa.toml", sink=sink,
                    relay=relay, ldap=slapd, sshd_log=work / f"{SERVICE}.log", authd=authd)
        h.write_config()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "ssh_host_ed25519_key"))
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
        start_sshd(h, SERVICE, SSHD_CONFIG, PAM_SERVICE, binds)
        start_sshd(h, KEYS_SERVICE, KEYS_SSHD_CONFIG, KEYS_PAM_SERVICE, logs)
        yield h
    finally:
        for proc in h.procs if h is not None else ():
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pam_file in h.pam_files if h is not None else ():
            if pam_file.parent == Path("/etc/pam.d"):
                pam_file.unlink(missing_ok=True)
        if relay is not None:
            relay.close()
        if sink is not None:
            sink.close()
        if made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def h(harness: Harness) -> Harness:
    """The harness after each test as before it: the authd decides, default config."""
    yield harness
    harness.set_mode(in_process=False)


# -- users --------------------------------------------------------------------------------

@dataclass
class User:
    name: str
    password: str
    secret: str | None = None   # base32, when a token is linked
    key: str | None = None      # private key path, when a public key is authorised

    def code(self, offset: int = 0) -> str:
        """The current code from oathtool (an independent implementation)."""
        when = ["-N", f"now {offset:+d} seconds"] if offset else []
        return run("oathtool", "--totp", "-b", *when, self.secret).strip()

    def wrong_code(self) -> str:
        """Six digits that match no step inside the window, now or in a minute."""
        near = set(run("oathtool", "--totp", "-b", "-N", "now - 60 seconds", "-w", "5",
                       self.secret).split())
        guess = (int(self.code()) + 500000) % 10 ** 6
        while f"{guess:06d}" in near:
            guess = (guess + 1) % 10 ** 6
        return f"{guess:06d}"


@pytest.fixture
def make_user(h: Harness):  # type: ignore[no-untyped-def]
    """Factory: a local account (pam_unix) and the same uid in slapd, optionally with a
    linked token and an authorised key; the local accounts are removed afterwards."""
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
            secret = new_secret()
            with EnrollmentDirectory(load_config(ldap.config_path).ldap) as directory:
                dn = directory.create_pending_token(secret, TotpParams(), 10, time.time())
                directory.link_token(directory.read_state(name), dn, 0)
            user.secret = to_base32(secret)
        if key:
            user.key = str(h.dir / f"{name}_ed25519")
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", user.key)
            ssh_dir = Path(f"/home/{name}/.ssh")
            ssh_dir.mkdir(mode=0o700)
            shutil.copy(user.key + ".pub", ssh_dir / "authorized_keys")
            run("chown", "-R", f"{name}:{name}", str(ssh_dir))
        return user

    yield make
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
    """ssh from the ``where`` client namespace to the server's ``family`` address, run
    ``command`` (with a pty if ``tty``: ``ssh -tt``) and answer the prompts of the login and
    of the command: password prompts (sudo's "[sudo] password for ...: " too) with
    ``passwords`` in turn, then ``user``'s password; code prompts with ``codes`` in turn, then
    an empty answer."""
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
    argv += [f"{user.name}@{SERVER[family]}", command]
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


def audit_fields(line: str) -> dict[str, str]:
    """key=value fields of one audit line (values may be double-quoted)."""
    body = line.split("]: ", 1)[1]
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', body)}


def pid_of(line: str) -> int:
    return int(re.match(r"<\d+>campus-mfa\[(\d+)\]", line)[1])


def audits(h: Harness, user: User, count: int) -> list[dict[str, str]]:
    """Exactly ``count`` audit lines for ``user``, each from the process that should have
    decided (the authd, unless in-process), parsed."""
    lines = h.sink.of(user.name, count)
    assert len(lines) == count, f"expected {count} audit line(s) for {user.name}: {lines}"
    assert all(h.deciding_pid_ok(pid_of(line)) for line in lines), (h.authd.pid, lines)
    return [audit_fields(line) for line in lines]


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


FAMILIES = pytest.mark.parametrize("family", ["v4", "v6"])


# -- scenarios ----------------------------------------------------------------------------

@FAMILIES
def test_1_campus_password_only(h: Harness, make_user, family: str) -> None:
    user = make_user()
    login = ssh(h, "campus", family, user)
    assert login.ok and login.prompts == ["password"], explain(h, login)
    audit = one_audit(h, user)
    assert audit["outcome"] == "success" and audit["source"] == CLIENT["campus", family]
    assert audit["reason"].startswith(f"campus source {CLIENT['campus', family]} matched")


@FAMILIES
def test_2_off_campus_code_from_oathtool(h: Harness, make_user, family: str) -> None:
    user = make_user()
    login = ssh(h, "off", family, user, codes=(user.code(),))
    assert login.ok and login.prompts == ["password", "code"], explain(h, login)
    assert MISMATCH_MESSAGE not in login.output
    audit = one_audit(h, user)
    assert audit["outcome"] == "success" and audit["source"] == CLIENT["off", family]
    assert audit["reason"] == (f"off-campus source {CLIENT['off', family]}; "
                               "2-step verification is on; code accepted")


@FAMILIES
def test_2_off_campus_wrong_code_refused_after_tries(h: Harness, make_user,
                                                      family: str) -> None:
    user = make_user()
    wrong = user.wrong_code()
    login = ssh(h, "off", family, user, codes=(wrong,) * (TRIES + 1))
    assert refused(login), explain(h, login)
    assert login.prompts == ["password"] + ["code"] * TRIES, explain(h, login)
    assert login.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, login)
    audit = one_audit(h, user)
    assert audit["outcome"] == "failure" and audit["source"] == CLIENT["off", family]
    assert audit["reason"].startswith(f"off-campus source {CLIENT['off', family]}; "
                                      "2-step verification is on; code refused")
    assert wrong not in h.sink.of(user.name)[0]


def test_3_replayed_code_refused_on_second_connection(h: Harness, make_user) -> None:
    user = make_user()
    code = user.code()
    first = ssh(h, "off", "v4", user, codes=(code,))
    assert first.ok, explain(h, first)
    second = ssh(h, "off", "v6", user, codes=(code,) * TRIES)
    assert refused(second), explain(h, second)
    assert second.prompts == ["password"] + ["code"] * TRIES, explain(h, second)
    assert second.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, second)
    audit = one_audit(h, user, 2)
    assert audit_fields(h.sink.of(user.name)[0])["outcome"] == "success"
    assert audit["outcome"] == "failure" and audit["source"] == CLIENT["off", "v6"]
    assert "code refused" in audit["reason"] and "replay" in audit["reason"], audit


def test_4_no_token_opt_in_password_only(h: Harness, make_user) -> None:
    user = make_user(token=False)
    login = ssh(h, "off", "v4", user)
    assert login.ok and login.prompts == ["password"], explain(h, login)
    audit = one_audit(h, user)
    assert audit["outcome"] == "success"
    assert audit["reason"] == (f"off-campus source {CLIENT['off', 'v4']}; "
                               "no token (2-step verification is off, opt-in)")


@FAMILIES
def test_4_no_token_required_refused_with_setup_message(h: Harness, make_user,
                                                         family: str) -> None:
    h.write_config(enforcement="required")
    user = make_user(token=False)
    login = ssh(h, "off", family, user)
    assert refused(login) and login.prompts == ["password"], explain(h, login)
    assert SET_UP_MESSAGE in " ".join(login.output.split()), explain(h, login)
    audit = one_audit(h, user)
    assert audit["outcome"] == "failure"
    assert audit["reason"] == (f"off-campus source {CLIENT['off', family]}; "
                               "no token and enforcement = required")
    # On campus the same user is not asked for anything more.
    campus = ssh(h, "campus", family, user)
    assert campus.ok and campus.prompts == ["password"], explain(h, campus)


@pytest.fixture
def own_slapd(h: Harness):  # type: ignore[no-untyped-def]
    """A second slapd that this test may stop; the config (and the relay) point at it."""
    handle = devldap.start(str(h.dir / "own-ldap"), devldap.free_port(), campus_networks=CAMPUS)
    try:
        h.relay.target = int(handle.uri.rsplit(":", 1)[1])
        h.write_config(ldap=handle)
        yield handle
    finally:
        h.relay.target = int(h.ldap.uri.rsplit(":", 1)[1])
        try:
            os.kill(handle.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        devldap.stop(handle.dir)


@pytest.mark.parametrize("how", ["frozen", "killed"])
def test_5_slapd_stopped(h: Harness, make_user, own_slapd: devldap.DevLdap, how: str) -> None:
    """SIGSTOP: connections are accepted and never answered (the timeout must end it);
    killed: nothing listens. Campus logins never touch LDAP, off campus fails closed fast."""
    user = make_user(ldap=own_slapd)
    if how == "frozen":
        os.kill(own_slapd.pid, signal.SIGSTOP)
    else:  # killed, its files (and the service password file) left in place
        os.kill(own_slapd.pid, signal.SIGKILL)
        port = int(own_slapd.uri.rsplit(":", 1)[1])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the killed slapd still answers")
    for family in ("v4", "v6"):
        campus = ssh(h, "campus", family, user)
        assert campus.ok and campus.prompts == ["password"], explain(h, campus)
        off = ssh(h, "off", family, user, codes=(user.code(),))
        assert refused(off) and off.prompts == ["password"], explain(h, off)
        assert UNAVAILABLE_MESSAGE in off.output, explain(h, off)
        # The message itself proves that the module gave up on the directory in time: sshd
        # would otherwise have cut the connection at LoginGraceTime, before any message.
        # How long it took (LDAP_TIMEOUT, pam_unix's failure delay of about 2 s, ssh
        # itself) is not timed: a busy machine would make any closer limit flaky.
    fields = audits(h, user, 4)
    assert [line["outcome"] for line in fields] == ["success", "unavailable"] * 2, fields
    for line in fields[1::2]:
        assert line["reason"].startswith(f"off-campus source {line['source']}; directory "
                                         "error ("), line


def test_6_publickey_off_campus_still_needs_the_code(h: Harness, make_user) -> None:
    user = make_user(key=True)
    # Campus: the key alone logs in; the PAM auth stack does not run, so no audit line.
    campus = ssh(h, "campus", "v4", user, methods="publickey")
    assert campus.ok and campus.prompts == [], explain(h, campus)
    # Off campus the key is accepted only as a first step ...
    key_only = ssh(h, "off", "v4", user, methods="publickey", verbose=True)
    assert key_only.status == 255 and not key_only.ok, explain(h, key_only)
    assert 'Authenticated using "publickey" with partial success' in key_only.output
    assert "Permission denied (keyboard-interactive)" in key_only.output
    assert h.sink.of(user.name, 1, wait=0) == []  # the client has exited: see AuditSink.of
    # ... and the keyboard-interactive step that follows asks for the code.
    wrong = ssh(h, "off", "v6", user, methods="publickey,keyboard-interactive",
                codes=(user.wrong_code(),) * TRIES)
    assert refused(wrong) and wrong.prompts == ["password"] + ["code"] * TRIES, \
        explain(h, wrong)
    assert one_audit(h, user, 1)["outcome"] == "failure"
    good = ssh(h, "off", "v4", user, methods="publickey,keyboard-interactive",
               codes=(user.code(),))
    assert good.ok and good.prompts == ["password", "code"], explain(h, good)
    audit = one_audit(h, user, 2)
    assert audit["outcome"] == "success" and audit["reason"].endswith("code accepted")


def test_6_key_replaces_the_password_and_pam_adds_the_code(h: Harness, make_user) -> None:
    """The key-only variant in docs/pam.md: AuthenticationMethods
    publickey,keyboard-interactive and a PAM auth stack without pam_unix. Campus: the key alone
    (PAM asks nothing); off campus: the key, then only the code; no key: refused whatever else
    is typed."""
    user = make_user(key=True)
    kbd = "publickey,keyboard-interactive"
    campus = ssh(h, "campus", "v6", user, methods=kbd, port=KEYS_PORT)
    assert campus.ok and campus.prompts == [], explain(h, campus)
    audit = one_audit(h, user, 1, service=KEYS_SERVICE)
    assert audit["outcome"] == "success" and audit["reason"].startswith("campus source")
    wrong = ssh(h, "off", "v4", user, methods=kbd, port=KEYS_PORT,
                codes=(user.wrong_code(),) * TRIES)
    assert refused(wrong) and wrong.prompts == ["code"] * TRIES, explain(h, wrong)
    assert wrong.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, wrong)
    assert one_audit(h, user, 2, service=KEYS_SERVICE)["outcome"] == "failure"
    good = ssh(h, "off", "v6", user, methods=kbd, port=KEYS_PORT, codes=(user.code(),))
    assert good.ok and good.prompts == ["code"], explain(h, good)
    audit = one_audit(h, user, 3, service=KEYS_SERVICE)
    assert audit["outcome"] == "success" and audit["reason"].endswith("code accepted")
    user.key = None  # the same account without its key: keyboard-interactive alone is refused
    no_key = ssh(h, "off", "v4", user, methods="keyboard-interactive", port=KEYS_PORT)
    assert no_key.status == 255 and no_key.prompts == [], explain(h, no_key)
    assert "Permission denied (publickey)" in no_key.output, explain(h, no_key)
    assert len(h.sink.of(user.name, 4, wait=0)) == 3  # the client has exited: AuditSink.of




# -- 7. su and sudo inside a session: no PAM_RHOST, so the session's source --------------

SU_OK = "su-ok"
PTS = r"pts/\d+"


def su(victim: User) -> str:
    """su's command line; the blank line first puts the word on a line of its own even
    after prompts that a session without a pty does not end with a newline."""
    return f"su - {victim.name} -c 'echo; echo {SU_OK}'"


def earlier_code(user: User) -> Callable[[], str]:
    """The code of the previous time step, computed at the prompt: a login that uses it
    leaves the current step's code usable once more (by su or sudo in that session)."""
    return lambda: user.code(-30)


@FAMILIES
def test_7_su_in_an_off_campus_session_asks_the_other_users_code(h: Harness, make_user,
                                                                   family: str) -> None:
    """Logged in from off campus with their own password and code, someone runs su - victim
    with the victim's (stolen) password: the victim's code is asked too."""
    caller, victim = make_user(), make_user()
    wrong = victim.wrong_code()
    refused_su = ssh(h, "off", family, caller, command=su(victim), tty=True,
                     passwords=(caller.password, victim.password),
                     codes=(earlier_code(caller), wrong, wrong))
    assert refused_su.prompts == ["password", "code", "password"] + ["code"] * TRIES, \
        explain(h, refused_su)
    assert refused_su.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, refused_su)
    assert "su: Authentication failure" in refused_su.output, explain(h, refused_su)
    assert refused_su.status == 1 and not refused_su.said(SU_OK), explain(h, refused_su)
    good = ssh(h, "off", family, caller, command=su(victim), tty=True,
               passwords=(caller.password, victim.password),
               codes=(caller.code, victim.code))
    assert good.prompts == ["password", "code", "password", "code"], explain(h, good)
    assert good.status == 0 and good.said(SU_OK), explain(h, good)
    where = CLIENT["off", family]
    lines = audits(h, victim, 2)
    assert [(line["service"], line["source"]) for line in lines] == [("su-l", where)] * 2
    assert re.fullmatch(rf"off-campus source {where} \(utmp record of {PTS}\); 2-step "
                        r"verification is on; code refused \(mismatch, mismatch\)",
                        lines[0]["reason"]), lines[0]
    assert re.fullmatch(rf"off-campus source {where} \(utmp record of {PTS}\); 2-step "
                        "verification is on; code accepted", lines[1]["reason"]), lines[1]
    assert [line["outcome"] for line in lines] == ["failure", "success"]


@FAMILIES
def test_7_su_in_a_campus_session_asks_only_the_password(h: Harness, make_user,
                                                         family: str) -> None:
    caller, victim = make_user(), make_user()
    login = ssh(h, "campus", family, caller, command=su(victim), tty=True,
                passwords=(caller.password, victim.password))
    assert login.prompts == ["password", "password"], explain(h, login)
    assert login.status == 0 and login.said(SU_OK), explain(h, login)
    audit = one_audit(h, victim, service="su-l")
    where = CLIENT["campus", family]
    assert (audit["outcome"], audit["source"]) == ("success", where)
    assert re.fullmatch(rf"campus source {where} \(utmp record of {PTS}\) matched "
                        rf"{CAMPUS[0] if family == 'v4' else CAMPUS[1]}", audit["reason"]), audit


def test_7_su_without_a_tty_is_off_campus_even_in_a_campus_session(h: Harness,
                                                                  make_user) -> None:
    """No pty (ssh without -t): su has no PAM_TTY, so no session can be found."""
    caller, victim = make_user(), make_user()
    login = ssh(h, "campus", "v4", caller, command=su(victim),
                passwords=(caller.password, victim.password), codes=(victim.code,))
    assert login.prompts == ["password", "password", "code"], explain(h, login)
    assert login.status == 0 and login.said(SU_OK), explain(h, login)
    audit = one_audit(h, victim, service="su-l")
    assert audit["source"] == "none"
    assert audit["reason"] == ("off-campus source none (no tty); 2-step verification is "
                               "on; code accepted")


def test_7_sudo_asks_the_callers_code_off_campus_and_not_on_campus(h: Harness,
                                                                    make_user) -> None:
    """sudo asks the caller's own password; in an off-campus session the caller's code.
    (One user, so three accepted codes within the window: the previous, the current and
    the next step's, each computed when its prompt appears.)"""
    user = make_user()
    sudo = "sudo /usr/bin/id -un"
    refused_sudo = ssh(h, "off", "v4", user, command=sudo, tty=True,
                       codes=(earlier_code(user), user.wrong_code(), user.wrong_code()))
    assert refused_sudo.prompts == ["password", "code", "password", "code", "code"], \
        explain(h, refused_sudo)
    # sudo authenticates with PAM_SILENT, so the module's messages are not shown; sudo says
    # it in its own words.
    assert MISMATCH_MESSAGE not in refused_sudo.output, explain(h, refused_sudo)
    assert "sudo: 1 incorrect password attempt" in refused_sudo.output, explain(h, refused_sudo)
    assert refused_sudo.status == 1 and not refused_sudo.said("root"), explain(h, refused_sudo)
    off = ssh(h, "off", "v4", user, command=sudo, tty=True,
              codes=(user.code, lambda: user.code(30)))
    assert off.prompts == ["password", "code", "password", "code"], explain(h, off)
    assert off.status == 0 and off.said("root"), explain(h, off)
    campus = ssh(h, "campus", "v4", user, command=sudo, tty=True)
    assert campus.prompts == ["password", "password"], explain(h, campus)
    assert campus.status == 0 and campus.said("root"), explain(h, campus)
    sudo_lines = [line for line in audits(h, user, 6) if line["service"] == "sudo"]
    assert [(line["outcome"], line["source"]) for line in sudo_lines] == [
        ("failure", CLIENT["off", "v4"]), ("success", CLIENT["off", "v4"]),
        ("success", CLIENT["campus", "v4"])]
    assert re.fullmatch(rf"off-campus source {CLIENT['off', 'v4']} \(utmp record of {PTS}\); "
                        "2-step verification is on; code accepted", sudo_lines[1]["reason"])
    assert re.fullmatch(rf"campus source {CLIENT['campus', 'v4']} \(utmp record of {PTS}\) "
                        rf"matched {CAMPUS[0]}", sudo_lines[2]["reason"])


# A user's own record for a pty they opened, written through libutempter's setgid-utmp
# helper, with any host: su on that pty must not believe it.
FORGE = """\
import ctypes, os, sys
import pexpect

victim, host = sys.argv[1], sys.argv[2]
child = pexpect.spawn("su", ["-", victim, "-c", "echo su-ok"], encoding="utf-8", timeout=20)
added = ctypes.CDLL("libutempter.so.0").utempter_add_record(child.child_fd, host.encode())
libc = ctypes.CDLL(None)
libc.ptsname.restype = ctypes.c_char_p
print("FORGED", added, os.getpid(), libc.ptsname(child.child_fd).decode(), flush=True)
child.expect("Password: ")
child.sendline(input("Password: "))
asked = child.expect(["Verification code: ", "su-ok"])
print("\\nRESULT", ["code asked", "no code asked"][asked], flush=True)
child.sendeof()
child.expect(pexpect.EOF)
"""


@pytest.mark.parametrize("host", ["", "192.0.2.9"], ids=["local", "campus"])
def test_7_a_users_own_utmp_record_changes_nothing(h: Harness, make_user, host: str) -> None:
    """From an off-campus session, a pty of the caller's own with a record that says
    "console" or "campus", written by the caller's process through libutempter: the record
    is not tied to a root process, so su on that pty is off campus."""
    caller, victim = make_user(), make_user()
    script = h.dir / "forge.py"
    script.write_text(FORGE)
    records: list = []

    def password_once_the_record_is_there() -> str:  # asked while su waits for it
        records.extend(read_utmp())
        return victim.password

    login = ssh(h, "off", "v4", caller, command=f"python3 {script} {victim.name} '{host}'",
                passwords=(caller.password, password_once_the_record_is_there),
                codes=(earlier_code(caller),))
    forged = re.search(r"^FORGED 1 (\d+) /dev/(pts/\d+)\r?$", login.output, re.M)
    assert forged, explain(h, login)
    assert [(r.line, r.host) for r in records if r.pid == int(forged[1])
            and r.type == USER_PROCESS] == [(forged[2], host)], records
    assert login.said("RESULT code asked"), explain(h, login)
    audit = one_audit(h, victim, service="su-l")
    assert (audit["outcome"], audit["source"]) == ("failure", "none")
    assert audit["reason"] == (f"off-campus source none (no utmp record of {forged[2]} tied "
                               "to the caller); 2-step verification is on; no code entered")


# -- 8. the fallback: no authd, the module decides in the login process -------------------

def test_8_the_login_story_without_an_authd(h: Harness, make_user) -> None:
    """``authd=off`` on every PAM line, as when no authd answers: the same answers, and
    every audit line from sshd's or su's own process (LDAP through the relay)."""
    h.set_mode(in_process=True)
    user, victim = make_user(), make_user()
    campus = ssh(h, "campus", "v4", user)
    assert campus.ok and campus.prompts == ["password"], explain(h, campus)
    wrong = ssh(h, "off", "v6", user, codes=(user.wrong_code(),) * TRIES)
    assert refused(wrong) and wrong.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, wrong)
    off = ssh(h, "off", "v4", user, command=su(victim), tty=True,
              passwords=(user.password, victim.password), codes=(user.code, victim.code))
    assert off.prompts == ["password", "code", "password", "code"], explain(h, off)
    assert off.status == 0 and off.said(SU_OK), explain(h, off)
    lines = audits(h, user, 3)
    assert [(line["outcome"], line["source"]) for line in lines] == [
        ("success", CLIENT["campus", "v4"]), ("failure", CLIENT["off", "v6"]),
        ("success", CLIENT["off", "v4"])]
    su_line = one_audit(h, victim, service="su-l")
    assert re.fullmatch(rf"off-campus source {CLIENT['off', 'v4']} \(utmp record of {PTS}\); "
                        "2-step verification is on; code accepted", su_line["reason"]), su_line


# -- 9. one replay guard for ssh and the site ----------------------------------------------

@pytest.fixture(scope="module")
def site(harness: Harness) -> Iterator[sitelab.Site]:
    """The enrollment site as deployed (nginx's example site with TLS, gunicorn with the
    unit's flags) in this harness's server namespace, on the same slapd as sshd's logins."""
    with sitelab.deployed(harness.net, Path(harness.ldap.config_path).read_text(),
                          CAMPUS) as deployed:
        yield deployed


def test_9_a_code_counts_once_for_ssh_and_the_site(h: Harness, make_user,
                                                  site: sitelab.Site) -> None:
    """The real sshd and the real site (through nginx, from the off-campus namespace) share
    one replay guard: a code used over ssh is refused on the site, and the next code, used
    on the site, is refused over ssh."""
    user = make_user()
    web = weblab.Client(h.net.clients["off"], sitelab.HOST, SERVER_OFF_V4, site.tls.ca)
    code = user.code()
    over_ssh = ssh(h, "off", "v4", user, codes=(code,))
    assert over_ssh.ok and over_ssh.prompts == ["password", "code"], explain(h, over_ssh)
    signed_in = web.post_form("/login", {"username": user.name, "password": user.password})
    assert signed_in.status == 302 and signed_in.location.startswith("/verify")
    same = web.post_form("/verify", {"code": code})
    assert same.status == 200 and MISMATCH_MESSAGE in same.body
    site.audit_line(f"user={user.name} service=campus-mfa-enroll source={CLIENT['off', 'v4']} "
                    'outcome=failure reason="off-campus sign-in: code refused (replayed)"')
    later = user.code(30)  # the next time step, inside the window
    assert web.post_form("/verify", {"code": later}).status == 302
    site.audit_line(f"user={user.name} service=campus-mfa-enroll source={CLIENT['off', 'v4']} "
                    'outcome=success reason="off-campus sign-in: code accepted"')
    again = ssh(h, "off", "v6", user, codes=(later,) * TRIES)
    assert refused(again) and again.output.count(MISMATCH_MESSAGE) == TRIES, explain(h, again)
    lines = audits(h, user, 2)
    assert lines[1]["outcome"] == "failure" and "replayed" in lines[1]["reason"], lines
