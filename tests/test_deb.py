"""The Debian packages as a sysadmin meets them: `make deb`, lintian, `apt-get install`, logins
through the INSTALLED PAM module, the pam-auth-update profile, the site and the authd under
their units' command lines, and `apt-get purge`.

These tests change the machine (packages, /etc/campus-mfa, /etc/pam.d, a system user, the
authd unit's enablement). The module's ``machine`` fixture refuses a machine where the
packages or their files already exist, and at the end purges, removes what the tests wrote
and restores pam-auth-update's files, on failure too.
"""
from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import secrets
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomllib

from devtools import devldap
from devtools.codes import wrong_code
from devtools.oathtool import oathtool
from devtools.pamtester import AUTH_ERR, CODE_PROMPT, SUCCESS, PamRun, run_pamtester
from devtools.syslog import SyslogListener, audit_pid
from devtools.toml import dump_toml
from policy.messages import MISMATCH_MESSAGE
from policy.rules.totp import from_base32
from support.weblab import UnixHTTPConnection

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PACKAGES = ("campus-mfa-common", "libpam-campus-mfa", "campus-mfa-enroll")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "DEBIAN_FRONTEND": "noninteractive"}

ETC = Path("/etc/campus-mfa")
CONFFILE = ETC / "campus-mfa.toml"
WEB_SECRET = ETC / "web.secret"
SHARE = Path("/usr/share/campus-mfa")
SITE_STATE = Path("/var/lib/campus-mfa-enroll")  # the site unit's StateDirectory=: sessions
PROFILE = Path("/usr/share/pam-configs/campus-mfa")
UNIT = Path("/lib/systemd/system/campus-mfa-enroll.service")
AUTHD_UNIT = Path("/lib/systemd/system/campus-mfa-authd.service")
AUTHD_LAUNCHER = Path("/usr/libexec/campus-mfa/campus-mfa-authd")
AUTHD_RUNTIME = Path("/run/campus-mfa")
# What deb-systemd-helper enable makes (the unit's WantedBy=) and where it records it.
WANTS = Path("/etc/systemd/system/multi-user.target.wants")
DSH_STATE = Path("/var/lib/systemd/deb-systemd-helper-enabled")
SYSTEM_USER = "campus-mfa"
COMMON_AUTH = Path("/etc/pam.d/common-auth")
PAM_STATE = Path("/var/lib/pam")
# pam-auth-update rewrites these and records what it wrote in /var/lib/pam.
PAM_MANAGED = tuple(Path("/etc/pam.d", name) for name in
                    ("common-auth", "common-account", "common-password", "common-session",
                     "common-session-noninteractive"))
SERVICE = "campus-mfa-debtest"          # the installed module after pam_permit
SERVICE_COMMON = "campus-mfa-debtest-common"  # @include common-auth: pam_unix, then the module
MODULE_NAME = "pam_campus_mfa.py"

CAMPUS = "127.0.0.1"                    # inside the slapd fixture's campus networks
OFF_CAMPUS = "203.0.113.7"
# Wait for another apt/dpkg run (a concurrent `make deps-test`) instead of failing at once.
APT_GET = ("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300")


