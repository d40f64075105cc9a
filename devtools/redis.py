"""A throwaway redis-server (Debian's) on a unix socket of its own, for the tests and the
benchmark of a site that runs as several processes: they share sessions and rate limits
through it (web.session_store, web.rate_limit_storage)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .commands import stop_process


class RedisServer:
    """``redis-server`` in the foreground: no TCP port, no persistence; stop() ends it and
    removes its directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cmfa-redis-", dir="/tmp"))
        self.socket = self.dir / "redis.sock"
        self.log = open(self.dir / "redis.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def session_url(self) -> str:
        """For web.session_store (redis-py's URL form)."""
        return f"unix://{self.socket}?db=0"

    @property
    def limits_url(self) -> str:
        """For web.rate_limit_storage (Flask-Limiter's URL form)."""
        return f"redis+unix://{self.socket}"

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
