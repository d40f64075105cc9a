"""A syslog socket of our own: the tests, the benchmark and the demo point
``audit.syslog_socket`` at it and read the lines campus-mfa writes; and the one parser of
those lines."""
from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

AUTHPRIV_INFO, AUTHPRIV_WARNING, AUTHPRIV_DEBUG = "<86>", "<84>", "<87>"
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_PID = re.compile(r"<\d+>campus-mfa\[(\d+)\]: ")
_MARK = "\0flush "  # a datagram no syslog client sends: see SyslogListener.flush


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
    """A datagram socket bound where the config sends syslog lines; collects them in
    ``lines`` (and hands each to ``echo``, if given, as it comes)."""

    def __init__(self, path: str, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.lines: list[str] = []
        self._echo = echo
        self._marks: set[str] = set()
        self._arrived = threading.Condition()
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
            line = data.decode("utf-8", "replace")
            with self._arrived:
                if line.startswith(_MARK):
                    self._marks.add(line)
                else:
                    self.lines.append(line)
                self._arrived.notify_all()
            if self._echo is not None and not line.startswith(_MARK):
                self._echo(line)

    def flush(self, timeout: float = 5.0) -> None:
        """Return once every line sent before this call is in ``lines``: a socket delivers
        datagrams in order, so a mark sent now arrives after all of them. What a process
        that has ended wrote is then all there, without waiting on a clock for it."""
        mark = _MARK + secrets.token_hex(8)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(mark.encode(), self.path)
        with self._arrived:
            if not self._arrived.wait_for(lambda: mark in self._marks, timeout):
                raise TimeoutError(f"{self.path}: the listener did not read its own mark")
            self._marks.discard(mark)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        """The lines once at least ``count`` arrived (datagrams are delivered promptly)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.lines)

    def audit_lines(self) -> list[str]:
        return [line for line in self.lines if not line.startswith(AUTHPRIV_DEBUG)]

    def about(self, user: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The audit lines (no debug lines) about ``user``: once ``count`` arrived (or
        ``timeout`` passed), and everything sent until then. ``count=0`` waits for nothing:
        what has arrived, enough to prove that a process which has ended wrote no line."""
        def found() -> list[str]:
            return [line for line in self.audit_lines() if f" user={user} " in line]
        with self._arrived:
            self._arrived.wait_for(lambda: len(found()) >= count, timeout)
        self.flush()
        return found()

    def line_with(self, fragment: str, timeout: float = 5.0) -> str:
        """The first line that contains ``fragment``, once it arrived."""
        def found() -> list[str]:
            return [line for line in self.lines if fragment in line]
        with self._arrived:
            if not self._arrived.wait_for(found, timeout):
                raise AssertionError(f"no line with {fragment!r} in {self.lines}")
            return found()[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)
