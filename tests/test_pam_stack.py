"""The documented PAM stacks (docs/pam.md), installed verbatim and driven
through real libpam with pam_unix as the first factor; the options, setcred and the audit line
format (issue 3, points 8, 10, 11). Each test runs in-process and through the authd."""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from devtools.pamtester import AUTH_ERR, CODE_PROMPT, SUCCESS
from devtools.syslog import AUTHPRIV_DEBUG
from policy.messages import MISMATCH_MESSAGE
from policy.rules.totp import TotpParams
from support.pamlab import CAMPUS_ADDRESS, MODULE, OFF_CAMPUS, ROOT, Enrolled, PamLab
from support.utmp import USER_PROCESS

DOC = ROOT / "docs" / "pam.md"
INSTALLED = "/usr/share/campus-mfa/pam_module/pam_campus_mfa.py"
PASSWORD_PROMPT = "Password: "


@pytest.fixture
def pam(pam_both: PamLab) -> PamLab:
    return pam_both


FAILED = AUTH_ERR + "\n"


def documented_stacks() -> dict[str, str]:
    """The fenced blocks of docs/pam.md that start with a '# /etc/pam.d/...' line."""
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"```\n(# /etc/pam\.d/[^\n]*)\n(.*?)```", text, re.S))


# common-auth as Debian 12 ships it, inlined: the machine's own file may be changed by
# pam-auth-update (installing libpam-campus-mfa adds this very module to it).
DEBIAN_COMMON_AUTH = ("auth  [success=1 default=ignore]  pam_unix.so nullok\n"
                      "auth  requisite  pam_deny.so\n"
                      "auth  required  pam_permit.so\n")


def install(pam: PamLab, header: str, config: str, name: str | None = None) -> str:
    """The documented stack as a service, with the checkout's module and ``config``."""
    body = documented_stacks()[header]
    assert body.count(INSTALLED) == 1
    body = re.sub(r"(?m)^@include common-auth\n", DEBIAN_COMMON_AUTH, body)
    return pam.service(stack=body.replace(INSTALLED, f"{MODULE} config={config} {pam.where}"),
                       name=name)


@pytest.fixture
def unix_user(pam: PamLab) -> Iterator[Callable[[bool], Enrolled | tuple[str, str]]]:
    """Factory: a directory user (enrolled or not) who is also a local account with the
    same password, so that pam_unix can be the first factor."""
    made: list[str] = []

    def make(enrolled: bool = True, params: TotpParams = TotpParams()):
        user = pam.enrolled(params) if enrolled else pam.user()
        uid, password = (user.uid, user.password) if enrolled else user
        subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", uid],
                       check=True, capture_output=True, timeout=30)
        made.append(uid)
        subprocess.run(["chpasswd"], input=f"{uid}:{password}\n", text=True, check=True,
                       capture_output=True, timeout=30)
        return user

    yield make
    for uid in made:
        subprocess.run(["userdel", uid], check=True, capture_output=True, timeout=30)


def test_the_documented_stacks_are_the_tested_ones():
    assert sorted(documented_stacks()) == [
        "# /etc/pam.d/sshd", "# /etc/pam.d/sshd (publickey,keyboard-interactive)",
        "# /etc/pam.d/sudo", "# /etc/pam.d/vpn"]


# -- sshd --------------------------------------------------------------------------------------

def test_sshd_keyboard_interactive_asks_password_then_code_off_campus(pam, unix_user):
    user = unix_user()
    service = install(pam, "# /etc/pam.d/sshd", pam.config())
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.password, user.code()])
    assert run.verdict == SUCCESS
    assert run.stderr == PASSWORD_PROMPT + CODE_PROMPT
    campus = pam.run(service, user.uid, CAMPUS_ADDRESS, [user.password])
    assert campus.verdict == SUCCESS and campus.stderr == PASSWORD_PROMPT
    # A wrong password ends the stack in pam_deny: no code asked, no failure counted.
    wrong = pam.run(service, user.uid, OFF_CAMPUS, ["not-the-password", user.code()])
    assert wrong.verdict == AUTH_ERR and wrong.stderr == PASSWORD_PROMPT + FAILED
    assert pam.token(user.token_dn)["failures"] == 0
    assert [line["outcome"] for line in pam.audit(2)] == ["success", "success"]


