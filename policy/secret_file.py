"""Password and key files: read only when they are private (SECURITY.md 17)."""
from __future__ import annotations

import errno
import os
import stat

from .errors import ConfigError


def read_secret_file(path: str, key: str) -> str:
    """Return the first line of a password or key file; errors name the key, never the value.

    The file must be a regular file (a symbolic link is not followed), owned by root or by
    the user reading it, writable by its owner only and readable by no one outside its
    group (the site's group may read the bind password files)."""
    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"{key} = {path!r}: {problem}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise refuse("is a symbolic link; name the file itself") from None
        raise refuse(f"cannot read: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refuse("is not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise refuse(f"is owned by uid {info.st_uid}, not by root or by the user reading "
                         f"it (uid {os.geteuid()})")
        if info.st_mode & 0o022:
            raise refuse(f"is writable by its group or others (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); chmod 0640 or 0600")
        if info.st_mode & 0o004:
            raise refuse(f"is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                         "chmod 0640 or 0600")
        line = os.read(fd, 4096).partition(b"\n")[0]
    finally:
        os.close(fd)
    try:
        value = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise refuse("cannot read: not UTF-8 text") from None
    if not value:
        raise refuse("the file is empty")
    return value
