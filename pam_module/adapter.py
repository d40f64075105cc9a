"""The PAM adapter behind pam_campus_mfa.py: PAM items (user, service, rhost, the
conversation and, in ``combined`` mode, PAM_AUTHTOK) go in; one call to
policy.login.login() decides, prompts, verifies and writes the audit line; its outcome
comes back as a PAM code. That call runs in the resident authd (policy/authd.py) when
its socket answers, with this module relaying the conversation, and here otherwise.
PAM_TTY goes along: a login without PAM_RHOST takes the source of the session on that
terminal (policy/session.py), tied to the calling process: this one here, the peer of
the socket in the authd.
Options (docs/pam.md, "Options"): config=PATH, tries=N, combined, debug,
syslog_socket=PATH, authd=PATH|off.

Every login pays for what this module imports at the top, so policy's modules are
imported only on the path that does the work here.
"""
import os
import sys
from collections import namedtuple

import policy

PASSWORD_PROMPT = "Password: "
MAX_TRIES = 10
# Seconds for authd to take the request: a stuck authd delays a login by this much, then
# the module works alone (campus logins must not depend on authd any more than on LDAP).
ACK_TIMEOUT = 5
AUTHD_TIMEOUT = 120  # seconds without a word from authd later on (LDAP timeouts are shorter)


# The module arguments on the PAM line, after the module path. combined: password and
# code in one PAM_AUTHTOK; syslog_socket: for lines written without a config; authd: its
# socket, or "off"; problem: the first bad argument (the module then fails closed).
Options = namedtuple("Options", "config tries combined debug syslog_socket authd problem",
                     defaults=(policy.DEFAULT_CONFIG, 3, False, False, policy.DEFAULT_SYSLOG,
                               policy.AUTHD_SOCKET, ""))


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
        if pamh.authtok is None:
            # Like pam_unix: a password this module prompted for is stored for the next one.
            typed = super().ask(PASSWORD_PROMPT)
            if typed is not None:
                pamh.authtok = typed

    def ask(self, prompt: str, digits: int = 0) -> str | None:
        authtok = self.pamh.authtok
        if self.split_done or authtok is None or digits < 1:
            return None  # one code per password field
        self.split_done = True
        self.pamh.authtok = authtok[:-digits]
        return authtok[-digits:]


class AuthdFailed(Exception):
    """The authd broke off after part of the conversation had reached the user."""


def pam_sm_authenticate(pamh, flags: int, argv: list[str]) -> int:
    """Get user and source, let policy decide, ask and verify, log, answer."""
    options = parse_options(argv[1:])
    sink = options.syslog_socket  # the config's socket once it is loaded
    silent = bool(flags & pamh.PAM_SILENT)
    conversation = PamConversation(pamh, silent=silent)
    user, service, rhost = "", "", None
    try:
        user, service, rhost = pamh.get_user(None) or "", pamh.service or "", pamh.rhost
        tty = pamh.tty
        if options.problem:
            return refuse(conversation, sink, user, service, rhost,
                          f"module option: {options.problem}")
        if options.combined:
            conversation = CombinedConversation(pamh, silent=silent)
        if options.authd != "off" and not options.debug:  # debug: every step here, logged
            outcome = ask_authd(options, user, service, rhost, tty, conversation)
            if outcome is not None:
                return pam_code(pamh, outcome)
        from policy.audit import quote
        from policy.config import load_config
        from policy.login import login

        config = load_config(options.config)
        sink = config.audit.syslog_socket
        debug(options, sink, f"{options}; user={quote(user)} service={quote(service)} "
                             f"rhost={quote(rhost)}")
        result = login(config, user, rhost, service, conversation,
                       tries=1 if options.combined else options.tries, tty=tty,
                       pid=os.getpid())
        code = pam_code(pamh, result.outcome)
        debug(options, sink, f"outcome {result.outcome}: PAM code {code}")
        return code
    except policy.ConfigError as err:  # the file, or a password file it names
        return refuse(conversation, sink, user, service, rhost, f"configuration error: {err}")
    except AuthdFailed as err:
        from policy.config import load_config

        try:  # the line goes where the config sends lines, if it can be read
            sink = load_config(options.config).audit.syslog_socket
        except policy.ConfigError:
            pass  # then to the option's socket
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


def ask_authd(options: Options, user: str, service: str, rhost: str | None,
              tty: str | None, conversation: PamConversation) -> str | None:
    """Let the resident authd (policy/authd.py, which documents the protocol) run the
    login, relaying its prompts and messages. None: no authd answered before anything
    reached the user, so this module does the work itself. AuthdFailed: the authd broke
    off later, and the login fails closed."""
    import _socket  # the C module under `socket`, whose Python layer costs more to import

    from policy.wire import pack, unpack

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    relayed = False
    try:
        sock.settimeout(ACK_TIMEOUT)
        try:
            sock.connect(options.authd)
            creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            if int.from_bytes(creds[4:8], sys.byteorder) != 0:
                return None  # not root's authd: never talk to it
        except OSError:
            return None  # no authd here (or not for this process): work alone
        # MSG_NOSIGNAL: an authd that died must not kill the host process with SIGPIPE
        # (pam_python leaves the host's signal handling alone, and its default is to die).
        sock.sendall(pack("login", options.config, user, service, rhost, tty,
                          str(options.tries), "1" if options.combined else "0"),
                     _socket.MSG_NOSIGNAL)
        if unpack(sock.recv) != ["ack"]:
            return None
        sock.settimeout(AUTHD_TIMEOUT)
        while True:
            message = unpack(sock.recv)
            kind, fields = message[0], message[1:]
            if kind == "outcome" and len(fields) == 1:
                return fields[0]
            if kind == "retry" and not relayed:
                return None
            relayed = True
            if kind == "ask" and len(fields) == 2 and fields[1].isdigit():
                sock.sendall(pack("answer", conversation.ask(fields[0], int(fields[1]))),
                             _socket.MSG_NOSIGNAL)
            elif kind == "error" and len(fields) == 1:
                conversation.error(fields[0])
            else:
                raise AuthdFailed("unexpected message")
    except (OSError, ValueError) as err:  # WireError is a ValueError
        if not relayed:
            return None
        raise AuthdFailed(f"{type(err).__name__} mid-conversation") from None
    finally:
        sock.close()


def refuse(conversation: PamConversation, sink: str, user: str, service: str,
           rhost: str | None, reason: str) -> int:
    """Fail closed when the module itself cannot decide; one audit line says why."""
    from policy.audit import audit
    from policy.config import AuditConfig
    from policy.login import FAILURE, UNAVAILABLE_MESSAGE

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
