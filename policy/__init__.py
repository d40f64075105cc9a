"""campus-mfa core: configuration, campus networks, the decision, TOTP rules, the directory.

Kept free of imports so that the PAM module loads only what it uses. The paths below are
here, not in the modules that use them, for the same reason.
"""
DEFAULT_CONFIG = "/etc/campus-mfa/campus-mfa.toml"
DEFAULT_SYSLOG = "/dev/log"
AUTHD_SOCKET = "/run/campus-mfa/authd.sock"


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why. (Defined here,
    re-exported by policy.config, so that the PAM module can catch it without loading
    the configuration code.)"""
