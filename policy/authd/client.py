"""The PAM module's side of campus-mfa-authd (policy/authd/server.py documents the frames):
hand the login over, relay the authd's prompts and messages to the PAM conversation, and
bring back the outcome. Imports only what every login can afford."""
import _socket

from .peer import peer_credentials
from .wire import pack, unpack

# Seconds for authd to take the request: a stuck authd delays a login by this much, then
# the module works alone (campus logins must not depend on authd any more than on LDAP).
ACK_TIMEOUT = 5
AUTHD_TIMEOUT = 120  # seconds without a word from authd later on (LDAP timeouts are shorter)


class AuthdFailed(Exception):
    """The authd broke off after part of the conversation had reached the user."""


def ask_authd(socket_path: str, request: tuple, conversation: object) -> str | None:
    """Let the authd on ``socket_path`` run the login described by ``request`` (the fields
    after "login": config, user, service, rhost, tty, tries, combined). The outcome, or None
    when no authd took it before anything reached the user (the module then does the work
    itself); AuthdFailed when the authd broke off later (the login fails closed)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    relayed = False
    try:
        sock.settimeout(ACK_TIMEOUT)
        try:
            sock.connect(socket_path)
            if peer_credentials(sock)[1] != 0:
                return None  # not root's authd: never talk to it
        except OSError:
            return None  # no authd here (or not for this process): work alone
        # MSG_NOSIGNAL: an authd that died must not kill the host process with SIGPIPE
        # (pam_python leaves the host's signal handling alone, and its default is to die).
        sock.sendall(pack("login", *request), _socket.MSG_NOSIGNAL)
        if unpack(sock.recv) != ["ack"]:
            return None
        sock.settimeout(AUTHD_TIMEOUT)
        while True:
            kind, *fields = unpack(sock.recv)
            if kind == "outcome" and len(fields) == 1:
                return fields[0]
            if kind == "retry" and not relayed:
                return None
            relayed = True
            if kind == "ask" and len(fields) == 2 and fields[1].isdigit():
                answer = conversation.ask(fields[0], int(fields[1]))  # type: ignore[attr-defined]
                sock.sendall(pack("answer", answer), _socket.MSG_NOSIGNAL)
            elif kind == "error" and len(fields) == 1:
                conversation.error(fields[0])  # type: ignore[attr-defined]
            else:
                raise AuthdFailed("unexpected message")
    except (OSError, ValueError) as err:  # WireError is a ValueError
        if not relayed:
            return None
        raise AuthdFailed(f"{type(err).__name__} mid-conversation") from None
    finally:
        sock.close()
