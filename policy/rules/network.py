"""Where a login comes from: PAM_RHOST normalised, and whether that is the campus network.

Only an IP literal inside a campus network exempts a login. Parsing uses the standard
library's ``ipaddress``: it is strict (no leading-zero or shortened IPv4 forms, no spaces)
and cheap to import, which matters because every login runs this. netaddr, which the
admin tools use to summarise network sets, costs tens of milliseconds to import and stays
out of this path. Nothing here asks DNS.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Source:
    """A login's source: the address if it is an IP literal, else why not."""

    rhost: str                     # as given: PAM_RHOST, or the session's remote host
    address: Address | None = None
    local: bool = False            # a session with no remote host: a console
    via: str = ""                  # for a login without PAM_RHOST: where the source came from

    def __str__(self) -> str:
        if self.address is not None:
            return str(self.address)
        if self.rhost:
            return repr(self.rhost)
        return "local" if self.local else "none"

    @property
    def origin(self) -> str:
        """`` (via)`` for the audit reason, or nothing when PAM_RHOST was the source."""
        return f" ({self.via})" if self.via else ""


def normalize_source(rhost: str | None) -> Source:
    """Turn PAM_RHOST (or a client address) into a Source.

    An empty one is an unknown source here, off campus. A PAM login without PAM_RHOST
    takes the source of the session it was started from instead (policy/session.py); a
    service name never makes a login local.
    """
    rhost = rhost or ""
    if rhost == "":
        return Source(rhost)
    return Source(rhost, address=parse_address(rhost))


def parse_address(text: str) -> Address | None:
    """Return the address for an IP literal, IPv4-mapped IPv6 as IPv4, zone id dropped."""
    literal = text.split("%", 1)[0] if ":" in text else text
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return None  # a hostname, "UNKNOWN", "192.0.2.010", "192.0.2.7 ", garbage
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def campus_network_of(source: Source, campus_networks: tuple[str, ...]) -> str | None:
    """The campus network (as configured) that contains the source, or None."""
    if source.address is None:
        return None
    for text in campus_networks:
        network = _network(text)
        if source.address.version == network.version and source.address in network:
            return text
    return None


@lru_cache(maxsize=1024)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A configured campus network, parsed once per process (the site asks per request)."""
    return ipaddress.ip_network(text)
