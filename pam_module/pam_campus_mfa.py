"""campus-mfa's PAM module, loaded by pam_python.so after the first factor:

    auth required pam_python.so /usr/share/campus-mfa/pam_module/pam_campus_mfa.py [options]

A thin adapter: PAM items (user, service, rhost, the conversation and, in ``combined``
mode, PAM_AUTHTOK) go in; one call to policy.login.login() decides, prompts, verifies and
writes the audit line; its outcome comes back as a PAM code. Options (README.md's PAM stack
section): config=PATH, tries=N, combined, debug, syslog_socket=PATH.
"""
# No `from __future__ import annotations`: pam_python does not put this module in
# sys.modules, and dataclasses needs it there to read string annotations.
import os
import sys
from dataclasses import dataclass
from typing import Any


def trusted_sys_path(path: list[str], root: str, pythonpath: str) -> list[str]:
    """``path`` with ``root`` first and without what the caller's environment can add:
    PYTHONPATH entries and the current directory."""
    untrusted = {os.path.realpath(entry) for entry in pythonpath.split(os.pathsep) if entry}
    kept = [entry for entry in path
            if entry not in ("", ".") and os.path.realpath(entry) not in untrusted | {root}]
    return [root, *kept]


# The checkout (or /usr/share/campus-mfa when installed) holds pam_module/ and policy/ side
# by side. pam_python runs Python isolated, but a Python host process may not, and a
# `policy` or `ldap3` planted on PYTHONPATH by the user who runs su or sudo must not load.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path[:] = trusted_sys_path(sys.path, ROOT, os.environ.get("PYTHONPATH", ""))

import policy  # noqa: E402  (only now that the path is ours)

if not os.path.realpath(policy.__file__).startswith(ROOT + os.sep):
    # A host process imported some other `policy` first; pam_python fails the call.
    raise ImportError(f"the loaded policy package is not the one in {ROOT}")

from policy.audit import DEBUG, audit, quote, send_line  # noqa: E402
from policy.config import DEFAULT_PATH, AuditConfig, ConfigError, load_config  # noqa: E402
from policy.login import (FAILURE, SUCCESS, UNAVAILABLE, UNAVAILABLE_MESSAGE,  # noqa: E402
                          login)

PASSWORD_PROMPT = "Password: "
MAX_TRIES = 10


@dataclass(frozen=True)
class Options:
    """The module arguments on the PAM line, after the module path."""

    config: str = DEFAULT_PATH
    tries: int = 3
    combined: bool = False        # password and code in one PAM_AUTHTOK
    debug: bool = False
    syslog_socket: str = AuditConfig.syslog_socket  # for lines written without a config
    problem: str = ""             # the first bad argument: the module then fails closed


def parse_options(args: list[str]) -> Options:
    """Parse ``name`` and ``name=value`` arguments; anything unknown, repeated or malformed
    is recorded in ``problem`` (parsing goes on so that syslog_socket= still counts)."""
    values: dict[str, Any] = {}
    problem = ""
    for arg in args:
        name, equals, value = arg.partition("=")
        error = ""
        if name in values:
            error = f"option {name} given twice"
        elif name in ("combined", "debug") and not equals:
            values[name] = True
        elif name in ("config", "syslog_socket") and equals:
            # A relative path would depend on the calling process's working directory.
            if os.path.isabs(value):
                values[name] = value
            else:
                error = f"{name}= needs an absolute path"
        elif name == "tries" and equals:
            if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_TRIES:
                values[name] = int(value)
            else:
                error = f"tries= must be a number from 1 to {MAX_TRIES}"
        else:
            error = f"unknown option {arg}"
        problem = problem or error
    return Options(**values, problem=problem)


class PamConversation:
    """policy.login's Conversation over the application's PAM conversation function."""

    def __init__(self, pamh: Any, *, silent: bool) -> None:
        self.pamh = pamh
        self.silent = silent  # PAM_SILENT: prompts still happen, messages do not

    def ask(self, prompt: str) -> str | None:
        try:
            response = self.pamh.conversation(
                self.pamh.Message(self.pamh.PAM_PROMPT_ECHO_OFF, prompt))
        except self.pamh.exception:
            return None
        return response.resp  # None when the application had no answer (end of input)

    def error(self, text: str) -> None:
        if self.silent:
            return
        try:
            self.pamh.conversation(self.pamh.Message(self.pamh.PAM_ERROR_MSG, text))
        except self.pamh.exception:
            pass  # the message is a courtesy; the outcome does not depend on it


