"""pam_campus_mfa.py with a fake pamh whose PAM codes are distinct sentinels, so that a
bool or a wrong constant cannot pass by accident: the option parser, the sys.path rule, the
outcome mapping, the one broad handler and the combined-mode conversation."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import policy.login
from devtools.syslog import SyslogListener, parse_audit
from devtools.toml import dump_toml
from pam_module import adapter
from policy.login import LoginResult
from support.pamlab import MODULE, ROOT
from support.tcp import Tripwire

SUCCESS, AUTH_ERR, AUTHINFO_UNAVAIL, CONV_ERR = 1001, 1002, 1003, 1019


def load_module():
    spec = importlib.util.spec_from_file_location("pam_campus_mfa_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mod = load_module()


class FakePamh:
    """The parts of pam_python's PamHandle the module uses, with sentinel constants."""

    PAM_SUCCESS, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL = SUCCESS, AUTH_ERR, AUTHINFO_UNAVAIL
    PAM_SILENT = 0x8000
    PAM_PROMPT_ECHO_OFF, PAM_ERROR_MSG = 2001, 2003

    class exception(Exception):  # noqa: N801  (pam_python's name)
        def __init__(self, pam_result: int) -> None:
            super().__init__(pam_result)
            self.pam_result = pam_result

    class Message:
        def __init__(self, msg_style: int, msg: str) -> None:
            self.msg_style, self.msg = msg_style, msg

    class Response:
        def __init__(self, resp: str | None) -> None:
            self.resp = resp

    def __init__(self, *, user: str = "alice", rhost: str | None = "192.0.2.7",
                 service: str = "sshd", answers: tuple[str, ...] = (),
                 authtok: str | None = None, tty: str | None = None) -> None:
        self.user, self.rhost, self.service, self.authtok = user, rhost, service, authtok
        self.tty = tty
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.errors: list[str] = []

    def get_user(self, prompt: str | None = None) -> str:
        return self.user

    def conversation(self, message: "FakePamh.Message") -> "FakePamh.Response":
        if message.msg_style == self.PAM_PROMPT_ECHO_OFF:
            self.prompts.append(message.msg)
            if not self.answers:
                raise self.exception(CONV_ERR)
            return self.Response(self.answers.pop(0))
        self.errors.append(message.msg)
        return self.Response(None)


@pytest.fixture
def syslog() -> Iterator[SyslogListener]:
    directory = tempfile.mkdtemp(prefix="cmfa-", dir="/tmp")
    listener = SyslogListener(os.path.join(directory, "log"))
    yield listener
    listener.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def directory_stand_in() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()


@pytest.fixture
def config(tmp_path: Path, syslog: SyslogListener, directory_stand_in: Tripwire) -> str:
    """A valid config whose "directory" only counts connections and closes them."""
    (tmp_path / "pw").write_text("service-password\n")
    (tmp_path / "pw").chmod(0o600)
    path = tmp_path / "campus-mfa.toml"
    path.write_text(dump_toml({
        "ldap": {"uris": [directory_stand_in.uri], "base_dn": "dc=example,dc=edu",
                 "user_base": "ou=people,dc=example,dc=edu",
                 "token_base": "ou=tokens,dc=example,dc=edu",
                 "role_group": "cn=mfa-users,ou=groups,dc=example,dc=edu",
                 "bind_dn": "cn=campus-mfa,ou=services,dc=example,dc=edu",
                 "bind_password_file": str(tmp_path / "pw"), "timeout": 1,
                 "start_tls": False},
        "policy": {"campus_networks": ["192.0.2.0/24", "2001:db8:c0::/48"]},
        "audit": {"syslog_socket": syslog.path}}))
    return str(path)


# -- options ----------------------------------------------------------------------------------

DEFAULTS = {"config": "/etc/campus-mfa/campus-mfa.toml", "tries": 3, "combined": False,
            "debug": False, "syslog_socket": "/dev/log",
            "authd": "/run/campus-mfa/authd.sock", "problem": ""}

