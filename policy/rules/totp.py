"""TOTP rules (RFC 6238): secrets, the otpauth URI, strict code parsing, verification.

Codes are computed by pyotp; every candidate in the window is compared in constant time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

SECRET_BYTES = 20       # 160 bits, RFC 4226 R6
MAX_CODE_INPUT = 64     # longer input is refused before it is looked at


@dataclass(frozen=True)
class TotpParams:
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30
    window: int = 1     # steps accepted either side of now (RFC 6238 section 5.2)


def new_secret() -> bytes:
    """A fresh random secret of 160 bits."""
    return secrets.token_bytes(SECRET_BYTES)


def to_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32 without padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def from_base32(text: str) -> bytes:
    """Decode a base32 secret typed or pasted by a person (spaces, lower case, no padding)."""
    compact = "".join(text.split()).upper()
    if not compact or len(compact) > 1024:
        raise ValueError("the secret must be 1 to 1024 base32 characters")
    try:
        secret = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except ValueError:
        raise ValueError("the secret is not valid base32") from None
    if len(secret) < 16:
        raise ValueError("the secret must be at least 128 bits (26 base32 characters)")
    return secret


def grouped(text: str, size: int = 4) -> str:
    """'ABCDEFGH' -> 'ABCD EFGH', for typing a key by hand."""
    return " ".join(text[i:i + size] for i in range(0, len(text), size))


def provisioning_uri(secret: bytes, username: str, issuer: str, params: TotpParams) -> str:
    """The Key URI an app scans; algorithm, digits and period appear only when not default."""
    label = quote(f"{issuer}:{username}", safe=":@")
    query = {"secret": to_base32(secret), "issuer": issuer}
    if params.algorithm != "SHA1":
        query["algorithm"] = params.algorithm
    if params.digits != 6:
        query["digits"] = str(params.digits)
    if params.period != 30:
        query["period"] = str(params.period)
    return f"otpauth://totp/{label}?{urlencode(query, quote_via=quote)}"


def parse_code(text: str, digits: int) -> str | None:
    """The code if ``text`` is exactly ``digits`` ASCII digits once spaces are removed."""
    if not isinstance(text, str) or len(text) > MAX_CODE_INPUT:
        return None
    code = text.strip().replace(" ", "")
    if len(code) != digits or not all(c in "0123456789" for c in code):
        return None
    return code


def time_step(now: float, period: int) -> int:
    return int(now // period)


def code_at_step(secret: bytes, step: int, params: TotpParams) -> str:
    """The code for one time step."""
    import pyotp  # only logins that check a code pay for it

    digest = getattr(hashlib, params.algorithm.lower())
    return pyotp.HOTP(to_base32(secret), digits=params.digits, digest=digest).at(step)


def matching_step(secret: bytes, code: str, params: TotpParams, now: float) -> int | None:
    """The latest step within the window whose code equals ``code``, else None.

    Every candidate is computed and compared, so the time taken does not tell which matched.
    """
    current = time_step(now, params.period)
    found = None
    for step in range(current - params.window, current + params.window + 1):
        if step < 0:
            continue
        if hmac.compare_digest(code_at_step(secret, step, params), code):
            found = step
    return found
