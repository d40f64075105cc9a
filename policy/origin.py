"""Where a login without PAM_RHOST comes from: the session it was started from.

su, sudo and a console login set no PAM_RHOST. Such a login takes the source of the session
that started it, so that ``su - victim`` inside an off-campus ssh session is off campus and
on a console it is local (SECURITY.md 15). Two places know that session:

1. logind. The caller's cgroup is ``/user.slice/user-UID.slice/session-N.scope`` (a unit
   only logind creates and no user can move a process into), and /run/systemd/sessions/N,
   the file libsystemd's sd_session_get_remote_host() reads, holds REMOTE_HOST (the
   session's PAM_RHOST), REMOTE, TTY and SEAT.
2. Else utmp: the record of PAM_TTY, where sshd writes the client address (``UseDNS no``:
   the IP) and a console's getty writes no host. Setgid-utmp helpers can write utmp too
   (libutempter writes a record with any host for a pty the user owns), so a record counts
   only if it is tied to the caller by a process the user cannot be:

   - its ut_pid is the caller or one of the caller's ancestors;
   - that process runs as root (real uid 0). sshd's record carries the pid of its root
     monitor (``sshd: USER [priv]``), the parent of the session's processes; a console's
     agetty writes its own pid, which stays ``login``'s. A helper writes the pid of the
     user's own process, and su and sudo keep the user's real uid;
   - that process had started when the record was written: a record older than its
     process was written for an earlier process that had the same pid.

A remote host that is an IP literal gives that address, campus or not; no remote host on
a console tty or seat is local; everything else (no tty, no record tied to the caller, no
session, a host name, a file that cannot be read) is an unknown source: off campus.
A service name never makes a login local.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from .rules.network import Source, parse_address

UTMP = "/var/run/utmp"
PROC = "/proc"
SESSIONS = "/run/systemd/sessions"

# glibc's struct utmp on x86_64 (utmp(5)), 384 bytes: ut_type (short, padded), ut_pid,
# ut_line[32], ut_id[4], ut_user[32], ut_host[256], ut_exit (2 shorts), ut_session,
# ut_tv (2 x 32 bits; unsigned here, so that it lasts past 2038), ut_addr_v6[16], unused[20].
RECORD = struct.Struct("<h2xi32s4x32x256s4x4x2I16x20x")
LOGIN_PROCESS, USER_PROCESS = 6, 7
MAX_RECORDS = 4096      # utmp keeps one slot per terminal line; more is not a utmp file
MAX_ANCESTORS = 64
MAX_READ = 65536        # /proc and session files are small
START_SLACK = 2.0       # seconds: rounding of the start time, small clock adjustments
_SCOPE = re.compile(r"/user\.slice/user-[0-9]+\.slice/session-([A-Za-z0-9]+)\.scope")


@dataclass(frozen=True)
class UtmpRecord:
    type: int
    pid: int
    line: str     # "pts/3", "tty1": the terminal without /dev/
    host: str     # the remote host, "" for none
    time: float   # when the record was written (Unix seconds)


def session_source(tty: str | None, pid: int | None, *, utmp: str = UTMP, proc: str = PROC,
                   sessions: str = SESSIONS) -> Source:
    """The source of the session that process ``pid`` (the PAM caller: the login process
    itself, or for campus-mfa-authd its peer) was started from, on terminal ``tty``
    (PAM_TTY). Never raises: whatever cannot be read gives an unknown source."""
    if pid is None:
        return Source("", via="no calling process")
    try:
        found = logind_source(pid, proc, sessions)
        return found if found is not None else utmp_source(tty, pid, utmp, proc)
    except OSError as err:
        return Source("", via=f"{err.filename or 'session'}: {err.strerror}")
    except (ValueError, IndexError, struct.error) as err:  # a file not in its format
        return Source("", via=f"session unreadable ({type(err).__name__})")


def logind_source(pid: int, proc: str = PROC, sessions: str = SESSIONS) -> Source | None:
    """The caller's logind session as a source; None if it is in no session."""
    session = None
    for line in _read(f"{proc}/{pid}/cgroup").decode("utf-8", "replace").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "name=systemd"):  # cgroup v2, or v1's systemd hierarchy
            match = _SCOPE.fullmatch(path)
            if match:
                session = match[1]
    if session is None:
        return None
    fields = dict(line.partition("=")[::2] for line in
                  _read(f"{sessions}/{session}").decode("utf-8", "replace").splitlines())
    via = f"logind session {session}"
    if fields.get("REMOTE_HOST"):
        return _from_host(fields["REMOTE_HOST"], via)
    if fields.get("REMOTE") != "0":
        return Source("", via=f"{via}: remote without a host")
    if not (fields.get("TTY") or fields.get("SEAT")):
        return Source("", via=f"{via}: no remote host, but no tty or seat either")
    return Source("", local=True, via=f"{via}: no remote host")


