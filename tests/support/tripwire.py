"""A stand-in for a directory server that misbehaves: a TCP port that counts connections and
either closes each at once or holds it open in silence."""
from __future__ import annotations

import socket
import threading


class Tripwire:
    """A TCP port that counts connections. By default it closes each at once (a broken
    server); ``hang=True`` keeps it open and silent (a server that never answers)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.connections = 0
        self._held: list[socket.socket] = []
        self._hang = hang
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.uri = f"ldap://127.0.0.1:{self._sock.getsockname()[1]}"
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
            self.connections += 1
            if self._hang:
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._sock.close()
