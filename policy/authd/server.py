"""campus-mfa-authd: the PAM module's work done in one resident process.

pam_python starts a new interpreter for every authentication, so a module that parses the
configuration and imports ldap3 each time pays for that on every login. The authd (the
nslcd/sssd pattern) keeps the parsed configuration and the imports, and runs the very same
policy.login.login() for the module, which only relays its PAM conversation. Frames
(policy/authd/wire.py), first field the kind; the module's side is policy/authd/client.py:

    module -> authd   login CONFIG USER SERVICE RHOST|None TTY|None TRIES COMBINED(0|1)
    authd -> module   ack                     at once: the request is taken (or the module,
                                              after a few seconds, works alone)
                      ask PROMPT DIGITS       the module answers: answer TEXT|None
                      error TEXT              shown to the user, no answer
                      outcome success|failure|unavailable      the end
                      retry REASON            the module does the work itself

The socket is root's alone (mode 0600 in a root-owned directory) and the authd also
checks that the peer runs as root: it answers only the PAM stacks of root processes.
A login without RHOST takes the source of the session on TTY that the calling process was
started from (policy/origin.py); the calling process is the socket's peer
(SO_PEERCRED), never a pid the request names.
``retry`` comes only before anything reached the user (the configuration cannot be read),
so the module can start over on its own and meet the same error itself. A module that
cannot reach the authd works alone, only slower.

    python3 -m policy.authd [--socket PATH]        (Debian: campus-mfa-authd.service)
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import stat
import sys
import threading

from ..audit import where
from ..config import Config, load_config
from ..defaults import AUTHD_SOCKET, MAX_TRIES
from ..directory.connection import unbind
from ..directory.pool import ConnectionPool
from ..errors import ConfigError
from ..login import login
from .peer import peer_credentials
from .wire import WireError, pack, unpack

IDLE_SECONDS = 300         # the longest wait for the module (a person typing a code)
TRIES = tuple(str(n) for n in range(1, MAX_TRIES + 1))


class ProtocolError(Exception):
    """The peer sent something that is not this protocol."""


class Configs:
    """Parsed configurations by path, read again when the file changes (no reload signal
    to forget: an edit counts from the next login, as it does without the authd), each
    with a pool of the service DN's bound connections (policy/directory/pool.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, Config, ConnectionPool]] = {}

    def get(self, path: str) -> tuple[Config, ConnectionPool]:
        try:
            st = os.stat(path)
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
        config = load_config(path)
        pool = ConnectionPool(config.ldap.uris)
        with self._lock:
            old = self._cache.get(path)
            self._cache[path] = (key, config, pool)
        if old is not None:  # an edit: the old configuration's connections go
            for idle in old[2].close():
                unbind(idle.conn)
        return config, pool


def parse_request(fields: list) -> tuple[str, str, str, str | None, str | None, int, bool]:
    """The request's fields, each of the right type, or ProtocolError."""
    if len(fields) != 8 or fields[0] != "login" or None in fields[1:4] + fields[6:]:
        raise ProtocolError("malformed request")
    _, config, user, service, rhost, tty, tries, combined = fields
    if not (os.path.isabs(config) and tries in TRIES and combined in ("0", "1")):
        raise ProtocolError("malformed request")
    return config, user, service, rhost, tty, int(tries), combined == "1"


class Relay:
    """policy.login's Conversation, carried over the socket to the module."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.relayed = False  # something reached the user: no more "retry"

    def ask(self, prompt: str, digits: int) -> str | None:
        self.relayed = True
        self.handler.send("ask", prompt, str(digits))
        answer = unpack(self.handler.rfile.read)
        if len(answer) != 2 or answer[0] != "answer":
            raise ProtocolError("expected an answer")
        return answer[1]

    def error(self, text: str) -> None:
        self.relayed = True
        self.handler.send("error", text)


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def send(self, *fields: str) -> None:
        self.wfile.write(pack(*fields))

    def handle(self) -> None:
        pid, uid = peer_credentials(self.request)
        if uid != 0:
            return  # not a root process: no answer at all
        self.request.settimeout(IDLE_SECONDS)
        try:
            path, user, service, rhost, tty, tries, combined = parse_request(
                unpack(self.rfile.read))
            self.send("ack")  # before any work: a request the module gave up on fails here
            relay = Relay(self)
            try:
                config, pool = self.server.configs.get(path)
                result = login(config, user, rhost, service, relay,
                               tries=1 if combined else tries, tty=tty, pid=pid, pool=pool)
            except ConfigError:
                # The file, or a password file it names: the module meets the same error
                # itself and writes the line that names it. After a prompt, fail closed.
                if relay.relayed:
                    raise
                self.send("retry", "configuration error")
                return
            self.send("outcome", result.outcome)
        except (ProtocolError, WireError, OSError):
            return  # the module fails closed (or works alone if nothing was relayed yet)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256   # a burst of logins waits to be accepted rather than refused

    def handle_error(self, request: object, client_address: object) -> None:
        """A login that raised: one line with the type and the place, never the message,
        which may hold a value that was typed (the module then fails closed, or works
        alone if nothing was relayed yet)."""
        err = sys.exc_info()[1]
        print(f"campus-mfa-authd: internal error: {type(err).__name__} at "
              f"{where(err, every_frame=True)}", file=sys.stderr, flush=True)

    def __init__(self, path: str) -> None:
        self.configs = Configs()
        self.path = path
        remove_stale(path)
        old = os.umask(0o177)  # srw------- from the start, not after a chmod
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)


def remove_stale(path: str) -> None:
    """A socket left by an authd that was killed goes; a live authd's socket, or anything
    that is not a socket, stays, and this authd does not start."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SystemExit(f"campus-mfa-authd: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody listens there
            return
    raise SystemExit(f"campus-mfa-authd: another authd answers on {path}")


def remove_own(path: str, inode: int) -> None:
    """Unlink the socket at exit, unless it is no longer the one this authd made."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campus-mfa-authd",
                                     description="Answer campus-mfa's PAM module.")
    parser.add_argument("--socket", default=AUTHD_SOCKET, help=f"(default {AUTHD_SOCKET})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server(args.socket)
    inode = os.lstat(args.socket).st_ino
    print(f"campus-mfa-authd: listening on {args.socket}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        remove_own(args.socket, inode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