OPTIONS = [  # (arguments after the module path, fields that differ from DEFAULTS)
    ([], {}),
    (["config=/etc/x.toml"], {"config": "/etc/x.toml"}),
    (["tries=1"], {"tries": 1}),
    (["tries=10", "combined", "debug"], {"tries": 10, "combined": True, "debug": True}),
    (["syslog_socket=/run/log"], {"syslog_socket": "/run/log"}),
    (["tries=0"], {"problem": "tries= must be a number from 1 to 10"}),
    (["tries=11"], {"problem": "tries= must be a number from 1 to 10"}),
    (["tries=\u0663"], {"problem": "tries= must be a number from 1 to 10"}),  # Arabic-Indic 3
    (["tries="], {"problem": "tries= must be a number from 1 to 10"}),
    (["config="], {"problem": "config= needs an absolute path"}),
    (["config=etc/x.toml"], {"problem": "config= needs an absolute path"}),
    (["syslog_socket=log"], {"problem": "syslog_socket= needs an absolute path"}),
    (["authd=off"], {"authd": "off"}),
    (["authd=/tmp/h.sock"], {"authd": "/tmp/h.sock"}),
    (["authd=h.sock"], {"problem": "authd= needs an absolute path"}),
    (["authd=OFF"], {"problem": "authd= needs an absolute path"}),
    (["authd"], {"problem": "unknown option authd"}),
    (["config"], {"problem": "unknown option config"}),
    (["debug=yes"], {"problem": "unknown option debug=yes"}),
    (["Debug"], {"problem": "unknown option Debug"}),
    (["use_first_pass"], {"problem": "unknown option use_first_pass"}),
    (["debug", "debug"], {"debug": True, "problem": "option debug given twice"}),
    (["config=/a.toml", "config=/b.toml"],
     {"config": "/a.toml", "problem": "option config given twice"}),
    # The first problem is kept, and syslog_socket still counts after it.
    (["bogus", "tries=0", "syslog_socket=/run/log"],
     {"syslog_socket": "/run/log", "problem": "unknown option bogus"}),
]


@pytest.mark.parametrize("args, expected", OPTIONS)
def test_parse_options(args, expected):
    assert adapter.parse_options(args) == adapter.Options(**(DEFAULTS | expected))


