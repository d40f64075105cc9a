"""One syslog line per decision (facility authpriv, ident campus-mfa).

Written straight to the syslog datagram socket named in the config, so tests can listen on
their own socket. Callers pass facts only: never a code, a secret or a password.
"""
from __future__ import annotations

import os
import socket

from .config import AuditConfig

# The outcomes an audit line can carry, from the PAM module and the site alike.
SUCCESS, FAILURE, UNAVAILABLE = "success", "failure", "unavailable"

AUTHPRIV = 10
DEBUG, INFO, WARNING = 7, 6, 4
MAX_FIELD = 200    # user, service, source: whatever the caller sent, cut short
MAX_REASON = 600   # the reason names a source and a directory error: room for both


def quote(value: object, limit: int = MAX_FIELD) -> str:
    """A field as one printable, bounded token (user names can hold anything)."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def audit(config: AuditConfig, *, user: str, service: str, source: object, outcome: str,
          reason: str, warning: bool = False) -> None:
    """The line for one decision."""
    send_line(config, WARNING if warning else INFO,
              f"user={quote(user)} service={quote(service)} source={quote(source)} "
              f"outcome={outcome} reason={quote(reason, MAX_REASON)}")


def send_line(config: AuditConfig, severity: int, text: str) -> None:
    """One authpriv line; a missing syslog daemon must not turn a login into a failure."""
    message = f"<{AUTHPRIV * 8 + severity}>campus-mfa[{os.getpid()}]: {text}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(config.syslog_socket)
            sock.send(message.encode("utf-8", "replace"))
    except OSError:
        pass


# The directory that holds policy/ (the checkout, or /usr/share/campus-mfa).
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def where(err: BaseException, every_frame: bool = False) -> str:
    """file:line of the frame that raised (or of every frame): a location, never a value.
    Files of this project by their path in it (policy/authd/server.py), others by name."""
    import traceback  # the error path only

    frames = traceback.extract_tb(err.__traceback__)
    chosen = frames if every_frame else frames[-1:]
    return " <- ".join(f"{_place(f.filename)}:{f.lineno}" for f in reversed(chosen))


def _place(filename: str) -> str:
    if filename.startswith(_PROJECT + os.sep):
        return os.path.relpath(filename, _PROJECT)
    return os.path.basename(filename)
