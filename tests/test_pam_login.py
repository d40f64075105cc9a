"""The login story through real libpam + pam_python.so + pam_campus_mfa.py + slapd:
campus sources, the code prompt, replay, throttling and the opt-in/required policy
(issue 3, points 1-5, and the address forms), and logins without PAM_RHOST, whose source is
the session of their terminal (issue 11, 2)."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from devtools import devldap
from devtools.commands import campus_mfa
from devtools.pamtester import AUTH_ERR, CODE_PROMPT, SUCCESS, UNAVAIL, pamtester_args
from devtools.syslog import AUTHPRIV_INFO, AUTHPRIV_WARNING
from policy.messages import LOCKED_MESSAGE, MISMATCH_MESSAGE, SET_UP_MESSAGE
from policy.rules.totp import TotpParams
from support.pamlab import CAMPUS_ADDRESS, OFF_CAMPUS, service_name
from support.utmp import USER_PROCESS

ON = "2-step verification is on"


@pytest.fixture
def pam(pam_both):
    """Every test here runs twice: the module in-process, and through the authd."""
    return pam_both


def gentime(now: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


# -- 1. campus sources, and every address form ------------------------------------------

CAMPUS_FORMS = [  # (id, PAM_RHOST, source in the audit line, reason)
    ("campus-v4", "192.0.2.7", "192.0.2.7", "campus source 192.0.2.7 matched 192.0.2.0/24"),
    ("campus-v6", "2001:db8:c0::5", "2001:db8:c0::5",
     "campus source 2001:db8:c0::5 matched 2001:db8:c0::/48"),
    ("mapped-campus-v4", "::ffff:192.0.2.7", "192.0.2.7",
     "campus source 192.0.2.7 matched 192.0.2.0/24"),
    ("zone-id", "2001:db8:c0::5%eth0", "2001:db8:c0::5",
     "campus source 2001:db8:c0::5 matched 2001:db8:c0::/48"),
]


@pytest.mark.parametrize("rhost, source, reason",
                         [form[1:] for form in CAMPUS_FORMS], ids=[f[0] for f in CAMPUS_FORMS])
def test_campus_source_succeeds_without_prompt_or_directory(pam, rhost, source, reason):
    wire = pam.tripwire()  # the "directory": any connection to it is counted
    name = service_name()
    pam.service(config=pam.config(ldap_uri=wire.uri), name=name)
    run = pam.run(name, "enrolled-or-not", rhost)
    assert run.verdict == SUCCESS
    assert run.prompts == 0 and run.stderr == ""
    assert wire.connections == 0
    assert pam.audit() == [{"user": "enrolled-or-not", "service": name, "source": source,
                            "outcome": "success", "reason": reason}]
    assert pam.syslog.lines[0].startswith(AUTHPRIV_INFO + "campus-mfa[")


OFF_CAMPUS_FORMS = [  # (id, PAM_RHOST, source in the audit line, where it came from)
    ("off-campus-v4", "198.51.100.7", "198.51.100.7", ""),
    ("mapped-off-campus-v4", "::ffff:198.51.100.7", "198.51.100.7", ""),
    ("zone-id-off-campus", "fe80::1%eth0", "fe80::1", ""),
    ("hostname", "campus.example.edu", "'campus.example.edu'", ""),
    ("campus-lookalike-hostname", "192.0.2.7.example.net", "'192.0.2.7.example.net'", ""),
    ("unknown", "UNKNOWN", "'UNKNOWN'", ""),
    # No PAM_RHOST and no PAM_TTY (pamtester sets none): no session to take a source from,
    # whatever the service is called (policy.local_services made such logins exempt).
    ("unset-no-tty", None, "none", " (no tty)"),
    ("empty-no-tty", "", "none", " (no tty)"),
    ("leading-zeros", "192.0.2.010", "'192.0.2.010'", ""),
    ("trailing-space", "192.0.2.7 ", "'192.0.2.7 '", ""),
    ("garbage", "192.0.2.7;x", "'192.0.2.7;x'", ""),
]


@pytest.mark.parametrize("rhost, source, origin", [form[1:] for form in OFF_CAMPUS_FORMS],
                         ids=[form[0] for form in OFF_CAMPUS_FORMS])
def test_off_campus_source_asks_for_the_code(pam, rhost, source, origin):
    user = pam.enrolled()
    service = pam.service()
    run = pam.run(service, user.uid, rhost)  # no answer: the prompt gets end of input
    assert run.verdict == AUTH_ERR
    assert run.prompts == 1
    assert pam.audit() == [{
        "user": user.uid, "service": service, "source": source, "outcome": "failure",
        "reason": f"off-campus source {source}{origin}; {ON}; no code entered"}]


# -- 1b. no PAM_RHOST: the session of the terminal ------------------------------------------

def test_a_login_on_a_console_tty_is_local(pam, utmp):
    """pamtester on a pty of its own whose utmp record has no remote host, written for
    pamtester's pid before PAM starts, as agetty writes one for the login it becomes."""
    user = pam.enrolled()
    wire = pam.tripwire()
    service = pam.service(config=pam.config(ldap_uri=wire.uri))
    run = pam.run_on_tty(service, user.uid, host="")
    assert run.verdict == SUCCESS and run.prompts == 0
    assert wire.connections == 0
    [line] = pam.audit()
    assert (line["source"], line["outcome"]) == ("local", "success")
    assert re.fullmatch(r"local login \(utmp record of pts/\d+: no remote host\)",
                        line["reason"]), line


