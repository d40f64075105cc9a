"""campus-mfa doctor: the checks a sysadmin runs after installing or changing something."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from ..config import Config, LdapConfig
from ..config_rules import PLAINTEXT, transport
from ..directory.enrollment import EnrollmentDirectory
from ..directory.service import ServiceDirectory
from ..errors import DirectoryError

SCHEMA = ("oathTOTPUser", "oathTOTPToken", "oathTOTPParams")
OK, WARN, FAIL = "ok", "WARN", "FAIL"
# Wider than any university's own networks: a typo, or a proxy's or the world's addresses.
WIDEST_IPV4_ADDRESSES = 2 ** 24   # a /8
WIDEST_IPV6_PREFIX = 32           # what a regional registry gives a whole provider

Check = tuple[str, str]  # (OK, WARN or FAIL; the line)


def describe_campus(networks: tuple[str, ...]) -> Iterator[Check]:
    """The campus set as netaddr merges it; FAIL if entries overlap (a likely typo), WARN if
    it is wider than a university has."""
    import netaddr  # the admin tools' network-set library, kept out of the login path

    merged = netaddr.IPSet(networks)
    overlap = sum(netaddr.IPNetwork(n).size for n in networks) != merged.size
    cidrs = ", ".join(str(c) for c in merged.iter_cidrs())
    note = " (entries overlap: check for a typo)" if overlap else ""
    yield (FAIL if overlap else OK), f"campus networks: {cidrs}{note}"
    ipv4 = sum(c.size for c in merged.iter_cidrs() if c.version == 4)
    if ipv4 > WIDEST_IPV4_ADDRESSES:
        yield WARN, (f"campus networks hold {ipv4:,} IPv4 addresses, more than a /8: is every "
                     "one of them really on campus?")
    for cidr in merged.iter_cidrs():
        if cidr.version == 6 and cidr.prefixlen < WIDEST_IPV6_PREFIX:
            yield WARN, (f"campus network {cidr} is wider than a /{WIDEST_IPV6_PREFIX}: is all "
                         "of it really on campus?")


def run_checks(config: Config, test_user: str | None,
               password: str | None) -> Iterator[Check]:
    """Yield (status, line) for each check; stop at the first one the rest depend on."""
    yield OK, f"configuration {config.path} parses"
    for key, why in config.ignored:
        yield WARN, f"{key} {why}"
    yield from describe_campus(config.policy.campus_networks)
    ldap = config.ldap
    yield from check_servers(ldap)
    with ServiceDirectory(ldap) as directory:
        try:
            directory.conn
        except DirectoryError as err:
            yield FAIL, f"bind as {ldap.bind_dn}: {err}"
            return
        yield OK, f"bind as {ldap.bind_dn} via {', '.join(ldap.uris)}"
        try:
            missing = directory.missing_schema(SCHEMA)
            yield (FAIL if missing else OK), (
                "OATH-LDAP schema present" if not missing else
                f"schema lacks {', '.join(missing)} (moduleload otp.la)")
            found = directory.exists(ldap.token_base)
            yield (OK if found else FAIL), \
                f"{ldap.token_base} {'readable' if found else 'missing or unreadable'}"
            for group in dict.fromkeys((ldap.role_group, *config.policy.required_groups)):
                yield _group_check(directory, group)
            anonymous = directory.entries_visible_to(ldap.token_base)
            yield (OK if anonymous == 0 else FAIL), \
                f"anonymous sees {anonymous} entries under {ldap.token_base}"
            if test_user:
                dn, _ = directory.find_user(test_user)
                seen = directory.entries_visible_to(ldap.token_base, dn, password)
                yield (OK if seen == 0 else FAIL), \
                    f"{test_user} sees {seen} entries under {ldap.token_base}"
        except DirectoryError as err:
            yield FAIL, str(err)
    if ldap.write_bind_dn:
        with EnrollmentDirectory(ldap) as writer:
            try:
                writer.conn
                yield OK, f"bind as {ldap.write_bind_dn}"
            except DirectoryError as err:
                yield FAIL, f"bind as {ldap.write_bind_dn}: {err}"


def check_servers(ldap: LdapConfig) -> Iterator[Check]:
    """Each URI of ldap.uris on its own: the transport, a bind as the service DN, and its
    contextCSN, the newest change it holds from each provider (replication): a server
    whose CSN for some provider is older than another server's is behind."""
    seen: dict[str, dict[str, str]] = {}  # uri -> server ID -> newest CSN
    for uri in ldap.uris:
        way = transport(uri, ldap.start_tls)
        note = (" (ldap.allow_plaintext: passwords and secrets cross the network in the "
                "clear)" if way == PLAINTEXT else "")
        try:
            with ServiceDirectory(replace(ldap, uris=(uri,))) as one:
                csns = one.context_csns()
        except DirectoryError as err:
            yield FAIL, f"{uri}: {way}{note}; {err}"
            continue
        yield (WARN if way == PLAINTEXT else OK), f"{uri}: {way}{note}; bind as {ldap.bind_dn}"
        seen[uri] = csns
    newest: dict[str, str] = {}
    for csns in seen.values():
        for sid, csn in csns.items():
            newest[sid] = max(newest.get(sid, ""), csn)
    for uri, csns in seen.items() if len(seen) > 1 else ():
        behind = sorted(sid for sid, csn in newest.items() if csns.get(sid, "") < csn)
        yield (WARN, f"{uri}: behind for provider(s) {', '.join(behind)} (contextCSN "
                     f"{', '.join(csns.get(sid, 'none') for sid in behind)}; newest "
                     f"{', '.join(newest[sid] for sid in behind)})") if behind else \
            (OK, f"{uri}: up to date ({len(csns)} provider(s) in its contextCSN)")


def _group_check(directory: ServiceDirectory, group: str) -> Check:
    """The group exists and the service DN can compare its members (what a login does)."""
    try:
        directory.is_member(group, directory.config.bind_dn)
    except DirectoryError as err:
        return FAIL, f"group {group}: {err}"
    return OK, f"group {group} exists"
