"""Failing closed through real libpam + pam_python.so: directory outages and malformed
entries, bad configuration and options, exceptions, hostile user names and a hostile
environment (issue 3, points 6, 7, 9, 12).

What the authd decides as installed runs twice (``pam_both``): through the session's running
campus-mfa-authd, every audit line then carrying the authd's pid (PamLab checks it), and
in-process (``authd=off``), the fallback. The rest is in-process by nature, and says why:
a bad option or a configuration the authd cannot use is met by the module itself, an
exception is forced inside the module's own process, and a module that refuses a planted
package does so before it could ask anyone."""
from __future__ import annotations

import os
import secrets
import subprocess
import textwrap
from pathlib import Path

import pytest

from devtools import devldap
from devtools.pamtester import AUTH_ERR, CODE_PROMPT, SUCCESS, UNAVAIL, clean_env
from devtools.syslog import audit_pid
from devtools.toml import dump_toml
from policy.messages import UNAVAILABLE_MESSAGE
from support.pamlab import CAMPUS_ADDRESS, MODULE, OFF_CAMPUS, PYTHON, ROOT

# -- 6. the directory cannot answer ------------------------------------------------------

def test_directory_down_refuses_off_campus_fast_and_campus_still_passes(pam_both):
    pam = pam_both  # through the authd, then in-process
    user = pam.enrolled()
    closed = devldap.free_port()  # nothing listens there
    service = pam.service(config=pam.config(ldap_uri=f"ldap://127.0.0.1:{closed}",
                                            ldap={"timeout": 20}))
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == UNAVAIL
    assert run.stderr == UNAVAILABLE_MESSAGE + "\n" + UNAVAIL + "\n"
    assert run.elapsed < 8.0  # refused at once: the 20-second timeout is not waited for
    line = pam.audit()[0]
    assert (line["outcome"], line["source"]) == ("unavailable", OFF_CAMPUS)
    assert line["reason"].startswith(f"off-campus source {OFF_CAMPUS}; directory error (")
    campus = pam.run(service, user.uid, CAMPUS_ADDRESS)
    assert campus.verdict == SUCCESS and campus.prompts == 0


def test_directory_that_never_answers_times_out(pam_both):
    pam = pam_both  # through the authd, then in-process
    user = pam.enrolled()
    wire = pam.tripwire(hang=True)
    service = pam.service(config=pam.config(ldap_uri=wire.uri, ldap={"timeout": 1}))
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == UNAVAIL
    assert run.prompts == 0
    assert run.elapsed < 8.0  # bounded by the one-second timeout, not by the silent server
    tried = wire.connections
    assert tried >= 1
    assert pam.audit()[0]["outcome"] == "unavailable"
    assert pam.run(service, user.uid, CAMPUS_ADDRESS).verdict == SUCCESS
    assert wire.connections == tried  # the campus login did not even connect


def test_on_directory_error_allow_lets_off_campus_in(pam_both):
    pam = pam_both  # through the authd, then in-process
    user = pam.enrolled()
    closed = devldap.free_port()
    service = pam.service(config=pam.config(ldap_uri=f"ldap://127.0.0.1:{closed}",
                                            policy={"on_directory_error": "allow"}))
    run = pam.run(service, user.uid, OFF_CAMPUS)
    assert run.verdict == SUCCESS and run.prompts == 0
    reason = pam.audit()[0]["reason"]
    assert reason.startswith(f"off-campus source {OFF_CAMPUS}; directory unreachable (")
    assert reason.endswith(") and on_directory_error = allow")


def bad_params(pam, **values: str) -> str:
    """A params entry (as the rootdn) with the usual values overridden by ``values``."""
    dn = f"cn=bad-{secrets.token_hex(6)},{devldap.TOKENS_DN}"
    attributes = {"oathOTPLength": "6", "oathHMACAlgorithm": "1.2.840.113549.2.7",
                  "oathTOTPTimeStepPeriod": "30", "oathTOTPTimeStepWindow": "1",
                  "oathThrottleLimit": "10", **values}
    conn = pam.admin()
    assert conn.add(dn, ["device", "oathTOTPParams"], attributes), conn.result
    conn.unbind()
    return dn