SESSION_RECORDS = [  # (id, host of the record, outcome, source, reason pattern)
    ("campus", CAMPUS_ADDRESS, SUCCESS, CAMPUS_ADDRESS,
     rf"campus source {CAMPUS_ADDRESS} \(utmp record of pts/\d+\) matched 192\.0\.2\.0/24"),
    ("campus-v6", "2001:db8:c0::9", SUCCESS, "2001:db8:c0::9",
     r"campus source 2001:db8:c0::9 \(utmp record of pts/\d+\) matched 2001:db8:c0::/48"),
    ("off-campus", OFF_CAMPUS, AUTH_ERR, OFF_CAMPUS,
     rf"off-campus source {OFF_CAMPUS} \(utmp record of pts/\d+\); {ON}; no code entered"),
    ("hostname", "campus.example.edu", AUTH_ERR, "'campus.example.edu'",
     rf"off-campus source 'campus.example.edu' \(utmp record of pts/\d+\); {ON}; "
     "no code entered"),
]


@pytest.mark.parametrize("host, verdict, source, reason", [r[1:] for r in SESSION_RECORDS],
                         ids=[r[0] for r in SESSION_RECORDS])
def test_a_login_without_rhost_takes_the_address_of_its_session(pam, utmp, host, verdict,
                                                               source, reason):
    """The record an sshd writes for a session: USER_PROCESS, the client address, the pid
    of a root process the login descends from (here the test itself, pamtester's parent)."""
    user = pam.enrolled()
    service = pam.service()
    run = pam.run_on_tty(service, user.uid, host=host, kind=USER_PROCESS,
                         record_pid=os.getpid())
    assert run.verdict == verdict
    assert run.prompts == (0 if verdict == SUCCESS else 1)
    [line] = pam.audit()
    assert line["source"] == source
    assert re.fullmatch(reason, line["reason"]), line