def utmp_source(tty: str | None, pid: int, utmp: str = UTMP, proc: str = PROC) -> Source:
    """The source in the utmp record of ``tty`` that is tied to process ``pid``."""
    line = (tty or "").removeprefix("/dev/")
    if not line:
        return Source("", via="no tty")
    records = [record for record in read_utmp(utmp) if record.line == line
               and record.type in (LOGIN_PROCESS, USER_PROCESS)]
    if records:
        for ancestor in ancestors(pid, proc):  # the nearest record wins
            for record in records:
                if record.pid == ancestor and written_for_a_root_process(record, proc):
                    return _from_host(record.host, f"utmp record of {line}")
    return Source("", via=f"no utmp record of {line} tied to the caller")


def read_utmp(path: str = UTMP) -> list[UtmpRecord]:
    """The records of a utmp file (read-only, at most MAX_RECORDS)."""
    with open(path, "rb") as handle:
        data = handle.read(RECORD.size * MAX_RECORDS)
    records = []
    for offset in range(0, len(data) - RECORD.size + 1, RECORD.size):
        kind, pid, line, host, seconds, micros = RECORD.unpack_from(data, offset)
        records.append(UtmpRecord(kind, pid, _text(line), _text(host), seconds + micros / 1e6))
    return records


def ancestors(pid: int, proc: str = PROC) -> list[int]:
    """``pid`` and its parents, nearest first, up to (not including) PID 0."""
    chain: list[int] = []
    while pid > 0 and len(chain) < MAX_ANCESTORS:
        chain.append(pid)
        pid = _stat(proc, pid)[0]
    return chain


def written_for_a_root_process(record: UtmpRecord, proc: str = PROC) -> bool:
    """Whether the record's process runs as root (real uid) and is not younger than the
    record (see the module docstring)."""
    if _real_uid(proc, record.pid) != 0:
        return False
    started = _boot_time(proc) + _stat(proc, record.pid)[1] / os.sysconf("SC_CLK_TCK")
    return started <= record.time + START_SLACK


def _from_host(host: str, via: str) -> Source:
    if not host:
        return Source("", local=True, via=f"{via}: no remote host")
    return Source(host, address=parse_address(host), via=via)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_READ)


def _stat(proc: str, pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks after boot) from /proc/PID/stat."""
    data = _read(f"{proc}/{pid}/stat")
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) ", comm may hold ")"
    return int(fields[1]), int(fields[19])


def _real_uid(proc: str, pid: int) -> int:
    for line in _read(f"{proc}/{pid}/status").splitlines():
        if line.startswith(b"Uid:"):
            return int(line.split()[1])
    raise ValueError("no Uid line")


def _boot_time(proc: str) -> int:
    for line in _read(f"{proc}/stat").splitlines():
        if line.startswith(b"btime "):
            return int(line.split()[1])
    raise ValueError("no btime line")
