"""Two small TCP servers of the tests, each a listening socket whose connections a thread
takes: a ``Tripwire`` that stands in for a directory server that misbehaves, and a ``Relay``
that carries LDAP into a network namespace."""
from __future__ import annotations

import socket
import threading

from support.netns import entered


class _Acceptor:
    """Accepts on ``sock`` in a thread and hands each connection to ``handle``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


class Tripwire(_Acceptor):
    """A TCP port that counts connections. By default it closes each at once (a broken
    server); ``hang=True`` keeps it open and silent (a server that never answers)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.connections = 0
        self._held: list[socket.socket] = []
        self._hang = hang
        sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.uri = f"ldap://127.0.0.1:{sock.getsockname()[1]}"
        super().__init__(sock)

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1
        if self._hang:
            self._held.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        super().close()
        for conn in self._held:
            conn.close()


class Relay(_Acceptor):
    """127.0.0.1:``port`` inside ``netns`` -> 127.0.0.1:``target`` here. When the target
    refuses, the accepted connection is reset, as a stopped slapd would do."""

    def __init__(self, netns: str, target: int, port: int = 389) -> None:
        self.target = target
        self._sockets: list[socket.socket] = []
        with entered(netns):  # the listening socket stays in the namespace it was made in
            sock = socket.create_server(("127.0.0.1", port))
        super().__init__(sock)

    def handle(self, down: socket.socket) -> None:
        try:
            up = socket.create_connection(("127.0.0.1", self.target), timeout=2)
        except OSError:
            down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            down.close()
            return
        up.settimeout(None)
        down.settimeout(None)
        self._sockets += [up, down]
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        super().close()
        for sock in self._sockets:
            sock.close()
