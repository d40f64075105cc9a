"""The one configuration file, parsed into frozen dataclasses.

Every error names the file, the key and what was expected; unknown keys are errors, so a
typo never silently leaves a default (for example a campus set) in force.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .defaults import DEFAULT_CONFIG, DEFAULT_SYSLOG
from .errors import ConfigError

if TYPE_CHECKING:
    from .rules.totp import TotpParams

DEFAULT_PATH = DEFAULT_CONFIG


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
    # Several site processes or hosts: one redis for all (redis://HOST:PORT/DB, unix:///PATH).
    session_store: str = ""
    first_factor: str = "ldap"
    pam_service: str = "campus-mfa-enroll"
    cookie_secure: bool = True
    rate_limit_storage: str = "memory://"
    login_rate_limit: str = "10 per minute"
    code_rate_limit: str = "10 per minute"
    # The gate in front of other web sites (nginx auth_request to /auth, docs/web-gate.md).
    portal_url: str = ""                    # https://mfa.example.edu: where sign-in happens
    protected_hosts: tuple[str, ...] = ()   # "files.example.edu", or ".example.edu"
    cookie_domain: str = ""                 # "example.edu": the cookie reaches those hosts
    recheck_seconds: int = 60               # how old the gate's view of a user may get
    session_max_age: int = 43200            # seconds from sign-in, however busy the session


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
    from .config_rules import check  # the rules that span more than one value

    check(config)
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
