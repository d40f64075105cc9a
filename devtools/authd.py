"""campus-mfa-authd on a socket of its own, for the tests, the benchmark and the demo."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .pamtester import clean_env

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"


class AuthdProcess:
    """``python3 -m policy.authd`` on a socket of its own (in a new directory under /tmp
    unless ``path`` is given); stop() ends it. What it reports on stderr once it listens
    is kept in ``reports`` (and handed to ``echo``, if given)."""

    def __init__(self, path: str | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="cmfa-authd-", dir="/tmp")
        self.path = path or os.path.join(self.dir, "authd.sock")
        self.proc = subprocess.Popen([PYTHON, "-m", "policy.authd", "--socket", self.path],
                                     cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=clean_env())
        self.pid = self.proc.pid
        ready = self.proc.stderr.readline()
        if f"listening on {self.path}" not in ready:
            self.proc.kill()
            raise RuntimeError(f"authd did not start: {ready}{self.proc.stderr.read()}")
        # What it reports later (internal errors), read as it comes so the pipe never fills.
        self.reports: list[str] = []
        self._echo = echo
        self._reader = threading.Thread(target=self._read_reports, daemon=True)
        self._reader.start()

    def _read_reports(self) -> None:
        for line in self.proc.stderr:
            self.reports.append(line)
            if self._echo is not None:
                self._echo(line)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        finally:
            self._reader.join(timeout=10)
            self.proc.stderr.close()
            shutil.rmtree(self.dir, ignore_errors=True)
