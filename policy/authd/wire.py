"""The frames that the PAM module and the authd exchange (policy/authd.py).

A frame is a 4-byte big-endian length and that many bytes: fields separated by NUL, each
``s`` + UTF-8 text or ``n`` for None. PAM hands over C strings, which cannot hold a NUL.
No imports: the PAM module loads this on every login (json would cost more than all the
rest of a campus login).
"""
MAX_FRAME = 16384


class WireError(ValueError):
    """Not a frame of this format (or too long)."""


def pack(*fields: str | None) -> bytes:
    parts = []
    for field in fields:
        if field is None:
            parts.append(b"n")
        elif "\0" in field:
            raise WireError("a field holds a NUL")
        else:
            parts.append(b"s" + field.encode("utf-8", "surrogateescape"))
    payload = b"\0".join(parts)
    if len(payload) > MAX_FRAME:
        raise WireError("frame too long")
    return len(payload).to_bytes(4, "big") + payload


def unpack(read) -> list[str | None]:
    """The fields of the next frame; ``read(n)`` returns up to n bytes, b"" at the end."""
    size = int.from_bytes(_exactly(read, 4), "big")
    if size > MAX_FRAME:
        raise WireError("frame too long")
    fields: list[str | None] = []
    for part in _exactly(read, size).split(b"\0"):
        if part == b"n":
            fields.append(None)
        elif part[:1] == b"s":
            fields.append(part[1:].decode("utf-8", "surrogateescape"))
        else:
            raise WireError("bad field")
    return fields


def _exactly(read, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = read(size - len(data))
        if not chunk:
            raise WireError("connection closed mid-frame")
        data += chunk
    return data
