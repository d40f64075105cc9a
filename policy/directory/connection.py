"""One bound connection to the directory: the first server of ``ldap.uris`` that answers,
with TLS as configured, and every ldap3 exception turned into a DirectoryError classified
by its LDAP result code. ServiceDirectory and EnrollmentDirectory build on it; which DN
binds is theirs to say."""
from __future__ import annotations

from typing import Any

import ldap3
from ldap3.core import exceptions as lexc

from ..config import LdapConfig
from ..errors import DirectoryError, DirectoryUnavailable
from ..secret_file import read_secret_file

# LDAP result codes acted on (RFC 4511 section 4.1.9).
TIME_LIMIT_EXCEEDED, SIZE_LIMIT_EXCEEDED, COMPARE_FALSE, COMPARE_TRUE = 3, 4, 5, 6
NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS, NO_SUCH_OBJECT = 16, 20, 32
ENTRY_ALREADY_EXISTS = 68
PAGED_RESULTS = "1.2.840.113556.1.4.319"  # the control's OID


class Connection:
    """A connection opened at first use and closed by close() or the ``with`` block."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        self._conn: ldap3.Connection | None = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            unbind(self._conn)
            self._conn = None

    def credentials(self) -> tuple[str, str, str]:
        """(DN, config key, password file) of the account this connection binds as."""
        raise NotImplementedError

    @property
    def conn(self) -> ldap3.Connection:
        if self._conn is None:
            dn, key, path = self.credentials()
            password = read_secret_file(path, key)
            try:
                self._conn = self.open(dn, password)
            except lexc.LDAPInvalidCredentialsResult:
                # A server answered: not an outage, so on_directory_error = "allow" does
                # not cover it.
                raise DirectoryError(f"bind as {dn} refused: invalid credentials") from None
        return self._conn

    def servers(self) -> list[ldap3.Server]:
        cfg = self.config
        tls = None
        if cfg.start_tls or any(uri.startswith("ldaps://") for uri in cfg.uris):
            import ssl  # only when the directory is reached over TLS

            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file or None)
        return [ldap3.Server(uri, connect_timeout=cfg.timeout, get_info=ldap3.NONE, tls=tls)
                for uri in cfg.uris]

    def open(self, user: str, password: str) -> ldap3.Connection:
        """A connection bound as ``user`` to the first server of ``ldap.uris`` that answers,
        each tried once in order (ldap3's ServerPool is not used: its availability check
        fails on ldapi:// sockets in 2.9, and it sleeps between rounds). A server that
        answers and refuses the bind ends the search: the credentials are the problem."""
        problems = []
        for server in self.servers():
            # check_names=False: DNs go to the server as written and the server matches
            # them (ldap3's own check refuses the spaces RFC 4514 lets a server ignore).
            conn = ldap3.Connection(server, user=user, password=password,
                                    receive_timeout=self.config.timeout, raise_exceptions=True,
                                    read_only=False, auto_referrals=False, check_names=False)
            step = "connect"
            try:
                conn.open()
                # ldaps:// is TLS already, ldapi:// a local socket.
                if self.config.start_tls and not (server.ssl or server.ipc):
                    step = "StartTLS"
                    conn.start_tls()
                step = "bind"
                conn.bind()
                return conn
            except lexc.LDAPInvalidCredentialsResult:
                unbind(conn)
                raise
            except lexc.LDAPException as err:
                unbind(conn)
                problems.append(f"{server.name}: {step}: {describe(err)}")
        raise DirectoryUnavailable("no server answered: " + "; ".join(problems))

    def call(self, what: str, operation: Any, *args: Any, **kwargs: Any) -> ldap3.Connection:
        """Run one ldap3 operation, turning its exceptions into DirectoryError; the
        connection, whose ``result`` holds the answer."""
        conn = self.conn
        try:
            operation(conn, *args, **kwargs)
        except (lexc.LDAPCommunicationError, lexc.LDAPSessionTerminatedByServerError,
                lexc.LDAPResponseTimeoutError) as err:
            self._conn = None
            raise DirectoryUnavailable(f"{what}: {describe(err)}") from None
        except lexc.LDAPOperationResult as err:
            raise DirectoryError(f"{what}: {describe(err)}", err.result) from None
        except lexc.LDAPException as err:
            raise DirectoryError(f"{what}: {describe(err)}") from None
        return conn

    def search(self, base: str, filter_: str, attributes: list[str], *,
               scope: str = ldap3.SUBTREE, size_limit: int = 0) -> list[dict]:
        """The entries found. A search the server cut short (its size or time limit;
        ldap3 does not raise for those) is an error, never a short answer; only a
        ``size_limit`` of our own may end it early."""
        try:
            conn = self.call(f"search {base}", ldap3.Connection.search, base, filter_,
                             search_scope=scope, attributes=attributes, size_limit=size_limit)
        except DirectoryError as err:
            if err.code == NO_SUCH_OBJECT and scope == ldap3.BASE:
                return []
            raise
        entries = [e for e in conn.response if e.get("type") == "searchResEntry"]
        code = conn.result.get("result")
        if code == TIME_LIMIT_EXCEEDED or (
                code == SIZE_LIMIT_EXCEEDED and not 0 < size_limit <= len(entries)):
            raise DirectoryError(f"search {base}: the server stopped the search early "
                                 f"({conn.result.get('description')}) after {len(entries)} "
                                 "entries", code)
        return entries

    def search_paged(self, base: str, filter_: str, attributes: list[str],
                     page: int = 500) -> list[dict]:
        """Every entry found, fetched ``page`` at a time (RFC 2696): what a search over
        all tokens or all users needs, beyond the server's per-search size limit. The
        server may still cap the total for this DN (slapd: olcLimits size.prtotal);
        that, too, is an error, never a short answer."""
        entries: list[dict] = []
        cookie = None
        while True:
            conn = self.call(f"search {base}", ldap3.Connection.search, base, filter_,
                             search_scope=ldap3.SUBTREE, attributes=attributes,
                             paged_size=page, paged_cookie=cookie)
            entries += [e for e in conn.response if e.get("type") == "searchResEntry"]
            code = conn.result.get("result")
            if code in (TIME_LIMIT_EXCEEDED, SIZE_LIMIT_EXCEEDED):
                raise DirectoryError(f"search {base}: the server stopped the search early "
                                     f"({conn.result.get('description')}) after "
                                     f"{len(entries)} entries", code)
            control = conn.result.get("controls", {}).get(PAGED_RESULTS, {})
            cookie = control.get("value", {}).get("cookie")
            if not cookie:
                return entries

    def read(self, dn: str, attributes: list[str]) -> dict | None:
        found = self.search(dn, "(objectClass=*)", attributes, scope=ldap3.BASE)
        return found[0] if found else None

    def modify(self, dn: str, changes: dict) -> None:
        self.call(f"modify {dn}", ldap3.Connection.modify, dn, changes)

    def compare_and_swap(self, dn: str, changes: dict) -> bool:
        """One modify that deletes the values read and adds the new ones: False if another
        host changed them first (the value to delete is gone, or the one to add is there)."""
        try:
            self.modify(dn, changes)
        except DirectoryError as err:
            if err.code in (NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS):
                return False
            raise
        return True


def unbind(conn: ldap3.Connection) -> None:
    """Unbind and close, quietly. ldap3 leaves the socket of a connection that failed to
    open (refused, timed out) open; close it here rather than wait for the collector."""
    try:
        conn.unbind()
    except lexc.LDAPException:
        pass
    if conn.socket is not None:
        conn.socket.close()


def describe(err: Exception) -> str:
    """An ldap3 exception as one line without arguments that could hold a password."""
    if isinstance(err, lexc.LDAPOperationResult):
        return f"{err.description} ({err.result})" + (f": {err.message}" if err.message else "")
    return type(err).__name__ + (f": {err}" if not isinstance(err, lexc.LDAPBindError) else "")
