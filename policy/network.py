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

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Source:
    """A login's source: the address if PAM_RHOST was an IP literal, else why not."""

    rhost: str                     # exactly as PAM gave it (for the audit line, repr-quoted)
    address: Address | None = None
    local: bool = False            # no PAM_RHOST, and the service is declared local

    def __str__(self) -> str:
        if self.address is not None:
            return str(self.address)
        if not self.rhost:
            return "local" if self.local else "none"
        return repr(self.rhost)


def normalize_source(rhost: str | None, service: str, local_services: tuple[str, ...]) -> Source:
    """Turn PAM_RHOST into a Source.

    An empty PAM_RHOST is local only for services named in ``local_services`` (console
    login, su, sudo); any other service without a source address -- a web application that
    forgot to set PAM_RHOST -- is treated as off campus.
    """
    rhost = rhost or ""
    if rhost == "":
        return Source(rhost, local=service in local_services)
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
        network = ipaddress.ip_network(text)
        if source.address.version == network.version and source.address in network:
            return text
    return None
