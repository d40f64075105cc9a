"""The one configuration file, parsed into frozen dataclasses.

Every error names the file, the key and what was expected; unknown keys are errors, so a
typo never silently leaves a default (for example a campus set) in force.
"""
from __future__ import annotations

import ipaddress
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .defaults import DEFAULT_CONFIG, DEFAULT_SYSLOG
from .errors import ConfigError

if TYPE_CHECKING:
    from .rules.totp import TotpParams

DEFAULT_PATH = DEFAULT_CONFIG

ALGORITHMS = ("SHA1", "SHA256", "SHA512")


@dataclass(frozen=True)
class LdapConfig:
    uris: tuple[str, ...]
    base_dn: str
    user_base: str
    token_base: str
    role_group: str
    bind_dn: str
    bind_password_file: str
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    # The enrollment DN: the site and the admin command write MFA state with it.
    write_bind_dn: str = ""
    write_bind_password_file: str = ""
    start_tls: bool = True
    ca_file: str = ""
    timeout: int = 3  # seconds, whole: ldap3 packs it into a socket option
    # ldap:// to a host that is not a loopback address, without StartTLS, sends the service
    # password and every secret in the clear: refused unless the admin says so here.
    allow_plaintext: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    campus_networks: tuple[str, ...]
    enforcement: str = "opt-in"
    required_groups: tuple[str, ...] = ()
    on_directory_error: str = "deny"


@dataclass(frozen=True)
class TotpConfig:
    issuer: str = "Example University"
    digits: int = 6
    period: int = 30
    algorithm: str = "SHA1"
    window: int = 1
    max_failures: int = 10

    def new_token_params(self) -> TotpParams:
        """The parameters a token made now gets (its params entry keeps them)."""
        from .rules.totp import TotpParams  # enrollment only, not the login path

        return TotpParams(algorithm=self.algorithm, digits=self.digits, period=self.period,
                          window=self.window)


@dataclass(frozen=True)
class AuditConfig:
    # Datagram socket of the local syslog daemon; tests point it at their own listener.
    syslog_socket: str = DEFAULT_SYSLOG


@dataclass(frozen=True)
class WebConfig:
    secret_key_file: str = "/etc/campus-mfa/web.secret"
    trusted_proxies: int = 0
    session_lifetime: int = 900
    # Sessions live on the server (log out and MFA changes end them); one file each here.
    session_dir: str = "/var/lib/campus-mfa-enroll/sessions"
    first_factor: str = "ldap"
    pam_service: str = "campus-mfa-enroll"
    cookie_secure: bool = True
    rate_limit_storage: str = "memory://"
    login_rate_limit: str = "10 per minute"
    code_rate_limit: str = "10 per minute"


@dataclass(frozen=True)
class Config:
    path: str
    ldap: LdapConfig
    policy: PolicyConfig
    totp: TotpConfig = field(default_factory=TotpConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    web: WebConfig = field(default_factory=WebConfig)
    # Keys of earlier versions that the file still sets, each with why it no longer counts
    # (``campus-mfa doctor`` warns about them).
    ignored: tuple[tuple[str, str], ...] = ()


# Keys that are gone. Each only ever loosened the policy, so a file that still sets one
# (dpkg keeps an edited conffile on upgrade) is read without it, and doctor says so:
# refusing the file would refuse every login, the root console's too, after an upgrade.
IGNORED_KEYS = {
    "policy.local_services": "is ignored since 0.2: a login without a source address (su, "
                             "sudo, a console) takes the source of the session it was "
                             "started from, and a service name never makes a login local "
                             "(docs/pam.md, \"su and sudo\"); delete the key",
}

_SECTIONS = {
    "ldap": LdapConfig,
    "policy": PolicyConfig,
    "totp": TotpConfig,
    "audit": AuditConfig,
    "web": WebConfig,
}


def load_config(path: str = DEFAULT_PATH) -> Config:
    """Read and validate the TOML file at ``path``; raise ConfigError on any problem."""
    import tomllib  # only here: the campus path of a login reads the file once

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: str) -> Config:
    """Validate an already-parsed TOML document."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]")
    for required in ("ldap", "policy"):
        if required not in data:
            raise ConfigError(f"{path}: missing section [{required}]")
    ignored = tuple((key, IGNORED_KEYS[key]) for key in IGNORED_KEYS
                    if key.partition(".")[2] in data.get(key.partition(".")[0], {}))
    sections = {name: _section(path, name, cls, data.get(name, {}))
                for name, cls in _SECTIONS.items()}
    config = Config(path=path, **sections, ignored=ignored)
    _check(config)
    return config


def _section(path: str, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(key for key in set(raw) - set(known) if f"{name}.{key}" not in IGNORED_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {name}.{unknown[0]}")
    values = {}
    for key, spec in known.items():
        if key not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError(f"{path}: missing key {name}.{key}")
            continue
        values[key] = _typed(path, f"{name}.{key}", spec.type, raw[key])
    return cls(**values)


def _typed(path: str, key: str, type_name: str, value: Any) -> Any:
    """Coerce one value to the declared field type, or say what was expected."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{path}: {key} must be {expected}, got {value!r}")

    if type_name == "str":
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if type_name == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail("a list of strings")
        return tuple(value)
    raise AssertionError(f"no coercion for {type_name}")  # a programming error, not input


def _check(config: Config) -> None:
    """Rules that span more than the type of one value."""
    path = config.path

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {key} {message}")

    ldap = config.ldap
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

    policy = config.policy
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

    totp = config.totp
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

    web = config.web
    if web.first_factor not in ("ldap", "pam"):
        raise fail("web.first_factor", f"must be \"ldap\" or \"pam\", got {web.first_factor!r}")
    if not 0 <= web.trusted_proxies <= 5:
        raise fail("web.trusted_proxies", f"must be between 0 and 5, got {web.trusted_proxies}")
    if web.session_lifetime < 60:
        raise fail("web.session_lifetime", "must be at least 60 seconds")
    if not web.session_dir.startswith("/"):
        raise fail("web.session_dir", f"must be an absolute path, got {web.session_dir!r}")


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
