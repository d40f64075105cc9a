"""The PAM adapter behind pam_campus_mfa.py: the module's options, the two conversations
(prompts, or password and code in one field), the choice between campus-mfa-authd and
doing the work here, and PAM codes. PAM items (user, service, rhost, tty) go in; one call
to policy.login.login() -- in the authd when its socket answers (policy/authd/client.py
relays the conversation), here otherwise -- decides, prompts, verifies and writes the
audit line; its outcome comes back as a PAM code.
Options (docs/pam.md, "Options"): config=PATH, tries=N, combined, debug, syslog_socket=PATH,
authd=PATH|off.

Every login pays for what this module imports at the top, so policy's modules are
imported only on the path that does the work here.
"""
import os
from collections import namedtuple

from policy.authd.client import AuthdFailed, ask_authd
from policy.defaults import AUTHD_SOCKET, DEFAULT_CONFIG, DEFAULT_SYSLOG, MAX_TRIES
from policy.errors import ConfigError

# The module arguments on the PAM line, after the module path. combined: password and
# code in one PAM_AUTHTOK; syslog_socket: where lines go when the module has no config of
# its own (a bad option or config, the authd broke off); authd: its socket, or "off";
# problem: the first bad argument (the module then fails closed).
Options = namedtuple("Options", "config tries combined debug syslog_socket authd problem",
                     defaults=(DEFAULT_CONFIG, 3, False, False, DEFAULT_SYSLOG, AUTHD_SOCKET,
                               ""))


def parse_options(args: list[str]) -> Options:
    """Parse ``name`` and ``name=value`` arguments; anything unknown, repeated or malformed
    is recorded in ``problem`` (parsing goes on so that syslog_socket= still counts)."""
    values: dict = {}
    problem = ""
    for arg in args:
        name, equals, value = arg.partition("=")
        error = ""
        if name in values:
            error = f"option {name} given twice"
        elif name in ("combined", "debug") and not equals:
            values[name] = True
        elif name == "authd" and value == "off":
            values[name] = value
        elif name in ("config", "syslog_socket", "authd") and equals:
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

    def __init__(self, pamh, *, silent: bool) -> None:
        self.pamh = pamh
        self.silent = silent  # PAM_SILENT: prompts still happen, messages do not

    def ask(self, prompt: str, digits: int = 0) -> str | None:
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
    characters of PAM_AUTHTOK (the token's code length, which comes with the question).
    Asked for a code, it splits them off and leaves the password in PAM_AUTHTOK for the
    next module (use_first_pass); never asked, it changes nothing."""

    def __init__(self, pamh, *, silent: bool) -> None:
        super().__init__(pamh, silent=silent)
        self.split_done = False

    def read_password(self) -> None:
        """Like pam_unix: ask for the field if no module before did, and keep the answer
        in PAM_AUTHTOK for the next one."""
        if self.pamh.authtok is None:
            from policy.messages import PASSWORD_PROMPT

            typed = super().ask(PASSWORD_PROMPT)
            if typed is not None:
                self.pamh.authtok = typed

    def ask(self, prompt: str, digits: int = 0) -> str | None:
        authtok = self.pamh.authtok
        if self.split_done or authtok is None or digits < 1:
            return None  # one code per password field
        self.split_done = True
        self.pamh.authtok = authtok[:-digits]
        return authtok[-digits:]


def pam_sm_authenticate(pamh, flags: int, argv: list[str]) -> int:
    """Get user and source, let policy decide, ask and verify, log, answer."""
    options = parse_options(argv[1:])
    sink = options.syslog_socket  # the config's socket once this module loads it
    silent = bool(flags & pamh.PAM_SILENT)
    conversation = PamConversation(pamh, silent=silent)
    user, service, rhost = "", "", None
    try:
        user, service, rhost = pamh.get_user(None) or "", pamh.service or "", pamh.rhost
        tty = pamh.tty
        if options.problem:
            return refuse(conversation, sink, user, service, rhost,
                          f"module option: {options.problem}")
        tries = options.tries
        if options.combined:
            conversation = CombinedConversation(pamh, silent=silent)
            conversation.read_password()
            tries = 1  # one code per password field
        if options.authd != "off" and not options.debug:  # debug: every step here, logged
            outcome = ask_authd(options.authd, (options.config, user, service, rhost, tty,
                                                str(tries), "1" if options.combined else "0"),
                                conversation)
            if outcome is not None:
                return pam_code(pamh, outcome)
        from policy.audit import quote
        from policy.config import load_config
        from policy.login import login

        config = load_config(options.config)
        sink = config.audit.syslog_socket
        debug(options, sink, f"{options}; user={quote(user)} service={quote(service)} "
                             f"rhost={quote(rhost)}")
        result = login(config, user, rhost, service, conversation, tries=tries, tty=tty,
                       pid=os.getpid())
        code = pam_code(pamh, result.outcome)
        debug(options, sink, f"outcome {result.outcome}: PAM code {code}")
        return code
    except ConfigError as err:  # the file, or a password file it names
        return refuse(conversation, sink, user, service, rhost, f"configuration error: {err}")
    except AuthdFailed as err:  # its line goes to syslog_socket=: the config is not loaded
        return refuse(conversation, sink, user, service, rhost, f"authd: {err}")
    except Exception as err:  # the one broad handler: fail closed, say where, show no values
        from policy.audit import where

        debug(options, sink, f"traceback, innermost first: {where(err, every_frame=True)}")
        return refuse(conversation, sink, user, service, rhost,
                      f"internal error: {type(err).__name__} at {where(err)}")


def pam_sm_setcred(pamh, flags: int, argv: list[str]) -> int:
    """Nothing to set: the second factor grants no credentials."""
    return pamh.PAM_SUCCESS


def pam_code(pamh, outcome: str) -> int:
    """policy.login's outcome as a PAM code; anything unexpected refuses."""
    return {"success": pamh.PAM_SUCCESS, "failure": pamh.PAM_AUTH_ERR,
            "unavailable": pamh.PAM_AUTHINFO_UNAVAIL}.get(outcome, pamh.PAM_AUTH_ERR)


def refuse(conversation: PamConversation, sink: str, user: str, service: str,
           rhost: str | None, reason: str) -> int:
    """Fail closed when the module itself cannot decide; one audit line says why."""
    from policy.audit import FAILURE, audit
    from policy.config import AuditConfig
    from policy.messages import UNAVAILABLE_MESSAGE

    audit(AuditConfig(sink), user=user, service=service, source=rhost or "",
          outcome=FAILURE, reason=reason, warning=True)
    conversation.error(UNAVAILABLE_MESSAGE)
    return conversation.pamh.PAM_AUTH_ERR


def debug(options: Options, sink: str, text: str) -> None:
    """With the ``debug`` option, one authpriv.debug line; facts only, never a value typed."""
    if options.debug:
        from policy.audit import DEBUG, send_line
        from policy.config import AuditConfig

        send_line(AuditConfig(sink), DEBUG, f"debug: {text}")
