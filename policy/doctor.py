"""campus-mfa doctor: the checks a sysadmin runs after installing or changing something."""
from __future__ import annotations

from typing import Iterator

from .config import Config
from .directory import Directory, DirectoryError

SCHEMA = ("oathTOTPUser", "oathTOTPToken", "oathTOTPParams")


def describe_campus(networks: tuple[str, ...]) -> tuple[bool, str]:
    """The campus set as netaddr merges it; not ok if entries overlap (a likely typo)."""
    import netaddr  # the admin tools' network-set library, kept out of the login path

    merged = netaddr.IPSet(networks)
    overlap = sum(netaddr.IPNetwork(n).size for n in networks) != merged.size
    cidrs = ", ".join(str(c) for c in merged.iter_cidrs())
    note = " (entries overlap: check for a typo)" if overlap else ""
    return not overlap, f"campus networks: {cidrs}{note}"


def run_checks(config: Config, test_user: str | None,
               password: str | None) -> Iterator[tuple[bool, str]]:
    """Yield (ok, line) for each check; stop at the first one the rest depend on."""
    yield True, f"configuration {config.path} parses"
    yield describe_campus(config.policy.campus_networks)
    ldap = config.ldap
    with Directory(ldap) as directory:
        try:
            directory.conn
        except DirectoryError as err:
            yield False, f"bind as {ldap.bind_dn}: {err}"
            return
        yield True, f"bind as {ldap.bind_dn} via {', '.join(ldap.uris)}"
        try:
            missing = directory.missing_schema(SCHEMA)
            yield not missing, ("OATH-LDAP schema present" if not missing else
                                f"schema lacks {', '.join(missing)} (moduleload otp.la)")
            for dn in (ldap.token_base, ldap.role_group):
                found = directory.exists(dn)
                yield found, f"{dn} {'readable' if found else 'missing or unreadable'}"
            anonymous = directory.entries_visible_to(ldap.token_base)
            yield anonymous == 0, f"anonymous sees {anonymous} entries under {ldap.token_base}"
            if test_user:
                dn, _ = directory.find_user(test_user)
                seen = directory.entries_visible_to(ldap.token_base, dn, password)
                yield seen == 0, f"{test_user} sees {seen} entries under {ldap.token_base}"
        except DirectoryError as err:
            yield False, str(err)
    if ldap.write_bind_dn:
        with Directory(ldap, write=True) as writer:
            try:
                writer.conn
                yield True, f"bind as {ldap.write_bind_dn}"
            except DirectoryError as err:
                yield False, f"bind as {ldap.write_bind_dn}: {err}"