def test_sshd_publickey_stack_asks_only_the_code_off_campus(pam):
    user = pam.enrolled()
    service = install(pam, "# /etc/pam.d/sshd (publickey,keyboard-interactive)", pam.config())
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == SUCCESS and run.stderr == CODE_PROMPT
    campus = pam.run(service, user.uid, "2001:db8:c0::22")
    assert campus.verdict == SUCCESS and campus.stderr == ""


# -- su / sudo ---------------------------------------------------------------------------------

# The stack runs as sudo or su would run it: no PAM_RHOST, and PAM_TTY naming the terminal
# (pamtester on a pty of its own, -I tty=). The real sudo and su inside real ssh sessions
# are in test_ssh_e2e.py.

def test_sudo_without_a_tty_is_off_campus_and_asks_for_the_code(pam, unix_user):
    user = unix_user()
    service = install(pam, "# /etc/pam.d/sudo", pam.config())
    run = pam.run(service, user.uid, None, [user.password, user.code()])
    assert run.verdict == SUCCESS
    assert run.stderr == PASSWORD_PROMPT + CODE_PROMPT
    refused = pam.run(service, user.uid, None, [user.password])
    assert refused.verdict == AUTH_ERR
    assert [line["reason"] for line in pam.audit(2)] == [
        "off-campus source none (no tty); 2-step verification is on; code accepted",
        "off-campus source none (no tty); 2-step verification is on; no code entered"]


TTY_SESSIONS = [  # (id, host of the terminal's utmp record, asks for a code, audit source)
    ("campus-session", CAMPUS_ADDRESS, False, CAMPUS_ADDRESS),
    ("off-campus-session", OFF_CAMPUS, True, OFF_CAMPUS),
    ("console", "", False, "local"),
]


@pytest.mark.parametrize("host, asks, source", [t[1:] for t in TTY_SESSIONS],
                         ids=[t[0] for t in TTY_SESSIONS])
def test_sudo_on_a_tty_takes_the_source_of_its_session(pam, unix_user, utmp, host, asks,
                                                       source):
    """The terminal's record as sshd writes it (the client address, for a root process the
    login descends from) or, for the console, as agetty writes it (no host, the login's
    own pid)."""
    user = unix_user()
    wire = pam.tripwire()  # where the code is not needed, the directory is not contacted
    service = install(pam, "# /etc/pam.d/sudo",
                      pam.config(ldap_uri=None if asks else wire.uri))
    record = {"kind": USER_PROCESS, "record_pid": os.getpid()} if host else {}
    answers = [user.password, user.code()] if asks else [user.password]
    run = pam.run_on_tty(service, user.uid, answers, host=host, **record)
    # On a pty each answer's newline follows its prompt.
    assert run.stderr == (PASSWORD_PROMPT + "\n" + (CODE_PROMPT + "\n" if asks else "")
                          + SUCCESS + "\n")
    assert wire.connections == 0
    [line] = pam.audit()
    assert (line["source"], line["outcome"]) == (source, "success")


# -- combined ----------------------------------------------------------------------------------

def test_combined_splits_the_code_and_hands_the_password_on(pam, unix_user):
    user = unix_user()
    service = install(pam, "# /etc/pam.d/vpn", pam.config())
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.password + user.code()])
    assert run.verdict == SUCCESS
    assert run.stderr == PASSWORD_PROMPT  # one field, one prompt
    assert pam.audit()[0]["reason"] == (f"off-campus source {OFF_CAMPUS}; 2-step "
                                        "verification is on; code accepted")


def test_combined_splits_by_the_tokens_own_code_length(pam, unix_user):
    """totp.digits is for new tokens; an existing token with 8-digit codes (made before a
    change, or imported) is split by its own length."""
    user = unix_user(params=TotpParams(digits=8))
    config = pam.config(totp={"digits": 6})
    service = install(pam, "# /etc/pam.d/vpn", config)
    code = user.code()
    assert len(code) == 8
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.password + code])
    assert run.verdict == SUCCESS, run.output
    assert pam.token(user.token_dn)["last_step"] > 0


def test_combined_refuses_a_wrong_code_and_a_wrong_password(pam, unix_user):
    user = unix_user()
    service = install(pam, "# /etc/pam.d/vpn", pam.config())
    wrong_code = pam.run(service, user.uid, OFF_CAMPUS, [user.password + user.wrong_code()])
    assert wrong_code.verdict == AUTH_ERR
    assert wrong_code.stderr == PASSWORD_PROMPT + MISMATCH_MESSAGE + "\n" + FAILED
    assert pam.token(user.token_dn)["failures"] == 1
    # A right code with a wrong password: pam_unix checked what was left after the code.
    wrong_password = pam.run(service, user.uid, OFF_CAMPUS, ["wrong-pass" + user.code()])
    assert wrong_password.verdict == AUTH_ERR
    assert wrong_password.stderr == PASSWORD_PROMPT + FAILED
    assert [line["outcome"] for line in pam.audit(2)] == ["failure", "success"]