MALFORMED = [  # (id, what the rootdn does to the token, a phrase of the logged reason)
    ("short-secret", lambda pam, user: pam.modify(user.token_dn, oathSecret=[b"\x01" * 8]),
     "oathSecret is shorter than 128 bits"),
    ("params-missing", lambda pam, user: pam.modify(
        user.token_dn, oathTOTPParams=[f"cn=gone,{devldap.TOKENS_DN}"]),
     f"params entry cn=gone,{devldap.TOKENS_DN} does not exist"),
    ("params-outside-token-base", lambda pam, user: pam.modify(
        user.token_dn, oathTOTPParams=[devldap.ROLE_GROUP_DN]), "not under token_base"),
    ("nine-digits", lambda pam, user: pam.modify(
        user.token_dn, oathTOTPParams=[bad_params(pam, oathOTPLength="9")]),
     "digits, period or window out of range"),
    ("unknown-algorithm", lambda pam, user: pam.modify(
        user.token_dn, oathTOTPParams=[bad_params(pam, oathHMACAlgorithm="1.2.3.4")]),
     "unsupported oathHMACAlgorithm 1.2.3.4"),
    ("token-link-outside-token-base", lambda pam, user: pam.modify(
        f"uid={user.uid},{devldap.PEOPLE_DN}", oathTOTPToken=[devldap.SERVICE_DN]),
     "is not under"),
    ("token-link-dangling", lambda pam, user: pam.modify(
        f"uid={user.uid},{devldap.PEOPLE_DN}", oathTOTPToken=[f"cn=gone,{devldap.TOKENS_DN}"]),
     f"token entry cn=gone,{devldap.TOKENS_DN} does not exist"),
]