def run(*args: str, input: str | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a fixed environment; on failure say what it printed."""
    done = subprocess.run(args, input=input, capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
    return done


def package_status(package: str) -> str:
    """dpkg's status word ('installed', 'config-files', ...) or 'not-installed'."""
    done = run("dpkg-query", "-W", "-f=${db:Status-Status}", package, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() \
        else "not-installed"


def account_exists(name: str) -> tuple[bool, bool]:
    """(user exists, group exists)."""
    def has(database: Any) -> bool:
        try:
            database(name)
        except KeyError:
            return False
        return True
    return has(pwd.getpwnam), has(grp.getgrnam)


def module_lines(path: Path = COMMON_AUTH) -> list[str]:
    """The lines of a PAM file that load the campus-mfa module."""
    return [line for line in path.read_text().splitlines() if MODULE_NAME in line]


def profile_auth_line() -> str:
    """The control and module of the installed profile's Auth: block, as one PAM line."""
    text = PROFILE.read_text()
    block = re.search(r"^Auth:\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE)
    assert block, text
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def pamtester(service: str, user: str, rhost: str, answers: tuple[str, ...] = ()) -> PamRun:
    return run_pamtester(service, user, rhost, list(answers), timeout=60)


def write_secret_file(path: Path, text: str) -> None:
    """A bind password file as docs/install-debian.md says: 0640 root:campus-mfa."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.chown(path, 0, grp.getgrnam(SYSTEM_USER).gr_gid)
    os.chmod(path, 0o640)


def systemd_leftovers() -> list[Path]:
    """The packages' units as systemd and deb-systemd-helper know them: enablement symlinks
    and the state that postrm purge removes."""
    found = []
    for unit in ("campus-mfa-authd.service", "campus-mfa-enroll.service"):
        found += [WANTS / unit, DSH_STATE / f"{unit}.dsh-also", DSH_STATE / WANTS.name / unit,
                  Path("/var/lib/systemd/deb-systemd-helper-masked", unit)]
    return [path for path in found if path.exists() or path.is_symlink()]


# -- fixtures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Debs:
    debs: dict[str, Path]   # package name -> .deb
    changes: Path


@pytest.fixture(scope="module")
def debs() -> Debs:
    """`make deb` (a clean copy of the tree, packaging/debian as debian/) and what it left."""
    done = subprocess.run(["make", "-C", str(ROOT), "deb"], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, f"make deb failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    found = {path.name.split("_")[0]: path for path in DIST.glob("*.deb")}
    changes = sorted(DIST.glob("campus-mfa_*.changes"))
    assert sorted(found) == sorted(PACKAGES), found
    assert len(changes) == 1 and len(list(DIST.glob("campus-mfa_*.buildinfo"))) == 1
    return Debs(found, changes[0])


@pytest.fixture(scope="module")
def machine() -> Iterator[None]:
    """Check the machine is clean, then always purge and restore it afterwards."""
    dirty = [p for p in PACKAGES if package_status(p) != "not-installed"]
    dirty += [str(p) for p in (ETC, SHARE, SITE_STATE, PROFILE, Path("/etc/pam.d", SERVICE),
                               Path("/etc/pam.d", SERVICE_COMMON), AUTHD_RUNTIME,
                               AUTHD_LAUNCHER.parent, *systemd_leftovers())
              if p.exists() or p.is_symlink()]
    dirty += [f"user/group {SYSTEM_USER}"] if any(account_exists(SYSTEM_USER)) else []
    if dirty:
        pytest.fail("this test installs and purges campus-mfa; the machine already has: "
                    + ", ".join(dirty) + " (apt-get purge " + " ".join(PACKAGES) + ")")
    saved = {path: path.read_bytes() for path in PAM_MANAGED if path.exists()}
    saved_state = {path: path.read_bytes() for path in PAM_STATE.iterdir() if path.is_file()}
    try:
        yield
    finally:
        if PROFILE.exists():
            run("pam-auth-update", "--disable", "campus-mfa", check=False)
        # apt-get cannot even name a package that is neither installed nor in its lists.
        present = [p for p in PACKAGES if package_status(p) != "not-installed"]
        purge = run(*APT_GET, "purge", *present, check=False, timeout=600)
        for name in (SERVICE, SERVICE_COMMON):
            Path("/etc/pam.d", name).unlink(missing_ok=True)
        purged = purge.returncode == 0 and all(package_status(p) == "not-installed"
                                               for p in PACKAGES)
        if purged:  # what the tests wrote there (never an installed package's conffile)
            run("rm", "-rf", str(ETC), "/run/campus-mfa-enroll", str(SITE_STATE),
                str(AUTHD_RUNTIME), check=False)
        restored = [str(p) for p, data in saved.items() if p.read_bytes() != data]
        if restored:  # put back both the files and pam-auth-update's record of them
            for path, data in saved.items():
                path.write_bytes(data)
            for path, data in saved_state.items():
                path.write_bytes(data)
        leftovers = module_lines()
        assert not restored and not leftovers, \
            f"purge left PAM changed: {restored} {leftovers} (restored from the snapshot)"
        assert purged, f"the final purge failed; run apt-get purge {' '.join(PACKAGES)}:\n" \
            f"{purge.stdout}{purge.stderr}"


@pytest.fixture
def installed(machine: None, debs: Debs) -> Debs:
    """The three packages installed with apt-get from dist/ (again, if a test purged them)."""
    if any(package_status(p) != "installed" for p in PACKAGES):
        run(*APT_GET, "install", *(str(debs.debs[p]) for p in PACKAGES), timeout=900)
    return debs


@pytest.fixture
def configured(installed: Debs, slapd: devldap.DevLdap, tmp_path: Path) -> Path:
    """/etc/campus-mfa/campus-mfa.toml pointing at the slapd fixture, as an admin writes
    it: bind password files in /etc/campus-mfa (0640 root:campus-mfa), the key the package
    generated, audit lines to a socket this test reads. Returns that socket's path."""
    with open(slapd.config_path, "rb") as handle:
        data = tomllib.load(handle)
    write_secret_file(ETC / "ldap.secret", slapd.secret("ldap.secret"))
    write_secret_file(ETC / "ldap-write.secret", slapd.secret("ldap-write.secret"))
    data["ldap"]["bind_password_file"] = str(ETC / "ldap.secret")
    data["ldap"]["write_bind_password_file"] = str(ETC / "ldap-write.secret")
    data["web"]["secret_key_file"] = str(WEB_SECRET)
    del data["web"]["session_dir"]  # the default, in the unit's StateDirectory=
    audit_socket = tmp_path / "syslog.sock"
    data["audit"]["syslog_socket"] = str(audit_socket)
    CONFFILE.write_text("# Written by tests/test_deb.py\n" + dump_toml(data))
    return audit_socket


@pytest.fixture
def enrolled(configured: Path, slapd: devldap.DevLdap) -> tuple[str, str, str]:
    """A new directory user with a token imported by the INSTALLED admin command:
    (uid, password, base32 secret)."""
    uid, password = "d" + secrets.token_hex(5), secrets.token_urlsafe(12)
    devldap.add_user(slapd, uid, password)
    secret = base64.b32encode(secrets.token_bytes(20)).decode("ascii")
    run("/usr/sbin/campus-mfa", "grant-role", uid)
    run("/usr/sbin/campus-mfa", "import", uid, "--secret", "-", input=secret + "\n")
    return uid, password, secret


@pytest.fixture
def audit_lines(configured: Path) -> Iterator[SyslogListener]:
    """What the module writes to the configured audit socket."""
    listener = SyslogListener(str(configured))
    try:
        yield listener
    finally:
        listener.close()


# -- 1, 2: build and lintian ---------------------------------------------------------------

def deb_files(deb: Path) -> set[str]:
    names = run("dpkg-deb", "-c", str(deb)).stdout.splitlines()
    return {line.split(None, 5)[5].removeprefix(".").split(" -> ")[0] for line in names}


def test_make_deb_builds_the_three_packages_with_their_files(debs: Debs) -> None:
    common = deb_files(debs.debs["campus-mfa-common"])
    pam = deb_files(debs.debs["libpam-campus-mfa"])
    enroll = deb_files(debs.debs["campus-mfa-enroll"])
    assert {"/usr/sbin/campus-mfa", "/usr/share/man/man8/campus-mfa.8.gz",
            "/etc/campus-mfa/campus-mfa.toml", "/usr/share/campus-mfa/policy/admin/cli.py",
            "/usr/share/campus-mfa/ldap/acl.ldif", "/usr/share/campus-mfa/ldap/otp-module.ldif",
            "/usr/share/campus-mfa/ldap/example-tree.ldif"} <= common
    # Developer tools stay in the checkout.
    assert not [f for f in common | pam | enroll if "devtools" in f or "devldap" in f]
    assert {"/usr/share/campus-mfa/pam_module/pam_campus_mfa.py",
            "/usr/share/pam-configs/campus-mfa", str(AUTHD_UNIT), str(AUTHD_LAUNCHER)} <= pam
    # The authd's code is the policy package of campus-mfa-common.
    assert {"/usr/share/campus-mfa/policy/authd/server.py",
            "/usr/share/campus-mfa/policy/authd/client.py"} <= common
    assert not [f for f in pam if "/policy/" in f]
    assert {"/usr/share/campus-mfa/enroll_web/__init__.py",
            "/usr/share/campus-mfa/enroll_web/templates/login.html",
            "/usr/share/campus-mfa/enroll_web/static/site.css",
            "/lib/systemd/system/campus-mfa-enroll.service",
            "/usr/share/doc/campus-mfa-enroll/examples/nginx-campus-mfa-enroll.conf",
            "/usr/share/doc/campus-mfa-enroll/examples/campus-mfa-gate.conf"} <= enroll
    # Nothing lands in dist-packages, and no ldap.secret or web.secret is shipped.
    for files in (common, pam, enroll):
        assert not [f for f in files if "dist-packages" in f or f.endswith(".secret")]
    conffiles = run("dpkg-deb", "-I", str(debs.debs["campus-mfa-common"]), "conffiles").stdout
    assert conffiles.split() == ["/etc/campus-mfa/campus-mfa.toml"]


def test_packages_depend_on_what_they_run(debs: Debs) -> None:
    def depends(package: str) -> set[str]:
        field = run("dpkg-deb", "-f", str(debs.debs[package]), "Depends").stdout
        return {item.strip().split(" ")[0] for item in field.split(",")}
    assert {"libpam-python", "campus-mfa-common"} <= depends("libpam-campus-mfa")
    assert {"python3-flask", "python3-flaskext.wtf", "python3-flask-limiter", "python3-qrcode",
            "python3-flask-session", "python3-cachelib", "gunicorn", "campus-mfa-common",
            "adduser"} <= depends("campus-mfa-enroll")
    assert {"python3-ldap3", "python3-netaddr", "python3-pyotp"} <= depends("campus-mfa-common")


def test_lintian_reports_no_errors_warnings_or_info(debs: Debs) -> None:
    done = run("lintian", "--fail-on", "error,warning,info,pedantic", "--display-info",
               "--pedantic", str(debs.changes), check=False, timeout=600)
    # Errors, warnings, info, pedantic, experimental (overridden tags are not shown).
    tags = [line for line in done.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert done.returncode == 0 and not tags, done.stdout + done.stderr


def test_every_lintian_override_gives_its_reason() -> None:
    for path in (ROOT / "packaging" / "debian").glob("*.lintian-overrides"):
        previous = ""
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                assert previous.startswith("# ") and len(previous) > 10, (path.name, line)
            previous = line


# -- 3: install, PAM through the installed module, the profile ------------------------------

def test_installing_changes_no_pam_configuration(installed: Debs) -> None:
    assert [package_status(p) for p in PACKAGES] == ["installed"] * 3
    assert PROFILE.is_file()
    assert module_lines() == []  # Default: no
    secret = WEB_SECRET.stat()
    assert (stat.S_IMODE(secret.st_mode), pwd.getpwuid(secret.st_uid).pw_name,
            grp.getgrgid(secret.st_gid).gr_name) == (0o640, SYSTEM_USER, SYSTEM_USER)
    assert pwd.getpwnam(SYSTEM_USER).pw_shell == "/usr/sbin/nologin"


def test_shipped_conffile_fails_closed_until_edited(installed: Debs, tmp_path: Path) -> None:
    """The file as the package ships it (other tests replace the installed copy)."""
    run("dpkg-deb", "-x", str(installed.debs["campus-mfa-common"]), str(tmp_path))
    shipped = tmp_path / CONFFILE.relative_to("/")
    done = run("/usr/sbin/campus-mfa", "--config", str(shipped), "check", "alice",
               "--from", OFF_CAMPUS, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "policy.campus_networks must list at least one network" in done.stderr


def test_installed_module_campus_no_prompt_off_campus_needs_the_code(
        enrolled: tuple[str, str, str], audit_lines: SyslogListener) -> None:
    uid, _, secret = enrolled
    Path("/etc/pam.d", SERVICE).write_text(
        "# tests/test_deb.py: the installed module, after a first factor that always passes\n"
        "auth requisite pam_permit.so\n"
        f"auth {profile_auth_line()}\n"
        "account required pam_permit.so\n")
    assert f"{SHARE}/pam_module/{MODULE_NAME}" in profile_auth_line()
    try:
        campus = pamtester(SERVICE, uid, CAMPUS)
        assert campus.returncode == 0 and SUCCESS in campus.output, campus
        assert CODE_PROMPT not in campus.output

        code = oathtool(secret)
        right = pamtester(SERVICE, uid, OFF_CAMPUS, (code,))
        assert right.returncode == 0 and SUCCESS in right.output, right
        assert right.output.count(CODE_PROMPT) == 1

        bad_code = wrong_code(from_base32(secret))
        wrong = pamtester(SERVICE, uid, OFF_CAMPUS, (bad_code,))
        assert wrong.returncode != 0 and AUTH_ERR in wrong.output, wrong
        assert MISMATCH_MESSAGE in wrong.output

        assert len(audit_lines.about(uid, 3)) >= 3, audit_lines.lines
        assert not [line for line in audit_lines.lines if code in line or bad_code in line or
                    secret in line]
    finally:
        Path("/etc/pam.d", SERVICE).unlink(missing_ok=True)


def common_auth_module_line() -> tuple[str, list[str]]:
    """(the module's control, every auth line of common-auth) after --enable."""
    lines = [line.split(None, 1)[1] for line in COMMON_AUTH.read_text().splitlines()
             if line.startswith("auth")]
    ours = [line for line in lines if MODULE_NAME in line]
    assert len(ours) == 1, lines
    control = ours[0].split("pam_python.so")[0].strip()
    return control, lines


def test_profile_enable_puts_a_required_line_after_the_password_and_disable_removes_it(
        enrolled: tuple[str, str, str]) -> None:
    """After --enable a login through common-auth needs the password and then, off campus,
    the code: pam_unix first (Primary), the module in the Additional block."""
    uid, _, secret = enrolled
    password = secrets.token_urlsafe(12)
    run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", uid)
    try:
        run("chpasswd", input=f"{uid}:{password}\n")
        Path("/etc/pam.d", SERVICE_COMMON).write_text(
            "# tests/test_deb.py: the system's common-auth\n@include common-auth\n"
            "account required pam_permit.so\n")
        run("pam-auth-update", "--enable", "campus-mfa")
        control, lines = common_auth_module_line()
        assert control == "required"
        assert "sufficient" not in control and "success=end" not in control
        unix = next(i for i, line in enumerate(lines) if "pam_unix.so" in line)
        deny = next(i for i, line in enumerate(lines) if "pam_deny.so" in line)
        ours = next(i for i, line in enumerate(lines) if MODULE_NAME in line)
        assert unix < deny < ours  # a wrong password ends at pam_deny before the module runs
        text = COMMON_AUTH.read_text()
        assert text.index('(the "Additional" block)') < text.index(MODULE_NAME)

        wrong_password = pamtester(SERVICE_COMMON, uid, OFF_CAMPUS, ("not-" + password,))
        assert wrong_password.returncode != 0 and AUTH_ERR in wrong_password.output, wrong_password
        assert CODE_PROMPT not in wrong_password.output
        password_only = pamtester(SERVICE_COMMON, uid, OFF_CAMPUS, (password,))
        assert password_only.returncode != 0 and AUTH_ERR in password_only.output, password_only
        assert CODE_PROMPT in password_only.output
        campus = pamtester(SERVICE_COMMON, uid, CAMPUS, (password,))
        assert campus.returncode == 0 and SUCCESS in campus.output, campus
        assert CODE_PROMPT not in campus.output
        off_campus = pamtester(SERVICE_COMMON, uid, OFF_CAMPUS, (password, oathtool(secret)))
        assert off_campus.returncode == 0 and SUCCESS in off_campus.output, off_campus
    finally:
        run("pam-auth-update", "--disable", "campus-mfa", check=False)
        Path("/etc/pam.d", SERVICE_COMMON).unlink(missing_ok=True)
        run("userdel", uid, check=False)
    assert module_lines() == []


# -- 4: the site under its unit's command line -----------------------------------------------

def unit_settings(unit: Path = UNIT) -> dict[str, str]:
    settings = {}
    for line in unit.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


def assert_exposure_at_most(unit: Path, level: float) -> None:
    """systemd-analyze's offline security score of the installed unit (0 best, 10 worst)."""
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                           f"--threshold={round(level * 10)}", str(unit)],
                          capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert score and float(score[1]) <= level and done.returncode == 0, done.stdout[-2000:]


def test_site_runs_under_its_units_command_line_and_serves_the_login_page(
        configured: Path) -> None:
    run("systemd-analyze", "verify", "--man=no", str(UNIT))  # syntax, directives, ExecStart
    # The sandbox cannot run here (no systemd as PID 1); its strength is scored offline:
    # "OK" (at most 2.0 of 10) for a site that runs as a user without privileges.
    assert_exposure_at_most(UNIT, 2.0)
    unit = unit_settings()
    argv = shlex.split(unit["ExecStart"])
    bind = argv[argv.index("--bind") + 1]
    assert bind.startswith("unix:/run/") and unit["RuntimeDirectory"] in bind
    sock_path = Path(bind.removeprefix("unix:"))
    user, group = unit["User"], unit["Group"]
    assert user == SYSTEM_USER
    # What systemd does before ExecStart: the runtime and state directories, the identity.
    runtime = Path("/run", unit["RuntimeDirectory"])
    runtime.mkdir(mode=int(unit["RuntimeDirectoryMode"], 8))
    os.chown(runtime, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    state = Path("/var/lib", unit["StateDirectory"])
    assert state == SITE_STATE
    state.mkdir(mode=int(unit["StateDirectoryMode"], 8))
    os.chown(state, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    log = open(runtime.parent / "campus-mfa-enroll-debtest.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={user}", f"--regid={group}",
         f"--groups={unit['SupplementaryGroups']}", "--", *argv],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=ENV,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not sock_path.is_socket() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock_path.is_socket(), _log_tail(log)
        conn = UnixHTTPConnection(str(sock_path))
        try:
            conn.request("GET", "/login")
            response = conn.getresponse()
            body = response.read().decode("utf-8")
        finally:
            conn.close()
        assert response.status == 200, (response.status, body[:500], _log_tail(log))
        assert "Log in with your CIS account" in body and 'name="password"' in body
        conn = UnixHTTPConnection(str(sock_path))
        try:  # the gate's answer to nginx for a request without a session
            conn.request("GET", "/auth", headers={"X-Original-URL": "https://f.example/"})
            gate = conn.getresponse()
            gate.read()
        finally:
            conn.close()
        assert gate.status == 401 and "/login" in gate.getheader("Location", "")
        # The form's CSRF token made a session: a 0600 file of the site's user (beside
        # cachelib's count file) in the default web.session_dir, in the StateDirectory.
        files = list((state / "sessions").iterdir())
        assert len(files) == 2, files
        assert {(stat.S_IMODE(p.stat().st_mode), p.owner()) for p in files} == {(0o600, user)}
        # Only the proxy's group can connect: the site believes its X-Forwarded-For.
        info = sock_path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert grp.getgrgid(info.st_gid).gr_name == group
        stranger = run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                       "/usr/bin/python3", "-c",
                       "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                       "s.connect(sys.argv[1])", str(sock_path), check=False)
        assert "PermissionError" in stranger.stderr, stranger
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # gunicorn's master and its worker
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)
        run("rm", "-rf", str(runtime), str(state), check=False)


def _log_tail(log: Any) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


# -- 4b: the authd under its unit's command line -------------------------------------------

def installed_authd_socket() -> str:
    """The module's default authd= (policy.defaults.AUTHD_SOCKET) as the installed code has it."""
    return run("/usr/bin/python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
               "from policy.defaults import AUTHD_SOCKET; print(AUTHD_SOCKET)", str(SHARE)).stdout.strip()


def test_authd_unit_is_installed_enabled_and_runs_at_the_modules_default_socket(
        installed: Debs) -> None:
    run("systemd-analyze", "verify", "--man=no", str(AUTHD_UNIT))
    assert_exposure_at_most(AUTHD_UNIT, 3.0)  # root, with only CAP_DAC_READ_SEARCH left
    unit = unit_settings(AUTHD_UNIT)
    argv = shlex.split(unit["ExecStart"])
    assert argv[0] == str(AUTHD_LAUNCHER) and os.access(AUTHD_LAUNCHER, os.X_OK)
    assert argv[1:] == ["--socket", installed_authd_socket()]
    assert argv[2] == f"/run/{unit['RuntimeDirectory']}/authd.sock" \
        == str(AUTHD_RUNTIME / "authd.sock")
    assert unit["RuntimeDirectoryMode"] == "0700"  # root only: others fail fast, work alone
    assert unit["Restart"] == "on-failure" and "User" not in unit  # root, like the module
    assert unit["WantedBy"] == "multi-user.target"
    # The nslcd way: enabled on installation. The site waits for the admin.
    link = WANTS / AUTHD_UNIT.name
    assert link.is_symlink() and link.resolve() == AUTHD_UNIT.resolve(), link
    assert not (WANTS / UNIT.name).exists() and not (WANTS / UNIT.name).is_symlink()
    enabled = run("systemctl", "is-enabled", AUTHD_UNIT.name, UNIT.name, check=False)
    assert enabled.stdout.split() == ["enabled", "disabled"], enabled
    # No systemd here (and policy-rc.d says no): installing started nothing and did not fail.
    assert not AUTHD_RUNTIME.exists()


def capability_bits(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)


def test_authd_under_its_units_command_line_serves_the_installed_module_and_stops_on_term(
        enrolled: tuple[str, str, str], audit_lines: SyslogListener) -> None:
    """The unit's ExecStart with its socket in a fresh 0700 directory (what RuntimeDirectory=
    makes), under the unit's NoNewPrivileges= and CapabilityBoundingSet=; a pamtester login
    through the INSTALLED module with authd= that socket is the authd's work: its audit
    lines carry the authd's pid."""
    uid, _, secret = enrolled
    unit = unit_settings(AUTHD_UNIT)
    argv = shlex.split(unit["ExecStart"])
    runtime = Path(tempfile.mkdtemp(prefix="campus-mfa-debtest.", dir="/run"))  # 0700
    sock_path = runtime / "authd.sock"
    argv[argv.index("--socket") + 1] = str(sock_path)
    assert unit["NoNewPrivileges"] == "yes"
    caps = unit["CapabilityBoundingSet"].split()
    bounding = ",".join(["-all"] + ["+" + cap.lower().removeprefix("cap_") for cap in caps])
    log = open(runtime / "authd.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(["setpriv", "--no-new-privs", f"--bounding-set={bounding}",
                             "--inh-caps=-all", "--", *argv],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=ENV)
    service = Path("/etc/pam.d", SERVICE)
    try:
        deadline = time.monotonic() + 20
        while not sock_path.is_socket() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock_path.is_socket(), _log_tail(log)
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
        # setpriv exec'd the launcher (same pid), which keeps only the unit's capabilities.
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path("/usr/bin/python3").resolve()
        assert capability_bits(proc.pid) == 1 << 2  # CAP_DAC_READ_SEARCH only
        assert caps == ["CAP_DAC_READ_SEARCH"]

        base = f"auth {profile_auth_line()}"
        service.write_text(
            "# tests/test_deb.py: the installed module and the authd by hand\n"
            "auth requisite pam_permit.so\n"
            f"{base} authd={sock_path}\n"
            "account required pam_permit.so\n")
        right = pamtester(SERVICE, uid, OFF_CAMPUS, (oathtool(secret),))
        assert right.returncode == 0 and SUCCESS in right.output, (right, _log_tail(log))
        assert right.output.count(CODE_PROMPT) == 1
        wrong = pamtester(SERVICE, uid, OFF_CAMPUS, (wrong_code(from_base32(secret)),))
        assert wrong.returncode != 0 and AUTH_ERR in wrong.output, wrong
        assert MISMATCH_MESSAGE in wrong.output  # the authd's message, relayed by the module
        authd_lines = audit_lines.about(uid, 2)
        assert len(authd_lines) >= 2, authd_lines
        assert all(audit_pid(line) == proc.pid for line in authd_lines), \
            (proc.pid, authd_lines)

        # The same login without the authd is written by pamtester's process instead.
        service.write_text(service.read_text().replace(f"authd={sock_path}", "authd=off"))
        alone = pamtester(SERVICE, uid, CAMPUS)
        assert alone.returncode == 0 and SUCCESS in alone.output, alone
        alone_lines = audit_lines.about(uid, len(authd_lines) + 1)[len(authd_lines):]
        assert alone_lines and all(audit_pid(line) not in (None, proc.pid)
                                   for line in alone_lines), alone_lines

        assert proc.poll() is None, _log_tail(log)
        proc.send_signal(signal.SIGTERM)  # what systemctl stop sends
        assert proc.wait(10) == 0, _log_tail(log)
        assert not sock_path.exists() and not sock_path.is_symlink()
        assert f"listening on {sock_path}" in _log_tail(log)
    finally:
        service.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        run("rm", "-rf", str(runtime), check=False)


# -- 5: remove and purge ---------------------------------------------------------------------

def test_remove_keeps_the_changed_conffile_and_purge_removes_everything(
        installed: Debs) -> None:
    run("pam-auth-update", "--enable", "campus-mfa")
    assert len(module_lines()) == 1
    with CONFFILE.open("a") as handle:
        handle.write("# changed by the admin\n")

    run(*APT_GET, "remove", *PACKAGES, timeout=600)
    assert module_lines() == []  # prerm: pam-auth-update --remove, before the file goes
    # libpam-campus-mfa has no conffile, but its postrm forgets the authd's enablement
    # on purge only (as for every enabled unit).
    assert [package_status(p) for p in PACKAGES] == ["config-files"] * 3
    assert (WANTS / AUTHD_UNIT.name).is_symlink()
    assert account_exists(SYSTEM_USER) == (True, True)  # removed on purge only
    assert "# changed by the admin" in CONFFILE.read_text()  # kept until purge
    assert not (SHARE / "pam_module" / MODULE_NAME).exists()
    assert not AUTHD_UNIT.exists() and not AUTHD_LAUNCHER.parent.exists()

    run(*APT_GET, "purge", *PACKAGES, timeout=600)
    assert [package_status(p) for p in PACKAGES] == ["not-installed"] * 3
    assert module_lines() == []
    assert not PROFILE.exists() and not SHARE.exists()
    assert not AUTHD_UNIT.exists() and not UNIT.exists() and not AUTHD_LAUNCHER.parent.exists()
    assert systemd_leftovers() == []  # no enablement symlink, no deb-systemd-helper state
    assert account_exists(SYSTEM_USER) == (False, False)
    # The admin's bind password files are theirs to remove; the package's files are gone.
    left = sorted(p.name for p in ETC.iterdir()) if ETC.exists() else []
    assert set(left) <= {"ldap.secret", "ldap-write.secret"}, left
    assert not CONFFILE.exists() and not WEB_SECRET.exists()
