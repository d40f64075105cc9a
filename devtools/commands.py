"""Run a command the tests, the demo or a throwaway slapd need, and fail with what it said;
run this tree's admin command; stop a process; find a free port on loopback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, input: str | None = None, timeout: float = 60) -> str:
    """Run ``args``; return its output, or raise RuntimeError with everything it printed."""
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    return done.stdout


def campus_mfa(config: str | Path, *args: str, stdin: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """campus-mfa, the admin command (``python3 -m policy`` from this tree), on ``config``:
    its exit status and what it printed."""
    return subprocess.run(["/usr/bin/python3", "-m", "policy", "--config", str(config), *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def stop_process(proc: subprocess.Popen, how: int = signal.SIGTERM, timeout: float = 10, *,
                 group: bool = False) -> int:
    """Send ``how`` to ``proc`` (if it still runs), wait up to ``timeout`` seconds, then kill
    it; its exit status. ``group``: to its whole process group (a gunicorn master and its
    workers, started with start_new_session)."""
    if proc.poll() is None:
        signal_it = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
        signal_it(how)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_it(signal.SIGKILL)
    return proc.wait()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not LISTEN
        try:
            sock.bind(("127.0.0.1", port))
        except (OSError, OverflowError):
            return False
    return True
