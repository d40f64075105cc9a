"""The directory layer: a user's MFA state in OATH-LDAP entries, read and written with ldap3.

Layout (DESIGN.md): the user entry gets aux class oathTOTPUser with oathTOTPToken naming a
token entry under ``token_base``; the token (device + oathTOTPToken) holds oathSecret and the
counters and names a params entry (device + oathTOTPParams). A token no user links to is a
pending one; linking it is the confirmation.

Shared counters change by compare-and-swap: one modify deletes the value read and adds the
new one, so it fails if any other host changed it first. Every ldap3 exception is turned
into a DirectoryError here; none leaves this module.
"""
from __future__ import annotations

import time
import unicodedata
from typing import Any

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from .config import LdapConfig, read_secret_file
from .state import Token, UserState
from .totp import TotpParams

HMAC_OIDS = {
    "SHA1": "1.2.840.113549.2.7",
    "SHA256": "1.2.840.113549.2.9",
    "SHA512": "1.2.840.113549.2.11",
}
MAX_USERNAME = 256
CAS_RETRIES = 8

TOKEN_ATTRS = ["oathSecret", "oathTOTPParams", "oathTOTPLastTimeStep", "oathFailureCount",
               "oathLastFailure"]
PARAMS_ATTRS = ["oathOTPLength", "oathHMACAlgorithm", "oathTOTPTimeStepPeriod",
                "oathTOTPTimeStepWindow", "oathThrottleLimit"]


# LDAP result codes this module acts on (RFC 4511 section 4.1.9).
TIME_LIMIT_EXCEEDED, SIZE_LIMIT_EXCEEDED, COMPARE_FALSE, COMPARE_TRUE = 3, 4, 5, 6
NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS, NO_SUCH_OBJECT = 16, 20, 32
ENTRY_ALREADY_EXISTS = 68


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


