"""End to end with Debian's OpenSSH: real clients log in from a campus and an off-campus
network namespace to a real sshd whose PAM stack is pam_unix followed by campus-mfa (issue 6),
and inside those sessions run su and sudo, whose logins carry no PAM_RHOST (issue 11, 2).

As installed, the module hands each login to a running campus-mfa-authd (the session's
``authd`` fixture, in the root namespace; its LDAP is the session's slapd on loopback there),
and every audit line must carry the authd's pid. One test runs the login story with
``authd=off`` instead, the module deciding in sshd's own process (LDAP through the relay),
as it does wherever no authd answers.

The lab: support/netns.py draws the namespaces (both clients connect to the server's
campus-side addresses, 192.0.2.1 and 2001:db8:c0::1, and are told apart by theirs);
support/sshlab.py runs the two sshd (docs/pam.md's configuration on port 2222, the key-only
variant on 2223) with su's and sudo's PAM files in the first one's mount namespace, makes
the accounts, and drives the ssh client. Everything is created here and removed afterwards
(also after a crash of an earlier run); /etc/pam.d/sshd, su, sudo and /etc/sudoers of the
host are never touched.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from devtools import devldap
from devtools.authd import AuthdProcess
from policy.messages import MISMATCH_MESSAGE, SET_UP_MESSAGE, UNAVAILABLE_MESSAGE
from policy.origin import USER_PROCESS, read_utmp
from support import gatelab, sitelab, sshlab, weblab
from support.netns import CLIENT, SERVER, Lab
from support.sshlab import (CAMPUS, KEYS_PORT, KEYS_SERVICE, TRIES, Harness, User, audits, explain,
                            one_audit, refused, ssh)


@pytest.fixture(scope="module")
def harness(netlab: Lab, slapd: devldap.DevLdap, authd: AuthdProcess,
            utmp: str) -> Iterator[Harness]:
    """The two sshd and what they need (support/sshlab.py), for this module."""
    with sshlab.harness(netlab, slapd, authd) as made:
        yield made


@pytest.fixture
def h(harness: Harness) -> Iterator[Harness]:
    """The harness after each test as before it: the authd decides, default config."""
    yield harness
    harness.set_mode(in_process=False)


@pytest.fixture
def make_user(h: Harness) -> Iterator[Callable[..., User]]:
    """Factory: a local account and the same uid in slapd, optionally with a linked token
    and an authorised key (sshlab.accounts); the accounts are removed afterwards."""
    with sshlab.accounts(h) as make:
        yield make


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
    assert wrong not in h.audit.about(user.name)[0]


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
    assert audits(h, user, 2)[0]["outcome"] == "success"
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
        h.relay.target = handle.port
        h.write_config(ldap=handle)
        yield handle
    finally:
        h.relay.target = h.ldap.port
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
        port = own_slapd.port
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
    assert h.audit.about(user.name, 0) == []  # the client has exited: see about()
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
    assert len(h.audit.about(user.name, 0)) == 3  # the client has exited: see about()




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

def test_9_a_code_counts_once_for_ssh_and_the_site(h: Harness, make_user,
                                                  site: sitelab.Site) -> None:
    """The real sshd and the real site (through nginx, from the off-campus namespace) share
    one replay guard: a code used over ssh is refused on the site, and the next code, used
    on the site, is refused over ssh."""
    user = make_user()
    web = weblab.Client(h.net.clients["off"], sitelab.HOST, SERVER["off", "v4"], site.tls.ca)
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


def test_9_a_code_used_over_ssh_is_refused_at_the_gate(h: Harness, make_user,
                                                      gate: gatelab.Gate) -> None:
    """The same for the gate in front of a protected site (tests/test_gate_nginx.py's
    stack): the code that opened an ssh session does not open the file share."""
    user = make_user()
    code = user.code()
    over_ssh = ssh(h, "off", "v4", user, codes=(code,))
    assert over_ssh.ok, explain(h, over_ssh)
    portal, files, verify = gate.password_step("off", user.name, user.password, "/share/")
    same = portal.post_form(verify, {"code": code})
    assert same.status == 200 and MISMATCH_MESSAGE in same.body
    assert files.get("/share/").status == 302
    later = portal.post_form(verify, {"code": user.code(30)})
    assert later.status == 302 and later.location == gate.url("/share/")
    assert files.get("/share/").status == 200