@pytest.fixture
def stranger():
    """A root process that is no ancestor of the login: its pid in a forged record."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("forgery", ["not-an-ancestor", "older-than-its-process"])
def test_a_record_not_tied_to_the_login_is_not_believed(pam, utmp, stranger, forgery):
    """A record with the right terminal and "console" as its host, but whose process is
    not the login's nor one of its parents, or which was written before its process
    started (a stale record whose pid a new process got): off campus."""
    user = pam.enrolled()
    service = pam.service()
    if forgery == "not-an-ancestor":
        run = pam.run_on_tty(service, user.uid, host="", record_pid=stranger)
    else:
        run = pam.run_on_tty(service, user.uid, host="", age=3600)
    assert run.verdict == AUTH_ERR and run.prompts == 1
    [line] = pam.audit()
    assert line["source"] == "none"
    assert re.fullmatch(rf"off-campus source none \(no utmp record of pts/\d+ tied to the "
                        rf"caller\); {ON}; no code entered", line["reason"]), line
    assert pam.syslog.lines[0].startswith(AUTHPRIV_WARNING + "campus-mfa[")


# -- 2. the code ---------------------------------------------------------------------------

def test_correct_code_succeeds_and_updates_the_token(pam):
    user = pam.enrolled()
    pam.modify(user.token_dn, oathFailureCount=["2"], oathLastFailure=[gentime(time.time())])
    service = pam.service()
    now = time.time()
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code(now)])
    after = time.time()
    assert run.verdict == SUCCESS
    assert run.stderr == CODE_PROMPT
    token = pam.token(user.token_dn)
    assert token["last_step"] == int(now // 30)  # advanced from 0 by compare-and-swap
    assert token["failures"] == 0
    assert gentime(now - 1) <= token["last_login"] <= gentime(after + 1)
    assert pam.audit() == [{"user": user.uid, "service": service, "source": OFF_CAMPUS,
                            "outcome": "success",
                            "reason": f"off-campus source {OFF_CAMPUS}; {ON}; code accepted"}]


def test_wrong_codes_reprompt_three_times_then_fail(pam):
    user = pam.enrolled()
    service = pam.service()
    wrong = user.wrong_code()
    run = pam.run(service, user.uid, OFF_CAMPUS, [wrong, "12345", "abcdef", user.code()])
    assert run.verdict == AUTH_ERR
    assert run.stderr == (CODE_PROMPT + MISMATCH_MESSAGE + "\n") * 3 + AUTH_ERR + "\n"
    assert pam.token(user.token_dn)["failures"] == 3
    assert pam.token(user.token_dn)["last_step"] == 0  # the fourth line was never read
    assert pam.audit() == [{
        "user": user.uid, "service": service, "source": OFF_CAMPUS, "outcome": "failure",
        "reason": f"off-campus source {OFF_CAMPUS}; {ON}; "
                  "code refused (mismatch, mismatch, mismatch)"}]


def test_wrong_then_correct_code_succeeds_in_one_conversation(pam):
    user = pam.enrolled()
    service = pam.service()
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.wrong_code(), user.code()])
    assert run.verdict == SUCCESS
    assert run.stderr == CODE_PROMPT + MISMATCH_MESSAGE + "\n" + CODE_PROMPT
    assert pam.token(user.token_dn)["failures"] == 0


def test_tries_option_sets_the_number_of_prompts(pam):
    user = pam.enrolled()
    service = pam.service("tries=2")
    wrong = user.wrong_code()
    run = pam.run(service, user.uid, OFF_CAMPUS, [wrong, wrong, user.code()])
    assert run.verdict == AUTH_ERR
    assert run.prompts == 2 and run.stderr.count(MISMATCH_MESSAGE) == 2
    assert pam.token(user.token_dn)["failures"] == 2


def test_silent_flag_suppresses_messages_but_not_the_prompt(pam):
    user = pam.enrolled()
    service = pam.service("tries=1")
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.wrong_code()],
                  operation="authenticate(PAM_SILENT)")
    assert run.verdict == AUTH_ERR
    assert run.stderr == CODE_PROMPT + AUTH_ERR + "\n"


# -- 3. replay -----------------------------------------------------------------------------

def test_same_code_twice_is_refused_the_second_time(pam):
    user = pam.enrolled()
    service = pam.service("tries=1")
    code = user.code()
    assert pam.run(service, user.uid, OFF_CAMPUS, [code]).verdict == SUCCESS
    step = pam.token(user.token_dn)["last_step"]
    run = pam.run(service, user.uid, OFF_CAMPUS, [code])
    assert run.verdict == AUTH_ERR
    assert MISMATCH_MESSAGE in run.stderr
    assert pam.token(user.token_dn)["last_step"] == step
    assert pam.audit(2)[1]["reason"] == (f"off-campus source {OFF_CAMPUS}; {ON}; "
                                         "code refused (replayed)")


def test_older_code_inside_the_window_is_refused(pam):
    user = pam.enrolled()
    service = pam.service("tries=1")
    now = time.time()
    assert pam.run(service, user.uid, OFF_CAMPUS, [user.code(now + 30)]).verdict == SUCCESS
    assert pam.token(user.token_dn)["last_step"] == int(now // 30) + 1
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code(now)])  # inside the window
    assert run.verdict == AUTH_ERR
    assert pam.token(user.token_dn)["last_step"] == int(now // 30) + 1
    assert pam.audit(2)[1]["reason"] == (f"off-campus source {OFF_CAMPUS}; {ON}; "
                                         "code refused (replayed)")


def test_twenty_concurrent_logins_with_one_code_succeed_once(pam):
    user = pam.enrolled(max_failures=100)
    service = pam.service("tries=1")
    code = user.code()
    pam.secret_values.add(code)
    procs = [subprocess.Popen(pamtester_args(service, user.uid, OFF_CAMPUS),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(20)]
    outputs = [proc.communicate(code + "\n", timeout=60) for proc in procs]
    pam.outputs.extend(out + err for out, err in outputs)
    verdicts = [re.findall(r"pamtester: [^\n]*", out + err) for out, err in outputs]
    assert sorted(v[0] for v in verdicts) == [AUTH_ERR] * 19 + [SUCCESS]
    assert sorted(proc.returncode for proc in procs) == [0] + [1] * 19
    lines = pam.audit(20)
    assert sorted(line["outcome"] for line in lines) == ["failure"] * 19 + ["success"]
    # Every loser either checked the code after the winner (replayed) or, once the shared
    # counter showed three attempts in flight, was refused by the back-off unchecked.
    refused = re.compile(re.escape(f"off-campus source {OFF_CAMPUS}; {ON}; ")
                         + r"(code refused \(replayed\)|back-off, retry in [0-9]+s)")
    reasons = [line["reason"] for line in lines if line["outcome"] == "failure"]
    assert all(refused.fullmatch(reason) for reason in reasons), reasons


# -- 4. throttling ---------------------------------------------------------------------------

BACKOFF = re.compile(r"Too many wrong verification codes\. Try again in ([0-9]+) seconds\.\n")


def test_backoff_refuses_without_checking_the_code(pam):
    user = pam.enrolled()
    service = pam.service()
    # Seven failures, the last one a moment ago: 2**(7-3) = 16 seconds to wait.
    pam.modify(user.token_dn, oathFailureCount=["7"], oathLastFailure=[gentime(time.time())])
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == AUTH_ERR
    assert run.prompts == 1
    assert 10 <= int(BACKOFF.fullmatch(run.stderr.removeprefix(CODE_PROMPT).removesuffix(
        AUTH_ERR + "\n")).group(1)) <= 16
    token = pam.token(user.token_dn)
    assert (token["last_step"], token["failures"]) == (0, 7)  # not checked, not counted
    assert pam.audit()[0]["reason"].startswith(
        f"off-campus source {OFF_CAMPUS}; {ON}; back-off, retry in ")


def test_backoff_starts_from_a_failure_in_another_process(pam):
    user = pam.enrolled()
    service = pam.service("tries=1")
    # Six failures long ago: no back-off now. One more failure starts a 16-second one.
    pam.modify(user.token_dn, oathFailureCount=["6"], oathLastFailure=["20200101000000Z"])
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.wrong_code()])
    assert run.verdict == AUTH_ERR and MISMATCH_MESSAGE in run.stderr
    assert pam.token(user.token_dn)["failures"] == 7
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == AUTH_ERR
    assert 10 <= int(BACKOFF.search(run.stderr).group(1)) <= 16
    assert pam.token(user.token_dn)["last_step"] == 0


def test_lockout_is_shared_by_hosts_and_refuses_a_correct_code_until_reset(pam):
    user = pam.enrolled(max_failures=4)
    host_a = pam.service("tries=1", config=pam.config())
    host_b = pam.service("tries=1", config=pam.config())
    # Three failures long ago: no back-off left, one more failure locks.
    pam.modify(user.token_dn, oathFailureCount=["3"], oathLastFailure=["20200101000000Z"])
    run = pam.run(host_a, user.uid, OFF_CAMPUS, [user.wrong_code()])
    assert run.verdict == AUTH_ERR and MISMATCH_MESSAGE in run.stderr
    assert pam.token(user.token_dn)["failures"] == 4
    run = pam.run(host_b, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == AUTH_ERR
    assert LOCKED_MESSAGE + "\n" in run.stderr
    assert pam.token(user.token_dn)["last_step"] == 0
    assert pam.audit(2)[1]["reason"] == f"off-campus source {OFF_CAMPUS}; {ON}; token locked"

    # The helpdesk unlocks with the admin command; the correct code works again.
    unlock = campus_mfa(pam.slapd.config_path, "unlock", user.uid)
    assert (unlock.returncode, unlock.stdout) == (0, f"{user.uid}: unlocked\n")
    assert pam.token(user.token_dn)["failures"] == 0
    assert pam.run(host_b, user.uid, OFF_CAMPUS, [user.code()]).verdict == SUCCESS


def test_reset_by_the_helpdesk_turns_the_code_off(pam):
    user = pam.enrolled()
    service = pam.service()
    reset = campus_mfa(pam.slapd.config_path, "reset", user.uid)
    assert reset.returncode == 0, reset.stderr
    run = pam.run(service, user.uid, OFF_CAMPUS)
    assert run.verdict == SUCCESS and run.prompts == 0  # opt-in, and no token any more


# -- 5. no token: opt-in or required -------------------------------------------------------

def test_opt_in_user_without_token_passes_with_an_info_line(pam):
    uid, _ = pam.user()
    service = pam.service()
    run = pam.run(service, uid, OFF_CAMPUS)
    assert run.verdict == SUCCESS
    assert run.prompts == 0 and run.stderr == ""
    assert pam.audit() == [{
        "user": uid, "service": service, "source": OFF_CAMPUS, "outcome": "success",
        "reason": f"off-campus source {OFF_CAMPUS}; no token (2-step verification is off, "
                  "opt-in)"}]
    assert pam.syslog.lines[0].startswith(AUTHPRIV_INFO)


def test_required_enforcement_refuses_user_without_token(pam):
    uid, _ = pam.user()
    service = pam.service(config=pam.config(policy={"enforcement": "required"}))
    run = pam.run(service, uid, OFF_CAMPUS)
    assert run.verdict == AUTH_ERR
    assert run.stderr == SET_UP_MESSAGE + "\n" + AUTH_ERR + "\n"
    assert pam.audit()[0]["reason"] == (f"off-campus source {OFF_CAMPUS}; "
                                        "no token and enforcement = required")
    # Campus logins of the same user are unaffected.
    assert pam.run(service, uid, "192.0.2.9").verdict == SUCCESS


# The group's DN as an admin may write it in the config: the directory compares DNs, so
# case and the spaces after commas (RFC 4514 section 2 allows neither to matter) do not.
SPELLINGS = {
    "as-stored": lambda dn: dn,
    "case-and-spaces": lambda dn: ", ".join(
        f"{attr.upper()}={value.title()}" for attr, value in
        (part.split("=", 1) for part in dn.split(","))),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_required_group_refuses_its_members_without_token(pam, spelling):
    member, _ = pam.user()
    other, _ = pam.user()
    stored = f"cn=staff-{member},ou=groups,{devldap.BASE_DN}"
    conn = pam.admin()
    assert conn.add(stored, ["groupOfNames"], {"cn": f"staff-{member}",
                                               "member": [f"uid={member},{devldap.PEOPLE_DN}"]})
    conn.unbind()
    group = SPELLINGS[spelling](stored)
    assert (group == stored) == (spelling == "as-stored")
    service = pam.service(config=pam.config(policy={"required_groups": [group]}))
    run = pam.run(service, member, OFF_CAMPUS)
    assert run.verdict == AUTH_ERR
    assert SET_UP_MESSAGE in run.stderr
    assert pam.run(service, other, OFF_CAMPUS).verdict == SUCCESS
    reasons = [line["reason"] for line in pam.audit(2)]
    assert reasons == [
        f"off-campus source {OFF_CAMPUS}; no token and member of required group {group}",
        f"off-campus source {OFF_CAMPUS}; no token (2-step verification is off, opt-in)"]


def test_a_required_group_that_does_not_exist_fails_closed(pam):
    """A typo in required_groups must not turn into "member of no required group"."""
    plain, _ = pam.user()
    missing = f"cn=no-such-group,ou=groups,{devldap.BASE_DN}"
    service = pam.service(config=pam.config(policy={"required_groups": [missing]}))
    run = pam.run(service, plain, OFF_CAMPUS)
    assert run.verdict == UNAVAIL
    reason = pam.audit()[0]["reason"]
    assert reason.startswith(f"off-campus source {OFF_CAMPUS}; directory error (compare "
                             f"{missing}: noSuchObject")
    assert pam.run(service, plain, CAMPUS_ADDRESS).verdict == SUCCESS


def test_enrolled_user_with_longer_codes(pam):
    user = pam.enrolled(TotpParams(digits=8, period=30))
    service = pam.service()
    code = user.code()
    assert len(code) == 8
    assert pam.run(service, user.uid, OFF_CAMPUS, [code]).verdict == SUCCESS
