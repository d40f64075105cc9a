"""One bound connection to the directory: the first server of ``ldap.uris`` that answers,
with TLS as configured, and every ldap3 exception turned into a DirectoryError classified
by its LDAP result code. ServiceDirectory and EnrollmentDirectory build on it; which DN
binds is theirs to say. With a pool (campus-mfa-authd, pool.py), the connection is borrowed
and given back instead of opened and closed."""
from __future__ import annotations

import time
from typing import Any

import ldap3
from ldap3.core import exceptions as lexc

from ..config import LdapConfig
from ..errors import DirectoryError, DirectoryUnavailable
from ..secret_file import read_secret_file
from .pool import VALIDATE_AFTER, ConnectionPool, Pooled

# LDAP result codes acted on (RFC 4511 section 4.1.9).
TIME_LIMIT_EXCEEDED, SIZE_LIMIT_EXCEEDED, COMPARE_FALSE, COMPARE_TRUE = 3, 4, 5, 6
NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS, NO_SUCH_OBJECT = 16, 20, 32
ENTRY_ALREADY_EXISTS = 68
PAGED_RESULTS = "1.2.840.113556.1.4.319"  # the control's OID


class Connection:
    """A connection opened (or borrowed from ``pool``) at first use, and closed (or given
    back) by close() or the ``with`` block."""

    def __init__(self, config: LdapConfig, pool: ConnectionPool | None = None) -> None:
        self.config = config
        self.pool = pool
        self._conn: ldap3.Connection | None = None
        self._loan: Pooled | None = None   # the pool's record of the connection
        self._unproven = False              # borrowed, and not used since

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back to the pool, or unbind it."""
        if self._conn is not None:
            if self._loan is None or self.pool is None or not self.pool.give_back(self._loan):
                unbind(self._conn)
            self._conn = self._loan = None

    def _discard(self) -> None:
        """The connection is dead: its server is tried last for a while (pool.py), and the
        connection is unbound and forgotten (never back to the pool)."""
        if self._conn is not None:
            if self.pool is not None:
                self.pool.failed(self._conn.server.name)
            unbind(self._conn)
        self._conn = self._loan = None

    def credentials(self) -> tuple[str, str, str]:
        """(DN, config key, password file) of the account this connection binds as."""
        raise NotImplementedError

    @property
    def conn(self) -> ldap3.Connection:
        if self._conn is None:
            self._get(fresh=False)
        return self._conn  # type: ignore[return-value]

    def _get(self, *, fresh: bool) -> None:
        """Borrow an idle connection (unless ``fresh``), or open and bind a new one."""
        loan = None if fresh or self.pool is None else self.pool.take()
        if loan is not None:
            self._conn, self._loan, self._unproven = loan.conn, loan, True
            return
        dn, key, path = self.credentials()
        password = read_secret_file(path, key)
        try:
            self._conn = self.open(dn, password)
        except lexc.LDAPInvalidCredentialsResult:
            # A server answered: not an outage, so on_directory_error = "allow" does not
            # cover it.
            raise DirectoryError(f"bind as {dn} refused: invalid credentials") from None
        self._loan = self.pool.adopt(self._conn) if self.pool is not None else None
        self._unproven = False

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
        servers = self.servers()
        for server in self.pool.order(servers) if self.pool is not None else servers:
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
                if self.pool is not None:
                    self.pool.failed(server.name)
        raise DirectoryUnavailable("no server answered: " + "; ".join(problems))

    def call(self, what: str, operation: Any, *args: Any, write: bool = False,
             **kwargs: Any) -> ldap3.Connection:
        """Run one ldap3 operation, turning its exceptions into DirectoryError; the
        connection, whose ``result`` holds the answer. A borrowed connection found dead is
        replaced once by a fresh one: for a read when the read fails, for a write before
        it is sent (a WhoAmI, if the connection sat idle), never after."""
        conn = self.conn
        if write and self._unproven and self._loan is not None and \
                time.monotonic() - self._loan.used >= VALIDATE_AFTER and not alive(conn):
            self._discard()
            self._get(fresh=True)
            conn = self.conn
        try:
            operation(conn, *args, **kwargs)
        except (lexc.LDAPCommunicationError, lexc.LDAPSessionTerminatedByServerError,
                lexc.LDAPResponseTimeoutError) as err:
            retry = self._unproven and not write
            self._discard()
            if retry:  # a stale borrowed connection: the read once more on a fresh one
                self._get(fresh=True)
                return self.call(what, operation, *args, write=write, **kwargs)
            raise DirectoryUnavailable(f"{what}: {describe(err)}") from None
        except lexc.LDAPOperationResult as err:
            self._proven()
            raise DirectoryError(f"{what}: {describe(err)}", err.result) from None
        except lexc.LDAPException as err:
            raise DirectoryError(f"{what}: {describe(err)}") from None
        self._proven()
        return conn

    def _proven(self) -> None:
        """The server answered on this connection just now."""
        self._unproven = False
        if self._loan is not None:
            self._loan.used = time.monotonic()

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
        self.call(f"modify {dn}", ldap3.Connection.modify, dn, changes, write=True)

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


def alive(conn: ldap3.Connection) -> bool:
    """Whether the server still answers on ``conn`` (an LDAP WhoAmI, RFC 4532)."""
    try:
        conn.extend.standard.who_am_i()
    except lexc.LDAPException:
        return False
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
