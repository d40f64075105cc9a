"""OATH-LDAP entries as typed values, and the checks on names and DNs that come before any
search. Raw attributes in, Token and TotpParams out; anything malformed is an EntryError
that names the entry and the attribute, never the value."""
from __future__ import annotations

import time
import unicodedata

from ldap3.core import exceptions as lexc
from ldap3.utils.dn import parse_dn

from ..errors import EntryError
from ..rules.state import Token
from ..rules.totp import TotpParams

HMAC_OIDS = {
    "SHA1": "1.2.840.113549.2.7",
    "SHA256": "1.2.840.113549.2.9",
    "SHA512": "1.2.840.113549.2.11",
}
MAX_USERNAME = 256
TOKEN_ATTRS = ["oathSecret", "oathTOTPParams", "oathTOTPLastTimeStep", "oathFailureCount",
               "oathLastFailure"]
PARAMS_ATTRS = ["oathOTPLength", "oathHMACAlgorithm", "oathTOTPTimeStepPeriod",
                "oathTOTPTimeStepWindow", "oathThrottleLimit"]


def acceptable_username(username: str) -> bool:
    """Refuse names no account can have: empty, overlong, or with spaces or control
    characters (LDAP matching ignores surrounding spaces, so " alice" would find alice)."""
    if not isinstance(username, str) or not 0 < len(username) <= MAX_USERNAME:
        return False
    return not any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in username)


def is_below(dn: str, base: str) -> bool:
    """Whether ``dn`` names an entry under ``base`` (compared case-insensitively)."""
    try:
        parts = [(a.lower(), v.lower()) for a, v, _ in parse_dn(dn)]
        base_parts = [(a.lower(), v.lower()) for a, v, _ in parse_dn(base)]
    except lexc.LDAPException:
        return False
    return len(parts) > len(base_parts) and parts[-len(base_parts):] == base_parts


def token_from(dn: str, raw: dict, params: TotpParams, max_failures: int) -> Token:
    """A token entry's attributes (TOKEN_ATTRS) as a Token with its params."""
    secret = one(raw, "oathSecret", dn)
    if len(secret) < 16:
        raise EntryError(f"token entry {dn}: oathSecret is shorter than 128 bits")
    last_failure = raw.get("oathLastFailure")
    return Token(dn=dn, secret=secret, params=params, max_failures=max_failures,
                 last_step=integer(raw, "oathTOTPLastTimeStep", dn, default=0),
                 failures=integer(raw, "oathFailureCount", dn, default=0),
                 last_failure=parse_time(last_failure[0], dn) if last_failure else None)


def params_from(dn: str, raw: dict) -> tuple[TotpParams, int]:
    """A params entry's attributes (PARAMS_ATTRS) as TotpParams and the lock-out limit."""
    oid = one(raw, "oathHMACAlgorithm", dn).decode("ascii", "replace")
    algorithm = next((name for name, known in HMAC_OIDS.items() if known == oid), None)
    if algorithm is None:
        raise EntryError(f"params entry {dn}: unsupported oathHMACAlgorithm {oid}")
    params = TotpParams(algorithm=algorithm,
                        digits=integer(raw, "oathOTPLength", dn, default=0),
                        period=integer(raw, "oathTOTPTimeStepPeriod", dn, default=0),
                        window=integer(raw, "oathTOTPTimeStepWindow", dn, default=1))
    if params.digits not in (6, 7, 8) or not 15 <= params.period <= 300 or params.window > 10:
        raise EntryError(f"params entry {dn}: digits, period or window out of range")
    return params, integer(raw, "oathThrottleLimit", dn, default=10)


def params_attributes(params: TotpParams, max_failures: int) -> dict[str, str]:
    """The attributes of a params entry for ``params`` (what params_from reads back)."""
    return {"oathOTPLength": str(params.digits),
            "oathHMACAlgorithm": HMAC_OIDS[params.algorithm],
            "oathTOTPTimeStepPeriod": str(params.period),
            "oathTOTPTimeStepWindow": str(params.window),
            "oathThrottleLimit": str(max_failures)}


def one(raw: dict, name: str, dn: str) -> bytes:
    values = raw.get(name, [])
    if len(values) != 1:
        raise EntryError(f"entry {dn}: {name} must have exactly one value")
    return values[0]


def integer(raw: dict, name: str, dn: str, *, default: int) -> int:
    if name not in raw:
        return default
    text = one(raw, name, dn)
    if not text.isdigit() or len(text) > 18:
        raise EntryError(f"entry {dn}: {name} is not a non-negative integer")
    return int(text)


def gentime(now: float) -> str:
    """LDAP GeneralizedTime, UTC, whole seconds."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


def parse_time(value: bytes, dn: str) -> int:
    import calendar

    try:
        return calendar.timegm(time.strptime(value.decode("ascii")[:14], "%Y%m%d%H%M%S"))
    except (ValueError, UnicodeDecodeError):
        raise EntryError(f"entry {dn}: malformed timestamp") from None
