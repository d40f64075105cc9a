"""Who is at the other end of a unix socket, as the kernel saw it connect (SO_PEERCRED):
the authd asks it of the module, the module of the authd. Built on ``_socket``, the C module
under ``socket``, which every login can afford to import."""
import sys

import _socket

_UCRED = 12  # struct ucred: pid, uid, gid, each a 32-bit int


def peer_credentials(sock: object) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of ``sock`` (a socket.socket or a
    _socket.socket)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED)  # type: ignore[attr-defined]
    return (int.from_bytes(raw[0:4], sys.byteorder, signed=True),
            int.from_bytes(raw[4:8], sys.byteorder, signed=True))
