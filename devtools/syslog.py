"""A syslog socket of our own: the tests, the benchmark and the demo point
``audit.syslog_socket`` at it and read the lines campus-mfa writes; and the one parser of
those lines."""
from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

AUTHPRIV_INFO, AUTHPRIV_WARNING, AUTHPRIV_DEBUG = "<86>", "<84>", "<87>"
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_PID = re.compile(r"<\d+>campus-mfa\[(\d+)\]: ")


def parse_audit(line: str) -> dict[str, str]:
    """The fields of one audit line, with quoted values unquoted."""
    fields = {}
    for key, value in _FIELD.findall(line.split(": ", 1)[1]):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').encode("ascii").decode("unicode_escape")
        fields[key] = value
    return fields


def audit_pid(line: str) -> int | None:
    """The pid in a line's tag: the process that decided."""
    found = _PID.match(line)
    return int(found[1]) if found else None


class SyslogListener:
    """A datagram socket bound where the config sends syslog lines; collects them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.append(data.decode("utf-8", "replace"))

    def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        """The lines once at least ``count`` arrived (datagrams are delivered promptly)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.lines)

    def audit_lines(self) -> list[str]:
        return [line for line in self.lines if not line.startswith(AUTHPRIV_DEBUG)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)