@pytest.mark.parametrize("corrupt, phrase", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_token_entry_is_refused_and_logged(pam_both, corrupt, phrase):
    pam = pam_both  # through the authd, then in-process
    user = pam.enrolled()
    code = user.code()
    corrupt(pam, user)
    service = pam.service()
    run = pam.run(service, user.uid, OFF_CAMPUS, [code])
    assert run.verdict == UNAVAIL
    assert run.prompts == 0
    assert UNAVAILABLE_MESSAGE in run.stderr
    line = pam.audit()[0]
    assert (line["user"], line["outcome"]) == (user.uid, "unavailable")
    assert line["reason"].startswith(f"off-campus source {OFF_CAMPUS}; directory error (")
    assert phrase in line["reason"]
    assert pam.run(service, user.uid, CAMPUS_ADDRESS).verdict == SUCCESS


# -- 7. bad configuration, bad options ----------------------------------------------------

BAD_CONFIGS = [  # (id, how to spoil a good config text, the problem the log line names)
    ("missing-file", None, "cannot read: No such file or directory"),
    ("syntax", lambda text: text + "[policy\n", "not valid TOML"),
    ("unknown-key", lambda text: text.replace("campus_networks", "campus_network"),
     "unknown key policy.campus_network"),
    ("bad-cidr", lambda text: text.replace('"192.0.2.0/24"', '"192.0.2.0/33"'),
     "policy.campus_networks has an invalid network '192.0.2.0/33'"),
    ("every-address-is-campus", lambda text: text.replace('"192.0.2.0/24"', '"0.0.0.0/0"'),
     "policy.campus_networks must not contain 0.0.0.0/0"),
]


@pytest.mark.parametrize("spoil, problem", [b[1:] for b in BAD_CONFIGS],
                         ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_fails_every_login_closed_with_a_log_line(pam, spoil, problem):
    """In-process by nature: an authd cannot use the file either and hands the login back
    (``retry``), so the module meets the error itself (test_authd.py proves the hand-back)."""
    user = pam.enrolled()
    good = Path(pam.config())
    bad = good.with_name("spoiled.toml")
    if spoil is not None:
        bad.write_text(spoil(good.read_text()))
    service = pam.service(f"syslog_socket={pam.syslog.path}", config=str(bad))
    for rhost in (CAMPUS_ADDRESS, OFF_CAMPUS, None):
        run = pam.run(service, user.uid, rhost, [user.code()])
        assert run.verdict == AUTH_ERR  # a refusal, not a crash of the host process
        assert run.returncode == 1
        assert run.stderr == UNAVAILABLE_MESSAGE + "\n" + AUTH_ERR + "\n"
    lines = pam.audit(3)
    assert [line["outcome"] for line in lines] == ["failure"] * 3
    for line in lines:
        assert line["reason"].startswith(f"configuration error: {bad}: ")
        assert problem in line["reason"]
    assert pam.token(user.token_dn)["last_step"] == 0


def test_unreadable_bind_password_file_refuses_off_campus(pam_both):
    """Through the authd, the off-campus login fails there before anything reached the
    user; the authd hangs up and the module does the login itself and meets the same error,
    so that line carries the login process's pid. The campus login needs no password file
    and is the authd's."""
    pam = pam_both
    pam.in_process_lines = True  # checked here instead
    user = pam.enrolled()
    service = pam.service(config=pam.config(ldap={"bind_password_file": "/nonexistent/pw"}))
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == AUTH_ERR and run.prompts == 0
    assert pam.audit()[0]["reason"] == ("configuration error: ldap.bind_password_file = "
                                        "'/nonexistent/pw': cannot read: No such file or "
                                        "directory")
    assert pam.run(service, user.uid, CAMPUS_ADDRESS).verdict == SUCCESS
    off, campus = (audit_pid(line) for line in pam.syslog.wait_for(2))
    authd_pid = pam.authd.pid if pam.authd else pam.idle_authd_pid
    assert off not in (None, authd_pid)
    assert (campus == authd_pid) == (pam.authd is not None)


SPOILED_SECRET_FILES = [  # (id, how to spoil a copy of the service password file, problem)
    ("readable-by-others", lambda path: path.chmod(0o644),
     "is readable by others (mode 0644); chmod 0640 or 0600"),
    ("group-writable", lambda path: path.chmod(0o660),
     "is writable by its group or others (mode 0660); chmod 0640 or 0600"),
    ("owned-by-nobody", lambda path: os.chown(path, 65534, 65534),
     "is owned by uid 65534, not by root or by the user reading it (uid 0)"),
]


@pytest.mark.parametrize("spoil, problem", [s[1:] for s in SPOILED_SECRET_FILES],
                         ids=[s[0] for s in SPOILED_SECRET_FILES])
def test_a_bind_password_file_others_could_read_or_change_is_refused(pam, tmp_path, spoil,
                                                                     problem):
    """SECURITY.md 17: the password works, but a file that others can read or replace is
    refused with a configuration error that names it and what is wrong. (In-process by
    nature: an authd refuses the file too and hands the login back; see
    test_unreadable_bind_password_file_refuses_off_campus.)"""
    user = pam.enrolled()
    copy = tmp_path / "service.secret"
    copy.write_text(pam.slapd.secret("ldap.secret") + "\n")
    copy.chmod(0o600)
    spoil(copy)
    service = pam.service(config=pam.config(ldap={"bind_password_file": str(copy)}))
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == AUTH_ERR and run.prompts == 0
    assert pam.audit()[0]["reason"] == (f"configuration error: ldap.bind_password_file = "
                                        f"'{copy}': {problem}")
    assert pam.token(user.token_dn)["last_step"] == 0
    link = tmp_path / "link.secret"
    link.symlink_to(copy)
    service = pam.service(config=pam.config(ldap={"bind_password_file": str(link)}))
    assert pam.run(service, user.uid, OFF_CAMPUS, [user.code()]).verdict == AUTH_ERR
    assert pam.audit(2)[1]["reason"].endswith(": is a symbolic link; name the file itself")


def test_allow_is_for_an_outage_only_an_ambiguous_or_broken_entry_is_refused(pam_both):
    """on_directory_error = "allow" lets logins through when no server answers; a user
    filter that matches two entries, or a malformed token, is refused all the same."""
    pam = pam_both  # through the authd, then in-process
    user = pam.enrolled()
    ambiguous = pam.service(config=pam.config(
        ldap={"user_filter": "(|(uid={username})(uid=alice))"},
        policy={"on_directory_error": "allow"}))
    run = pam.run(ambiguous, user.uid, OFF_CAMPUS)
    assert run.verdict == UNAVAIL and run.prompts == 0
    assert pam.audit()[0]["reason"] == (f"off-campus source {OFF_CAMPUS}; directory error "
                                        "(more than one directory entry matches the user name)")
    pam.modify(user.token_dn, oathSecret=[b"\x01" * 8])
    broken = pam.service(config=pam.config(policy={"on_directory_error": "allow"}))
    run = pam.run(broken, user.uid, OFF_CAMPUS)
    assert run.verdict == UNAVAIL and run.prompts == 0
    assert pam.audit(2)[1]["reason"].endswith("oathSecret is shorter than 128 bits)")


BAD_OPTIONS = [  # (id, options on the PAM line, the problem the log line names)
    ("unknown", "nodebug", "unknown option nodebug"),
    ("typo-with-value", "tries=3 confg=/etc/x.toml", "unknown option confg=/etc/x.toml"),
    ("relative-config", "config=campus-mfa.toml", "config= needs an absolute path"),
    ("tries-zero", "tries=0", "tries= must be a number from 1 to 10"),
    ("tries-text", "tries=three", "tries= must be a number from 1 to 10"),
    ("repeated", "debug debug", "option debug given twice"),
    ("flag-with-value", "combined=yes", "unknown option combined=yes"),
]


@pytest.mark.parametrize("options, problem", [b[1:] for b in BAD_OPTIONS],
                         ids=[b[0] for b in BAD_OPTIONS])
def test_bad_option_fails_closed_with_a_log_line(pam, options, problem):
    """In-process by nature: the module refuses before it would ask an authd."""
    uid, _ = pam.user()
    service = pam.service(stack=f"auth required pam_python.so {MODULE} "
                                f"syslog_socket={pam.syslog.path} {options}\n")
    for rhost in (CAMPUS_ADDRESS, OFF_CAMPUS):
        run = pam.run(service, uid, rhost)
        assert run.verdict == AUTH_ERR and run.prompts == 0
    assert [line["reason"] for line in pam.audit(2)] == [f"module option: {problem}"] * 2


# -- 9. an exception inside, with known values in use ---------------------------------------

def shim(tmp_path: Path, body: str) -> Path:
    """A pam_python file that loads the real module, patches one thing, and exposes the
    real pam_sm_authenticate: the failure then happens inside the module's own code (so
    in the module's process: these tests are in-process by nature)."""
    path = tmp_path / f"shim_{secrets.token_hex(4)}.py"
    path.write_text(textwrap.dedent(f"""\
        import importlib.util
        spec = importlib.util.spec_from_file_location("pam_campus_mfa", {str(MODULE)!r})
        real = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(real)
        """) + textwrap.dedent(body) + "pam_sm_authenticate = real.pam_sm_authenticate\n")
    return path


def test_exception_while_checking_a_code_is_caught_logged_and_refused(pam, tmp_path):
    user = pam.enrolled()
    code = user.code()
    path = shim(tmp_path, """\
        import policy.rules.verify
        from policy.rules.totp import to_base32

        def exploding_matching_step(secret, code, params, now):
            raise ValueError(f"cannot check {code} against {to_base32(secret)} {secret!r}")

        policy.rules.verify.matching_step = exploding_matching_step
        """)
    config = pam.config()
    service = pam.service(stack=f"auth required pam_python.so {path} config={config} debug\n")
    run = pam.run(service, user.uid, OFF_CAMPUS, [code])
    assert run.verdict == AUTH_ERR
    assert run.stderr == CODE_PROMPT + UNAVAILABLE_MESSAGE + "\n" + AUTH_ERR + "\n"
    lines = pam.audit(1)
    assert len(lines) == 1
    assert lines[0]["reason"] == f"internal error: ValueError at {path.name}:9"
    debug = [line for line in pam.syslog.lines if "debug: traceback" in line]
    assert len(debug) == 1
    assert "verify.py:" in debug[0] and "login.py:" in debug[0]
    assert pam.token(user.token_dn)["last_step"] == 0
    # The fixture then proves that neither the code nor the secret reached any line.


def test_exception_in_the_conversation_is_caught(pam, tmp_path):
    uid, password = pam.user()
    path = shim(tmp_path, f"""\
        import pam_module.adapter as adapter

        class Exploding(adapter.PamConversation):
            def ask(self, prompt, digits=0):
                raise RuntimeError({password!r})

        adapter.PamConversation = Exploding
        """)
    enrolled = pam.enrolled()
    service = pam.service(stack=f"auth required pam_python.so {path} config={pam.config()} "
                                "authd=off\n")
    run = pam.run(service, enrolled.uid, OFF_CAMPUS, [enrolled.code()])
    assert run.verdict == AUTH_ERR
    assert pam.audit()[0]["reason"] == f"internal error: RuntimeError at {path.name}:9"


# -- hostile user names ----------------------------------------------------------------------

def test_hostile_user_names_never_skip_the_code(pam_both):
    pam = pam_both  # through the authd, then in-process
    enrolled = pam.enrolled()
    plain, _ = pam.user()  # not enrolled: opt-in would let *this* name in without a code
    service = pam.service()
    names = [f"{enrolled.uid}*", f"{plain}*", "*", "*)(uid=*", f"*)(uid={plain}",
             f" {plain}", f"{plain} ", f"{plain}\t", plain.upper() + "\x7f",
             plain + "x" * 300, f"{plain})(|(uid=*"]
    for name in names:
        run = pam.run(service, name, OFF_CAMPUS, [enrolled.code()])
        assert run.verdict == AUTH_ERR, name
        assert run.prompts == 0, name
    lines = pam.audit(len(names))
    assert [line["outcome"] for line in lines] == ["failure"] * len(names)
    for name, line in zip(names, lines):
        assert line["reason"] in (f"off-campus source {OFF_CAMPUS}; not an acceptable user name",
                                  f"off-campus source {OFF_CAMPUS}; no directory entry for "
                                  "the user"), (name, line)
    token = pam.token(enrolled.token_dn)
    assert (token["last_step"], token["failures"]) == (0, 0)
    # The real names still behave.
    assert pam.run(service, plain, OFF_CAMPUS).verdict == SUCCESS


# -- 12. the caller's environment ------------------------------------------------------------

def hostile_pythonpath(tmp_path: Path) -> tuple[Path, Path]:
    """A PYTHONPATH dir with a `policy` that lets everyone in and an `ldap3` that
    records being imported; returns (dir, marker)."""
    evil, marker = tmp_path / "evil", tmp_path / "imported-from-pythonpath"
    for package in ("policy", "ldap3", "pyotp"):
        (evil / package).mkdir(parents=True)
        (evil / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({package!r} + '\\n')\n")
    (evil / "policy" / "login.py").write_text(
        "def login(*a, **k):\n    raise SystemExit('planted')\n")
    return evil, marker


def hostile_env(tmp_path: Path, evil: Path) -> dict[str, str]:
    closed = devldap.free_port()
    hostile_config = tmp_path / "hostile.toml"
    hostile_config.write_text(dump_toml({"ldap": {"uris": [f"ldap://127.0.0.1:{closed}"]},
                                         "policy": {"campus_networks": ["0.0.0.0/1"]}}))
    (tmp_path / ".ldaprc").write_text(f"URI ldap://127.0.0.1:{closed}\n")
    return clean_env(
        PYTHONPATH=str(evil), PYTHONHOME=str(tmp_path), PYTHONSTARTUP=str(evil / "x.py"),
        LDAPURI=f"ldap://127.0.0.1:{closed}", LDAPBASE="dc=evil", LDAPBINDDN="cn=evil",
        LDAPCONF=str(tmp_path / ".ldaprc"), LDAPRC=str(tmp_path / ".ldaprc"),
        LDAPTLS_REQCERT="never", HOME=str(tmp_path), http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9", all_proxy="socks5://127.0.0.1:9",
        CAMPUS_MFA_CONFIG=str(hostile_config))


def test_environment_changes_nothing_through_pam(pam_both, tmp_path):
    """The module runs in the hostile process either way; the decision in the authd, then
    in that process itself."""
    pam = pam_both
    evil, marker = hostile_pythonpath(tmp_path)
    env = hostile_env(tmp_path, evil)
    user = pam.enrolled()
    service = pam.service()
    wrong = pam.run(service, user.uid, OFF_CAMPUS, [user.wrong_code()], env=env)
    assert wrong.verdict == AUTH_ERR and wrong.prompts == 2
    right = pam.run(service, user.uid, OFF_CAMPUS, [user.code()], env=env)
    assert right.verdict == SUCCESS
    other = pam.run(service, user.uid, "10.1.2.3", env=env)  # campus only in hostile.toml
    assert other.verdict == AUTH_ERR and other.prompts == 1
    assert pam.run(service, user.uid, CAMPUS_ADDRESS, env=env).verdict == SUCCESS
    assert not marker.exists()
    assert [line["outcome"] for line in pam.audit(4)] == ["failure", "success", "failure",
                                                           "success"]


def test_module_in_a_non_isolated_python_host_ignores_pythonpath(pam, tmp_path):
    """A Python program that drives PAM in-process honours PYTHONPATH itself; loading the
    module must still give our policy package and Debian's ldap3. (In-process by nature:
    the point is what the host process imports.)"""
    evil, marker = hostile_pythonpath(tmp_path)
    user = pam.enrolled()
    config = pam.config()
    program = textwrap.dedent(f"""\
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("pam_campus_mfa", {str(MODULE)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        class Pamh:
            PAM_SUCCESS, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_SILENT = 0, 7, 9, 0x8000
            PAM_PROMPT_ECHO_OFF, PAM_ERROR_MSG = 1, 3
            exception = RuntimeError
            service, rhost, tty, authtok = "host-test", {OFF_CAMPUS!r}, None, None
            class Message:
                def __init__(self, style, text): self.style, self.text = style, text
            class Response:
                def __init__(self, resp): self.resp = resp
            def get_user(self, prompt=None): return {user.uid!r}
            def conversation(self, message):
                return self.Response(sys.stdin.readline().strip() or None)

        code = module.pam_sm_authenticate(Pamh(), 0, [{str(MODULE)!r}, "config={config}"])
        import ldap3, policy
        print(code, policy.__file__, ldap3.__file__, sys.path[0])
        """)
    without_home = {k: v for k, v in hostile_env(tmp_path, evil).items()
                    if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    done = subprocess.run([PYTHON, "-c", program], input=user.code() + "\n",
                          capture_output=True, text=True, timeout=30, cwd=evil,
                          env=without_home, check=False)
    pam.outputs.append(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr
    code, policy_file, ldap3_file, first = done.stdout.split()
    assert code == "0"
    assert policy_file == str(ROOT / "policy" / "__init__.py")
    assert ldap3_file.startswith("/usr/lib/python3/dist-packages/ldap3/")
    assert first == str(ROOT)
    assert not marker.exists()
    assert pam.audit()[0]["outcome"] == "success"


def test_module_refuses_a_policy_package_the_host_loaded_from_elsewhere(tmp_path):
    evil, _ = hostile_pythonpath(tmp_path)
    program = textwrap.dedent(f"""\
        import importlib.util, sys
        sys.path.insert(0, {str(evil)!r})
        import policy  # the host process imported a different `policy` before PAM ran
        spec = importlib.util.spec_from_file_location("pam_campus_mfa", {str(MODULE)!r})
        try:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except ImportError as err:
            print("refused:", err)
        """)
    done = subprocess.run([PYTHON, "-I", "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"refused: the loaded policy package is not the one in {ROOT}\n"
