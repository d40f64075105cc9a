"""Default paths, in a module of their own: the PAM module reads them before it loads
anything else."""
DEFAULT_CONFIG = "/etc/campus-mfa/campus-mfa.toml"
DEFAULT_SYSLOG = "/dev/log"
AUTHD_SOCKET = "/run/campus-mfa/authd.sock"
MAX_TRIES = 10  # the most codes one conversation may ask for (the tries= option)
