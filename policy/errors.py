"""The errors callers catch, in a module that imports nothing: the PAM module and the site
catch them without loading the configuration code or ldap3."""


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class DirectoryError(Exception):
    """The directory could not answer as needed; the message holds no secret. ``code`` is
    the LDAP result code when the server answered with one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DirectoryUnavailable(DirectoryError):
    """No server answered in time: the one case ``on_directory_error = "allow"`` covers."""


class EntryError(DirectoryError):
    """An entry is missing, ambiguous or malformed."""


class UserNotFound(EntryError):
    """No entry (or no acceptable name) for this username."""