class CombinedConversation(PamConversation):
    """Password and code in one field (``combined``): the code is the last ``digits``
    characters of PAM_AUTHTOK. Asked for a code, it splits them off and leaves the password
    in PAM_AUTHTOK for the next module (use_first_pass); never asked, it changes nothing."""

    def __init__(self, pamh: Any, *, silent: bool, digits: int) -> None:
        super().__init__(pamh, silent=silent)
        self.digits = digits
        self.split_done = False
        if pamh.authtok is None:
            # Like pam_unix: a password this module prompted for is stored for the next one.
            typed = super().ask(PASSWORD_PROMPT)
            if typed is not None:
                pamh.authtok = typed

    def ask(self, prompt: str) -> str | None:
        authtok = self.pamh.authtok
        if self.split_done or authtok is None:
            return None  # one code per password field
        self.split_done = True
        self.pamh.authtok = authtok[:-self.digits]
        return authtok[-self.digits:]


def pam_sm_authenticate(pamh: Any, flags: int, argv: list[str]) -> int:
    """Get user and source, let policy decide, ask and verify, log, answer."""
    options = parse_options(argv[1:])
    sink = AuditConfig(options.syslog_socket)  # the config's socket once it is loaded
    silent = bool(flags & pamh.PAM_SILENT)
    conversation = PamConversation(pamh, silent=silent)
    user, service, rhost = "", "", None
    try:
        user, service, rhost = pamh.get_user(None) or "", pamh.service or "", pamh.rhost
        if options.problem:
            return refuse(conversation, sink, user, service, rhost,
                          f"module option: {options.problem}")
        config = load_config(options.config)
        sink = config.audit
        debug(options, sink, f"{options}; user={quote(user)} service={quote(service)} "
                             f"rhost={quote(rhost)}")
        if options.combined:
            conversation = CombinedConversation(pamh, silent=silent, digits=config.totp.digits)
        result = login(config, user, rhost, service, conversation,
                       tries=1 if options.combined else options.tries)
        code = {SUCCESS: pamh.PAM_SUCCESS, FAILURE: pamh.PAM_AUTH_ERR,
                UNAVAILABLE: pamh.PAM_AUTHINFO_UNAVAIL}.get(result.outcome, pamh.PAM_AUTH_ERR)
        debug(options, sink, f"outcome {result.outcome}: PAM code {code}")
        return code
    except ConfigError as err:  # the file, or a password file it names
        return refuse(conversation, sink, user, service, rhost, f"configuration error: {err}")
    except Exception as err:  # the one broad handler: fail closed, say where, show no values
        debug(options, sink, f"traceback, innermost first: {where(err, every_frame=True)}")
        return refuse(conversation, sink, user, service, rhost,
                      f"internal error: {type(err).__name__} at {where(err)}")


def pam_sm_setcred(pamh: Any, flags: int, argv: list[str]) -> int:
    """Nothing to set: the second factor grants no credentials."""
    return pamh.PAM_SUCCESS


def refuse(conversation: PamConversation, sink: AuditConfig, user: str, service: str,
           rhost: str | None, reason: str) -> int:
    """Fail closed when the module itself cannot decide; one audit line says why."""
    audit(sink, user=user, service=service, source=rhost or "", outcome=FAILURE,
          reason=reason, warning=True)
    conversation.error(UNAVAILABLE_MESSAGE)
    return conversation.pamh.PAM_AUTH_ERR


def where(err: BaseException, every_frame: bool = False) -> str:
    """file:line of the frame that raised (or of every frame): a location, never a value."""
    import traceback  # the error path only

    frames = traceback.extract_tb(err.__traceback__)
    chosen = frames if every_frame else frames[-1:]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(chosen))


def debug(options: Options, sink: AuditConfig, text: str) -> None:
    """With the ``debug`` option, one authpriv.debug line; facts only, never a value typed."""
    if options.debug:
        send_line(sink, DEBUG, f"debug: {text}")