class Directory:
    """One connection to the directory, as the service DN or (``write=True``) the
    enrollment DN. Use as a context manager or call close()."""

    def __init__(self, config: LdapConfig, *, write: bool = False) -> None:
        self.config = config
        self.write = write
        self._conn: ldap3.Connection | None = None

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            _unbind(self._conn)
            self._conn = None

    # -- connection -----------------------------------------------------------------------

    def _servers(self) -> list[ldap3.Server]:
        cfg = self.config
        tls = None
        if cfg.start_tls or any(uri.startswith("ldaps://") for uri in cfg.uris):
            import ssl  # only when the directory is reached over TLS

            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file or None)
        return [ldap3.Server(uri, connect_timeout=cfg.timeout, get_info=ldap3.NONE, tls=tls)
                for uri in cfg.uris]

    def _open(self, user: str, password: str) -> ldap3.Connection:
        """A connection bound as ``user`` to the first server of ``ldap.uris`` that answers,
        each tried once in order (ldap3's ServerPool is not used: its availability check
        fails on ldapi:// sockets in 2.9, and it sleeps between rounds). A server that
        answers and refuses the bind ends the search: the credentials are the problem."""
        problems = []
        for server in self._servers():
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
                _unbind(conn)
                raise
            except lexc.LDAPException as err:
                _unbind(conn)
                problems.append(f"{server.name}: {step}: {_describe(err)}")
        raise DirectoryUnavailable("no server answered: " + "; ".join(problems))

    @property
    def conn(self) -> ldap3.Connection:
        if self._conn is None:
            cfg = self.config
            if self.write:
                if not cfg.write_bind_dn:
                    raise DirectoryError("ldap.write_bind_dn is not configured")
                dn, key, path = cfg.write_bind_dn, "ldap.write_bind_password_file", \
                    cfg.write_bind_password_file
            else:
                dn, key, path = cfg.bind_dn, "ldap.bind_password_file", cfg.bind_password_file
            password = read_secret_file(path, key)
            try:
                self._conn = self._open(dn, password)
            except lexc.LDAPInvalidCredentialsResult:
                # A server answered: not an outage, so on_directory_error = "allow" does
                # not cover it.
                raise DirectoryError(f"bind as {dn} refused: invalid credentials") from None
            except lexc.LDAPException as err:
                raise DirectoryUnavailable(_describe(err)) from None
        return self._conn

    def _call(self, what: str, operation: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one ldap3 operation, turning its exceptions into DirectoryError; the
        connection, whose ``result`` holds the answer."""
        conn = self.conn
        try:
            operation(conn, *args, **kwargs)
        except (lexc.LDAPCommunicationError, lexc.LDAPSessionTerminatedByServerError,
                lexc.LDAPResponseTimeoutError, lexc.LDAPServerPoolExhaustedError) as err:
            self._conn = None
            raise DirectoryUnavailable(f"{what}: {_describe(err)}") from None
        except lexc.LDAPOperationResult as err:
            raise DirectoryError(f"{what}: {_describe(err)}", err.result) from None
        except lexc.LDAPException as err:
            raise DirectoryError(f"{what}: {_describe(err)}") from None
        return conn

    def _search(self, base: str, filter_: str, attributes: list[str], *,
                scope: str = ldap3.SUBTREE, size_limit: int = 0) -> list[dict]:
        """The entries found. A search the server cut short (its size or time limit;
        ldap3 does not raise for those) is an error, never a short answer; only a
        ``size_limit`` of our own may end it early."""
        try:
            conn = self._call(f"search {base}", ldap3.Connection.search, base, filter_,
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

    def _read(self, dn: str, attributes: list[str]) -> dict | None:
        found = self._search(dn, "(objectClass=*)", attributes, scope=ldap3.BASE)
        return found[0] if found else None

    def _modify(self, dn: str, changes: dict) -> None:
        self._call(f"modify {dn}", ldap3.Connection.modify, dn, changes)

    # -- reading --------------------------------------------------------------------------

    def find_user(self, username: str) -> tuple[str, dict]:
        """The DN and raw attributes of the one entry for ``username``."""
        if not acceptable_username(username):
            raise UserNotFound("not an acceptable user name")
        filter_ = self.config.user_filter.format(username=escape_filter_chars(username))
        found = self._search(self.config.user_base, filter_, ["objectClass", "oathTOTPToken"],
                             size_limit=2)
        if not found:
            raise UserNotFound("no directory entry for the user")
        if len(found) > 1:
            raise EntryError("more than one directory entry matches the user name")
        return found[0]["dn"], found[0]["raw_attributes"]

    def read_state(self, username: str, groups: tuple[str, ...] = ()) -> UserState:
        """The user's linked token and whether they are a member of each of ``groups``
        (the ones the caller will ask about); DirectoryError if any part is unreadable."""
        dn, attrs = self.find_user(username)
        links = attrs.get("oathTOTPToken", [])
        if len(links) > 1:
            raise EntryError(f"user entry {dn}: more than one oathTOTPToken")
        token = self.read_token(links[0].decode("utf-8", "replace")) if links else None
        return UserState(username=username, dn=dn, token=token,
                         memberships={group: self.is_member(group, dn) for group in groups})

    def is_member(self, group_dn: str, member_dn: str) -> bool:
        """Whether ``group_dn`` lists ``member_dn``. The server compares (distinguishedName
        matching), so "cn=Staff, ou=Groups" and "cn=staff,ou=groups" are the same group; a
        group that does not exist is an error, never "not a member"."""
        conn = self._call(f"compare {group_dn}", ldap3.Connection.compare, group_dn, "member",
                          member_dn)
        code = conn.result.get("result")
        if code not in (COMPARE_TRUE, COMPARE_FALSE):
            raise DirectoryError(f"compare {group_dn}: {conn.result.get('description')}", code)
        return code == COMPARE_TRUE

    def read_token(self, dn: str) -> Token:
        """A token entry under token_base and its params; EntryError if anything is off."""
        if not _is_below(dn, self.config.token_base):
            raise EntryError(f"token {dn!r} is not under {self.config.token_base}")
        entry = self._read(dn, TOKEN_ATTRS)
        if entry is None:
            raise EntryError(f"token entry {dn} does not exist")
        raw = entry["raw_attributes"]
        secret = _one(raw, "oathSecret", dn)
        if len(secret) < 16:
            raise EntryError(f"token entry {dn}: oathSecret is shorter than 128 bits")
        params_dn = _one(raw, "oathTOTPParams", dn).decode("utf-8", "replace")
        if not _is_below(params_dn, self.config.token_base):
            raise EntryError(f"token entry {dn}: params {params_dn!r} not under token_base")
        params_entry = self._read(params_dn, PARAMS_ATTRS)
        if params_entry is None:
            raise EntryError(f"params entry {params_dn} does not exist")
        params, max_failures = _parse_params(params_entry["raw_attributes"], params_dn)
        last_failure = raw.get("oathLastFailure")
        return Token(
            dn=entry["dn"], secret=secret, params=params, max_failures=max_failures,
            last_step=_int(raw, "oathTOTPLastTimeStep", dn, default=0),
            failures=_int(raw, "oathFailureCount", dn, default=0),
            last_failure=_parse_time(last_failure[0], dn) if last_failure else None)

    def check_password(self, username: str, password: str) -> bool:
        """First factor for the site: a simple bind as the user. An empty password is
        refused before any bind (it would be an unauthenticated bind that "succeeds")."""
        if not password or "\x00" in password:
            return False
        try:
            dn, _ = self.find_user(username)
        except UserNotFound:
            return False
        try:
            self._open(dn, password).unbind()
        except lexc.LDAPInvalidCredentialsResult:
            return False
        except lexc.LDAPException as err:
            raise DirectoryUnavailable(_describe(err)) from None
        return True

    def missing_schema(self, names: tuple[str, ...]) -> list[str]:
        """Which of these object classes the server's subschema does not define."""
        entry = self._read("cn=Subschema", ["objectClasses"])
        defined = b" ".join(entry["raw_attributes"].get("objectClasses", [])) if entry else b""
        return [name for name in names if f"NAME '{name}'".encode() not in defined]

    def exists(self, dn: str) -> bool:
        """Whether this connection can see the entry ``dn``."""
        return self._read(dn, ["1.1"]) is not None

    def entries_visible_to(self, base: str, bind_dn: str | None = None,
                           password: str | None = None) -> int:
        """How many entries under ``base`` a search as ``bind_dn`` (default: anonymous)
        returns: the ACL check of ``campus-mfa doctor``."""
        try:
            conn = self._open(bind_dn or "", password or "")
            try:
                conn.search(base, "(objectClass=*)", attributes=["oathSecret"])
                return len([e for e in conn.response if e.get("type") == "searchResEntry"])
            finally:
                conn.unbind()
        except lexc.LDAPNoSuchObjectResult:
            return 0
        except lexc.LDAPException as err:
            raise DirectoryError(f"search {base} as {bind_dn or 'anonymous'}: "
                                 f"{_describe(err)}") from None

    # -- counters (service DN) ------------------------------------------------------------

    def record_success(self, token: Token, step: int, now: float) -> bool:
        """Mark ``step`` used and clear failures, if nobody changed the last step since
        ``token`` was read. False means another login got there first."""
        changes = {
            "oathTOTPLastTimeStep": [(ldap3.MODIFY_DELETE, [str(token.last_step)]),
                                     (ldap3.MODIFY_ADD, [str(step)])],
            "oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
            "oathLastLogin": [(ldap3.MODIFY_REPLACE, [_gentime(now)])],
        }
        return self._compare_and_swap(token.dn, changes)

    def count_attempt(self, token: Token, now: float) -> bool:
        """Add one to the failure counter if it still holds what ``token`` says (compare-
        and-swap); False if another attempt changed it first. An attempt is counted before
        its code is looked at, and a success clears the counter."""
        return self._compare_and_swap(token.dn, {
            "oathFailureCount": [(ldap3.MODIFY_DELETE, [str(token.failures)]),
                                 (ldap3.MODIFY_ADD, [str(token.failures + 1)])],
            "oathLastFailure": [(ldap3.MODIFY_REPLACE, [_gentime(now)])]})

    def reset_failures(self, token_dn: str) -> None:
        """Unlock: zero failures and forget the last failure."""
        self._modify(token_dn, {"oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
                                "oathLastFailure": [(ldap3.MODIFY_REPLACE, [])]})

    def _compare_and_swap(self, dn: str, changes: dict) -> bool:
        try:
            self._modify(dn, changes)
        except DirectoryError as err:
            # The value to delete is gone, or the one to add is there: another host won.
            if err.code in (NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS):
                return False
            raise
        return True

    # -- enrollment (enrollment DN) -------------------------------------------------------

    def create_pending_token(self, secret: bytes, params: TotpParams, max_failures: int,
                             now: float) -> str:
        """Store a new, unlinked token; its DN. Nothing about any user changes yet."""
        import secrets  # enrollment only, not the login path

        params_dn = self._ensure_params(params, max_failures)
        ident = secrets.token_hex(16)
        dn = f"cn={ident},{self.config.token_base}"
        self._call(f"add {dn}", ldap3.Connection.add, dn, ["device", "oathTOTPToken"], {
            "cn": ident, "oathTokenIdentifier": ident, "oathSecret": secret,
            "oathSecretTime": _gentime(now), "oathTOTPParams": params_dn,
            "oathTOTPLastTimeStep": "0", "oathFailureCount": "0"})
        return dn

    def _ensure_params(self, params: TotpParams, max_failures: int) -> str:
        name = (f"totp-{params.algorithm.lower()}-{params.digits}-{params.period}"
                f"-w{params.window}-f{max_failures}")
        dn = f"cn={name},{self.config.token_base}"
        if not self.exists(dn):
            try:
                self._call(f"add {dn}", ldap3.Connection.add, dn, ["device", "oathTOTPParams"], {
                    "cn": name, "oathOTPLength": str(params.digits),
                    "oathHMACAlgorithm": HMAC_OIDS[params.algorithm],
                    "oathTOTPTimeStepPeriod": str(params.period),
                    "oathTOTPTimeStepWindow": str(params.window),
                    "oathThrottleLimit": str(max_failures)})
            except DirectoryError as err:
                if err.code != ENTRY_ALREADY_EXISTS:  # another site worker made it
                    raise
        return dn

    def stale_pending_tokens(self, made_before: float) -> list[str]:
        """Tokens that no user links to and whose secret was made before ``made_before``:
        set-ups that were never confirmed."""
        found = self._search(self.config.token_base,
                             f"(&(objectClass=oathTOTPToken)"
                             f"(oathSecretTime<={_gentime(made_before)}))", ["1.1"])
        return [entry["dn"] for entry in found
                if not self._search(self.config.user_base,
                                    f"(oathTOTPToken={escape_filter_chars(entry['dn'])})",
                                    ["1.1"], size_limit=1)]

    def link_token(self, user: UserState, token_dn: str, step: int) -> None:
        """Confirm: record ``step`` as used on the new token, link it to the user in one
        modify (compare-and-swap on the previous link), then delete the previous token."""
        token = self.read_token(token_dn)
        if not self._compare_and_swap(token_dn, {"oathTOTPLastTimeStep": [
                (ldap3.MODIFY_DELETE, [str(token.last_step)]), (ldap3.MODIFY_ADD, [str(step)])]}):
            raise EntryError("the new token was used concurrently")
        if user.token is None:
            changes = {"objectClass": [(ldap3.MODIFY_ADD, ["oathTOTPUser"])],
                       "oathTOTPToken": [(ldap3.MODIFY_ADD, [token_dn])]}
        else:
            changes = {"oathTOTPToken": [(ldap3.MODIFY_DELETE, [user.token.dn]),
                                         (ldap3.MODIFY_ADD, [token_dn])]}
        if not self._compare_and_swap(user.dn, changes):
            raise EntryError("2-step verification was changed concurrently; start again")
        if user.token is not None:
            self.delete_token(user.token.dn)

    def unlink_token(self, user: UserState) -> None:
        """Turn 2-step verification off: unlink in one modify, then delete the token."""
        if user.token is None:
            return
        self._modify(user.dn, {"oathTOTPToken": [(ldap3.MODIFY_DELETE, [user.token.dn])],
                               "objectClass": [(ldap3.MODIFY_DELETE, ["oathTOTPUser"])]})
        self.delete_token(user.token.dn)

    def delete_token(self, dn: str) -> None:
        if not _is_below(dn, self.config.token_base):
            raise EntryError(f"token {dn!r} is not under {self.config.token_base}")
        try:
            self._call(f"delete {dn}", ldap3.Connection.delete, dn)
        except DirectoryError as err:
            if err.code != NO_SUCH_OBJECT:
                raise

    def set_role(self, user_dn: str, member: bool) -> None:
        """Add the user to the role group, or remove them; doing it twice changes nothing."""
        operation = ldap3.MODIFY_ADD if member else ldap3.MODIFY_DELETE
        try:
            self._modify(self.config.role_group, {"member": [(operation, [user_dn])]})
        except DirectoryError as err:
            if err.code not in (ATTRIBUTE_OR_VALUE_EXISTS, NO_SUCH_ATTRIBUTE):
                raise


def _unbind(conn: ldap3.Connection) -> None:
    """Unbind and close, quietly. ldap3 leaves the socket of a connection that failed to
    open (refused, timed out) open; close it here rather than wait for the collector."""
    try:
        conn.unbind()
    except lexc.LDAPException:
        pass
    if conn.socket is not None:
        conn.socket.close()


def acceptable_username(username: str) -> bool:
    """Refuse names no account can have: empty, overlong, or with spaces or control
    characters (LDAP matching ignores surrounding spaces, so " alice" would find alice)."""
    if not isinstance(username, str) or not 0 < len(username) <= MAX_USERNAME:
        return False
    return not any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in username)