def test_sys_path_puts_root_first_and_drops_what_the_environment_added(tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    link = tmp_path / "link"
    link.symlink_to(planted)
    path = ["", str(link), "/usr/lib/python3.11", str(ROOT), ".", "/usr/lib/python3/dist-packages"]
    assert mod.trusted_sys_path(path, str(ROOT), f"{planted}{os.pathsep}/elsewhere") == [
        str(ROOT), "/usr/lib/python3.11", "/usr/lib/python3/dist-packages"]
    assert mod.ROOT == str(ROOT)


# -- every path returns a PAM code ------------------------------------------------------------

def test_campus_login_returns_the_success_code_without_the_directory(config, syslog,
                                                                    directory_stand_in):
    pamh = FakePamh(rhost="::ffff:192.0.2.7")
    assert mod.pam_sm_authenticate(pamh, 0, [str(MODULE), f"config={config}"]) == SUCCESS
    assert (pamh.prompts, pamh.errors, directory_stand_in.connections) == ([], [], 0)
    assert parse_audit(syslog.wait_for(1)[0])["outcome"] == "success"


def test_directory_failure_returns_the_authinfo_unavail_code(config, syslog):
    pamh = FakePamh(rhost="198.51.100.7")
    code = mod.pam_sm_authenticate(pamh, 0, [str(MODULE), f"config={config}"])
    assert code == AUTHINFO_UNAVAIL
    assert pamh.errors == ["The verification service is unavailable. Try again later."]
    assert parse_audit(syslog.wait_for(1)[0])["outcome"] == "unavailable"


@pytest.mark.parametrize("outcome, code", [("success", SUCCESS), ("failure", AUTH_ERR),
                                           ("unavailable", AUTHINFO_UNAVAIL),
                                           ("something-new", AUTH_ERR)])
def test_each_outcome_maps_to_its_pam_code(monkeypatch, config, outcome, code):
    monkeypatch.setattr(policy.login, "login", lambda *a, **k: LoginResult(outcome, "test"))
    assert mod.pam_sm_authenticate(FakePamh(), 0, [str(MODULE), f"config={config}"]) == code


def test_in_process_the_session_is_looked_up_for_this_process_and_pam_tty(monkeypatch,
                                                                        config):
    """Without an authd the module runs in the login process: its own pid is the caller
    whose session a login without PAM_RHOST takes (policy/session.py)."""
    seen = {}

    def recording_login(config, user, rhost, service, conversation, **kwargs):
        seen.update(rhost=rhost, tty=kwargs["tty"], pid=kwargs["pid"])
        return LoginResult("success", "test")

    monkeypatch.setattr(policy.login, "login", recording_login)
    pamh = FakePamh(rhost=None, tty="/dev/pts/7")
    assert mod.pam_sm_authenticate(pamh, 0, [str(MODULE), f"config={config}"]) == SUCCESS
    assert seen == {"rhost": None, "tty": "/dev/pts/7", "pid": os.getpid()}


def test_without_rhost_and_tty_the_login_is_off_campus(config, syslog, directory_stand_in):
    """No session to take a source from: off campus, so the directory is asked (here it
    fails, so the login is refused as unavailable), whatever the service is called."""
    pamh = FakePamh(rhost=None, service="su")
    code = mod.pam_sm_authenticate(pamh, 0, [str(MODULE), f"config={config}"])
    assert code == AUTHINFO_UNAVAIL
    assert directory_stand_in.connections >= 1
    line = parse_audit(syslog.wait_for(1)[0])
    assert (line["source"], line["outcome"]) == ("none", "unavailable")
    assert line["reason"].startswith("off-campus source none (no tty); directory error (")


def test_bad_option_returns_auth_err_and_logs_to_the_option_socket(syslog):
    pamh = FakePamh()
    args = [str(MODULE), "tries=many", f"syslog_socket={syslog.path}"]
    assert mod.pam_sm_authenticate(pamh, 0, args) == AUTH_ERR
    assert pamh.errors == ["The verification service is unavailable. Try again later."]
    line = parse_audit(syslog.wait_for(1)[0])
    assert line == {"user": "alice", "service": "sshd", "source": "192.0.2.7",
                    "outcome": "failure",
                    "reason": "module option: tries= must be a number from 1 to 10"}


def test_missing_config_returns_auth_err_and_names_the_file(tmp_path, syslog):
    missing = tmp_path / "nope.toml"
    args = [str(MODULE), f"config={missing}", f"syslog_socket={syslog.path}"]
    assert mod.pam_sm_authenticate(FakePamh(), 0, args) == AUTH_ERR
    assert parse_audit(syslog.wait_for(1)[0])["reason"] == (
        f"configuration error: {missing}: cannot read: No such file or directory")


def test_an_exception_returns_auth_err_and_logs_no_value(monkeypatch, config, syslog):
    def exploding_login(config, user, rhost, service, conversation, **kwargs):
        typed = conversation.ask("Verification code: ")
        raise KeyError(f"secret JBSWY3DPEHPK3PXP and code {typed}")

    monkeypatch.setattr(policy.login, "login", exploding_login)
    pamh = FakePamh(rhost="198.51.100.7", answers=("246810",))
    code = mod.pam_sm_authenticate(pamh, 0, [str(MODULE), f"config={config}", "debug"])
    assert code == AUTH_ERR
    lines = syslog.wait_for(3)  # debug: the options, the traceback; then the audit line
    reason = parse_audit([line for line in lines if "debug:" not in line][0])["reason"]
    assert reason.startswith("internal error: KeyError at tests/test_pam_module_unit.py:")
    assert not any("246810" in line or "JBSWY3DP" in line for line in lines)


def test_a_failing_pam_call_returns_auth_err(config, syslog):
    class Broken(FakePamh):
        def get_user(self, prompt=None):
            raise self.exception(CONV_ERR)

    args = [str(MODULE), f"config={config}", f"syslog_socket={syslog.path}"]
    assert mod.pam_sm_authenticate(Broken(), 0, args) == AUTH_ERR
    assert parse_audit(syslog.wait_for(1)[0])["reason"].startswith("internal error: exception at")


def test_silent_flag_keeps_messages_back(config):
    pamh = FakePamh(rhost="198.51.100.7")
    code = mod.pam_sm_authenticate(pamh, FakePamh.PAM_SILENT, [str(MODULE), f"config={config}"])
    assert code == AUTHINFO_UNAVAIL and pamh.errors == []


def test_setcred_returns_the_success_code():
    assert mod.pam_sm_setcred(FakePamh(), 0, [str(MODULE)]) == SUCCESS


def test_only_auth_entry_points_exist():
    entry_points = sorted(name for name in vars(mod) if name.startswith("pam_sm_"))
    assert entry_points == ["pam_sm_authenticate", "pam_sm_setcred"]


# -- combined mode ----------------------------------------------------------------------------

def test_combined_splits_only_when_asked_and_only_once():
    pamh = FakePamh(authtok="hunter2-pw123456")
    conversation = adapter.CombinedConversation(pamh, silent=False)
    assert pamh.authtok == "hunter2-pw123456"  # nothing changes until a code is asked for
    assert conversation.ask("Verification code: ", 6) == "123456"
    assert pamh.authtok == "hunter2-pw"
    assert conversation.ask("Verification code: ", 6) is None
    assert pamh.authtok == "hunter2-pw"
    assert pamh.prompts == []


def test_combined_asks_for_the_password_when_no_module_did():
    pamh = FakePamh(answers=("pw87654321",))
    conversation = adapter.CombinedConversation(pamh, silent=False)
    assert pamh.prompts == []  # asking is read_password's job, not the constructor's
    conversation.read_password()
    assert (pamh.prompts, pamh.authtok) == (["Password: "], "pw87654321")
    assert conversation.ask("Verification code: ", 8) == "87654321"
    assert pamh.authtok == "pw"


def test_combined_without_an_answer_leaves_authtok_unset():
    pamh = FakePamh()
    conversation = adapter.CombinedConversation(pamh, silent=False)
    conversation.read_password()
    assert pamh.authtok is None
    assert conversation.ask("Verification code: ", 6) is None


def test_combined_campus_login_leaves_authtok_as_typed(config):
    pamh = FakePamh(rhost="192.0.2.7", authtok="just-the-password")
    args = [str(MODULE), f"config={config}", "combined"]
    assert mod.pam_sm_authenticate(pamh, 0, args) == SUCCESS
    assert pamh.authtok == "just-the-password"