def test_combined_leaves_the_password_alone_when_no_code_is_needed(pam, unix_user):
    user = unix_user()
    plain = unix_user(False)
    service = install(pam, "# /etc/pam.d/vpn", pam.config())
    assert pam.run(service, user.uid, CAMPUS_ADDRESS, [user.password]).verdict == SUCCESS
    assert pam.run(service, plain[0], OFF_CAMPUS, [plain[1]]).verdict == SUCCESS
    # On campus nothing is split off: password+code is not the password.
    run = pam.run(service, user.uid, CAMPUS_ADDRESS, [user.password + user.code()])
    assert run.verdict == AUTH_ERR
    assert pam.token(user.token_dn)["last_step"] == 0


def test_combined_uses_a_password_an_earlier_module_already_read(pam, unix_user):
    user = unix_user()
    stack = documented_stacks()["# /etc/pam.d/vpn"].replace(
        INSTALLED, f"{MODULE} config={pam.config()} {pam.where}")
    # pam_unix first (optional) reads the field, fails on password+code, keeps PAM_AUTHTOK.
    service = pam.service(stack="auth optional pam_unix.so\n" + stack)
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.password + user.code()])
    assert run.verdict == SUCCESS
    assert run.stderr == PASSWORD_PROMPT  # asked once, by pam_unix; campus-mfa did not ask


# -- setcred, audit format, debug ------------------------------------------------------------

def test_setcred_succeeds(pam):
    service = pam.service()
    run = pam.run(service, "anyone", OFF_CAMPUS, operation="setcred")
    assert run.verdict == "pamtester: credential info has successfully been set."
    assert pam.syslog.lines == []


AUDIT_LINE = re.compile(r"<8[46]>campus-mfa\[[0-9]+\]: user=\S+ service=\S+ source=\S+ "
                        r"outcome=(success|failure|unavailable) reason=(\S+|\"[^\"]*\")")


def test_one_audit_line_per_decision_in_the_syslog_format(pam):
    user = pam.enrolled()
    service = pam.service("tries=1")
    runs = [pam.run(service, user.uid, CAMPUS_ADDRESS),
            pam.run(service, user.uid, OFF_CAMPUS, [user.wrong_code()]),
            pam.run(service, user.uid, OFF_CAMPUS, [user.code()]),
            pam.run(service, "nobody-" + user.uid, OFF_CAMPUS)]
    assert [run.verdict for run in runs] == [SUCCESS, AUTH_ERR, SUCCESS, AUTH_ERR]
    lines = pam.syslog.wait_for(4)
    assert len(lines) == 4
    assert all(AUDIT_LINE.fullmatch(line) for line in lines), lines
    assert [line[:4] for line in lines] == ["<86>", "<84>", "<86>", "<84>"]  # authpriv


def test_debug_option_adds_debug_lines_without_values(pam):
    pam.in_process_lines = True  # with debug the module does the work itself, authd or not
    user = pam.enrolled()
    quiet = pam.service()
    loud = pam.service("debug")
    earlier = user.code(time.time() - 30)  # so that the next code is of a later step
    assert pam.run(quiet, user.uid, OFF_CAMPUS, [earlier]).verdict == SUCCESS
    assert len(pam.syslog.wait_for(1)) == 1
    assert pam.run(loud, user.uid, OFF_CAMPUS, [user.code()]).verdict == SUCCESS
    lines = pam.syslog.wait_for(4)
    debug = [line for line in lines if line.startswith(AUTHPRIV_DEBUG)]
    assert len(lines) == 4 and len(debug) == 2
    assert re.fullmatch(r"<87>campus-mfa\[[0-9]+\]: debug: Options\(config='[^']+', tries=3, "
                        r"combined=False, debug=True, syslog_socket='/dev/log', "
                        rf"authd='{pam.where[len('authd='):]}', problem=''\); "
                        rf"user={user.uid} service={loud} rhost={OFF_CAMPUS}", debug[0])
    assert re.fullmatch(r"<87>campus-mfa\[[0-9]+\]: debug: outcome success: PAM code 0",
                        debug[1])
