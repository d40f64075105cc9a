"""utmp for the tests: the file itself, and records written the way getty and sshd write
them, through glibc's pututline (not through policy/session.py's parser, which the
records then check).

This machine has no /var/run/utmp, and sshd writes records only if the file exists, so
``utmp_file()`` creates it (root:utmp 0664, as systemd-tmpfiles does at boot) and removes
it afterwards only if it made it.
"""
from __future__ import annotations

import ctypes
import grp
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

UTMP = "/var/run/utmp"
LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS = 6, 7, 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.pututline.restype = ctypes.c_void_p


class Utmp(ctypes.Structure):
    """glibc's struct utmp on x86_64 (384 bytes)."""

    _fields_ = [("ut_type", ctypes.c_short), ("ut_pid", ctypes.c_int),
                ("ut_line", ctypes.c_char * 32), ("ut_id", ctypes.c_char * 4),
                ("ut_user", ctypes.c_char * 32), ("ut_host", ctypes.c_char * 256),
                ("ut_exit", ctypes.c_short * 2), ("ut_session", ctypes.c_int32),
                ("tv_sec", ctypes.c_int32), ("tv_usec", ctypes.c_int32),
                ("ut_addr_v6", ctypes.c_int32 * 4), ("unused", ctypes.c_char * 20)]


assert ctypes.sizeof(Utmp) == 384


@contextmanager
def utmp_file() -> Iterator[str]:
    """/var/run/utmp, created for the duration if it is missing."""
    created = False
    if not os.path.exists(UTMP):
        fd = os.open(UTMP, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
        os.fchown(fd, 0, grp.getgrnam("utmp").gr_gid)
        os.fchmod(fd, 0o664)
        os.close(fd)
        created = True
    try:
        yield UTMP
    finally:
        if created:
            os.unlink(UTMP)


def put_record(kind: int, pid: int, line: str, host: str = "", user: str = "tester",
               path: str = UTMP, age: float = 0) -> None:
    """Write (or replace, by ut_id) the record of terminal ``line`` with glibc's pututline,
    dated ``age`` seconds ago."""
    record = Utmp()
    record.ut_type, record.ut_pid = kind, pid
    record.ut_line = line.removeprefix("/dev/").encode()
    record.ut_id = record.ut_line[-4:]
    record.ut_user = user.encode()
    record.ut_host = host.encode()
    now = time.time() - age
    record.tv_sec, record.tv_usec = int(now), int(now % 1 * 1e6)
    if _libc.utmpname(path.encode()) != 0:
        raise OSError(ctypes.get_errno(), "utmpname", path)
    _libc.setutent()
    try:
        if not _libc.pututline(ctypes.byref(record)):
            raise OSError(ctypes.get_errno(), "pututline", path)
    finally:
        _libc.endutent()


@contextmanager
def record(kind: int, pid: int, line: str, host: str = "", path: str = UTMP,
           age: float = 0) -> Iterator[None]:
    """A record for the duration, then DEAD_PROCESS in its slot, as a logout leaves it."""
    put_record(kind, pid, line, host, path=path, age=age)
    try:
        yield
    finally:
        put_record(DEAD_PROCESS, pid, line, path=path)
