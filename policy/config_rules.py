"""The rules a configuration must meet beyond the type of each value, section by section.
Every error names the file and the key (policy/config.py calls check() once parsed)."""
from __future__ import annotations

import ipaddress

from .config import Config, LdapConfig, PolicyConfig, TotpConfig, WebConfig
from .errors import ConfigError

ALGORITHMS = ("SHA1", "SHA256", "SHA512")
LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def check(config: Config) -> None:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{config.path}: {key} {message}")

    check_ldap(config.ldap, fail)
    check_policy(config.policy, fail)
    check_totp(config.totp, fail)
    check_web(config.web, fail)


def check_ldap(ldap: LdapConfig, fail) -> None:
    if not ldap.uris:
        raise fail("ldap.uris", "must name at least one server")
    for uri in ldap.uris:
        if not uri.startswith(("ldap://", "ldaps://", "ldapi://")) or uri.endswith("/"):
            raise fail("ldap.uris", f"must hold ldap://, ldaps:// or ldapi:// URIs without a "
                                    f"trailing slash, got {uri!r}")
        if transport(uri, ldap.start_tls) == PLAINTEXT and not ldap.allow_plaintext:
            raise fail("ldap.uris", f"has {uri}: plain LDAP to a host that is not a loopback "
                                    "address sends the bind password and the secrets in the "
                                    "clear; set ldap.start_tls = true, or use ldaps:// or "
                                    "ldapi:// (or, on a network you trust, "
                                    "ldap.allow_plaintext = true)")
    if not 1 <= ldap.timeout <= 60:
        raise fail("ldap.timeout", f"must be between 1 and 60 seconds, got {ldap.timeout}")
    if "{username}" not in ldap.user_filter:
        raise fail("ldap.user_filter", "must contain {username}")
    if bool(ldap.write_bind_dn) != bool(ldap.write_bind_password_file):
        raise fail("ldap.write_bind_dn", "and ldap.write_bind_password_file go together")


def check_policy(policy: PolicyConfig, fail) -> None:
    if not policy.campus_networks:
        raise fail("policy.campus_networks", "must list at least one network")
    for text in policy.campus_networks:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as err:
            raise fail("policy.campus_networks", f"has an invalid network {text!r}: {err}") \
                from None
        if network.prefixlen == 0:
            raise fail("policy.campus_networks", f"must not contain {text}: that is every "
                                                 "address, and nobody would ever be asked for a code")
    for version in (4, 6):
        networks = [ipaddress.ip_network(text) for text in policy.campus_networks]
        merged = list(ipaddress.collapse_addresses(n for n in networks if n.version == version))
        if merged and merged[0].prefixlen == 0:
            raise fail("policy.campus_networks", f"together cover every IPv{version} address "
                                                 f"({merged[0]}): nobody would ever be asked "
                                                 "for a code")
    if policy.enforcement not in ("opt-in", "required"):
        raise fail("policy.enforcement", f"must be \"opt-in\" or \"required\", "
                                         f"got {policy.enforcement!r}")
    if policy.on_directory_error not in ("deny", "allow"):
        raise fail("policy.on_directory_error", f"must be \"deny\" or \"allow\", "
                                                f"got {policy.on_directory_error!r}")


def check_totp(totp: TotpConfig, fail) -> None:
    if totp.digits not in (6, 7, 8):
        raise fail("totp.digits", f"must be 6, 7 or 8, got {totp.digits}")
    if not 15 <= totp.period <= 300:
        raise fail("totp.period", f"must be between 15 and 300 seconds, got {totp.period}")
    if totp.algorithm not in ALGORITHMS:
        raise fail("totp.algorithm", f"must be one of {', '.join(ALGORITHMS)}, "
                                     f"got {totp.algorithm!r}")
    if not 0 <= totp.window <= 10:
        raise fail("totp.window", f"must be between 0 and 10 steps, got {totp.window}")
    if not 1 <= totp.max_failures <= 100:  # NIST SP 800-63B: at most 100 consecutive failures
        raise fail("totp.max_failures", f"must be between 1 and 100, got {totp.max_failures}")
    if not totp.issuer or ":" in totp.issuer:
        raise fail("totp.issuer", "must be a non-empty name without ':'")