def _describe(err: Exception) -> str:
    """An ldap3 exception as one line without arguments that could hold a password."""
    if isinstance(err, lexc.LDAPOperationResult):
        return f"{err.description} ({err.result})" + (f": {err.message}" if err.message else "")
    return type(err).__name__ + (f": {err}" if not isinstance(err, lexc.LDAPBindError) else "")


def _is_below(dn: str, base: str) -> bool:
    try:
        parts = [(a.lower(), v.lower()) for a, v, _ in parse_dn(dn)]
        base_parts = [(a.lower(), v.lower()) for a, v, _ in parse_dn(base)]
    except lexc.LDAPException:
        return False
    return len(parts) > len(base_parts) and parts[-len(base_parts):] == base_parts


def _one(raw: dict, name: str, dn: str) -> bytes:
    values = raw.get(name, [])
    if len(values) != 1:
        raise EntryError(f"entry {dn}: {name} must have exactly one value")
    return values[0]


def _int(raw: dict, name: str, dn: str, *, default: int) -> int:
    if name not in raw:
        return default
    text = _one(raw, name, dn)
    if not text.isdigit() or len(text) > 18:
        raise EntryError(f"entry {dn}: {name} is not a non-negative integer")
    return int(text)


def _parse_params(raw: dict, dn: str) -> tuple[TotpParams, int]:
    oid = _one(raw, "oathHMACAlgorithm", dn).decode("ascii", "replace")
    algorithm = next((name for name, known in HMAC_OIDS.items() if known == oid), None)
    if algorithm is None:
        raise EntryError(f"params entry {dn}: unsupported oathHMACAlgorithm {oid}")
    params = TotpParams(algorithm=algorithm, digits=_int(raw, "oathOTPLength", dn, default=0),
                        period=_int(raw, "oathTOTPTimeStepPeriod", dn, default=0),
                        window=_int(raw, "oathTOTPTimeStepWindow", dn, default=1))
    if params.digits not in (6, 7, 8) or not 15 <= params.period <= 300 or params.window > 10:
        raise EntryError(f"params entry {dn}: digits, period or window out of range")
    return params, _int(raw, "oathThrottleLimit", dn, default=10)


def _gentime(now: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


def _parse_time(value: bytes, dn: str) -> int:
    import calendar

    try:
        return calendar.timegm(time.strptime(value.decode("ascii")[:14], "%Y%m%d%H%M%S"))
    except (ValueError, UnicodeDecodeError):
        raise EntryError(f"entry {dn}: malformed timestamp") from None