def check_web(web: WebConfig, fail) -> None:
    if web.first_factor not in ("ldap", "pam"):
        raise fail("web.first_factor", f"must be \"ldap\" or \"pam\", got {web.first_factor!r}")
    if not 0 <= web.trusted_proxies <= 5:
        raise fail("web.trusted_proxies", f"must be between 0 and 5, got {web.trusted_proxies}")
    if web.session_lifetime < 60:
        raise fail("web.session_lifetime", "must be at least 60 seconds")
    if not web.session_dir.startswith("/"):
        raise fail("web.session_dir", f"must be an absolute path, got {web.session_dir!r}")
    if web.session_store and not web.session_store.startswith(("redis://", "unix://")):
        raise fail("web.session_store", "must be empty (files in web.session_dir) or a redis "
                                        f"URL (redis://HOST:PORT/DB, unix:///PATH), got "
                                        f"{web.session_store!r}")
    if not 1 <= web.recheck_seconds <= 3600:
        raise fail("web.recheck_seconds", f"must be between 1 and 3600, got "
                                          f"{web.recheck_seconds}")
    if web.session_max_age < web.session_lifetime:
        raise fail("web.session_max_age", "must be at least web.session_lifetime")
    if web.cookie_domain and not is_host_name(web.cookie_domain):
        raise fail("web.cookie_domain", f"must be a DNS name such as \"example.edu\" (no "
                                        f"leading dot, scheme or port), got {web.cookie_domain!r}")
    if web.portal_url:
        host = portal_host(web.portal_url)
        if host is None:
            raise fail("web.portal_url", "must be https://HOST[:PORT] (http:// only to a "
                                         f"loopback address), got {web.portal_url!r}")
        if web.cookie_domain and not within(host, web.cookie_domain):
            raise fail("web.cookie_domain", f"must hold the portal's host {host}: a browser "
                                            "refuses a cookie for another domain")
    for entry in web.protected_hosts:
        name = entry.removeprefix(".")
        if not is_host_name(name) or "." not in name:
            raise fail("web.protected_hosts", "must hold DNS names (\"files.example.edu\", "
                                              "or \".example.edu\" for every name under it), "
                                              f"got {entry!r}")
        if not web.portal_url:
            raise fail("web.portal_url", "must be set when web.protected_hosts is: the gate "
                                         "sends people there to sign in")
        if not cookie_reaches(name, web):
            raise fail("web.protected_hosts", f"has {entry}, which the portal's cookie never "
                                              "reaches: set web.cookie_domain to a domain "
                                              "that holds it and the portal")


def is_host_name(text: str) -> bool:
    """A DNS name in lower case, ASCII (IDNA A-labels), no trailing dot."""
    labels = text.split(".")
    return len(text) <= 253 and all(
        0 < len(label) <= 63 and set(label) <= LABEL_CHARACTERS and label[0] != "-" != label[-1]
        for label in labels)


def portal_host(url: str) -> str | None:
    """The host of web.portal_url, or None if it is not an origin the gate may use:
    https://HOST[:PORT], or http:// to a loopback address (the demo)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("https", "http") or "/" in rest or "@" in rest:
        return None
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        port = port.removeprefix(":") if bracket and (not port or port.startswith(":")) else "x"
    else:
        host, _, port = rest.partition(":")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
        if not is_host_name(host):
            return None
    return host if scheme == "https" or loopback else None


def within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def cookie_reaches(host: str, web: WebConfig) -> bool:
    """Whether the browser sends the portal's cookie to ``host`` (and its subdomains)."""
    if web.cookie_domain:
        return within(host, web.cookie_domain)
    return host == portal_host(web.portal_url)


# How a URI reaches the directory (``campus-mfa doctor`` prints it).
LDAPI, LDAPS, STARTTLS, LOOPBACK, PLAINTEXT = (
    "ldapi (local socket)", "LDAPS", "StartTLS", "plain LDAP on loopback", "plain LDAP")


def transport(uri: str, start_tls: bool) -> str:
    """LDAPI, LDAPS, STARTTLS, LOOPBACK or PLAINTEXT for ``uri``. Only a literal loopback
    address counts as loopback: a name could resolve anywhere."""
    if uri.startswith("ldapi://"):
        return LDAPI
    if uri.startswith("ldaps://"):
        return LDAPS
    if start_tls:
        return STARTTLS
    hostport = uri[len("ldap://"):]
    if hostport.startswith("["):  # ldap://[::1]:389
        host = hostport[1:].partition("]")[0]
    else:
        host = hostport.partition(":")[0]
    try:
        return LOOPBACK if ipaddress.ip_address(host).is_loopback else PLAINTEXT
    except ValueError:
        return PLAINTEXT
