"""What the service DN does: find a user, read their MFA state, and move the shared
counters of a token by compare-and-swap (the PAM module, the admin command's reads).

Layout (DESIGN.md): the user entry gets aux class oathTOTPUser with oathTOTPToken naming a
token entry under ``token_base``; the token (device + oathTOTPToken) holds oathSecret and the
counters and names a params entry (device + oathTOTPParams). A token no user links to is a
pending one; linking it is the confirmation.
"""
from __future__ import annotations

import time

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.conv import escape_filter_chars

from ..errors import DirectoryError, DirectoryUnavailable, EntryError, UserNotFound
from ..rules.state import Token, UserState
from ..rules.totp import TotpParams
from .connection import COMPARE_FALSE, COMPARE_TRUE, Connection, describe
from .entries import (PARAMS_ATTRS, TOKEN_ATTRS, acceptable_username, gentime, is_below, one,
                      params_from, token_from)


PARAMS_TTL = 60.0  # seconds a params entry is kept (read_params)
_PARAMS: dict[str, tuple[float, tuple[TotpParams, int]]] = {}


class ServiceDirectory(Connection):
    """The directory as the service DN (``ldap.bind_dn``) sees it."""

    def credentials(self) -> tuple[str, str, str]:
        return self.config.bind_dn, "ldap.bind_password_file", self.config.bind_password_file

    # -- reading ----------------------------------------------------------------------------

    def find_user(self, username: str) -> tuple[str, dict]:
        """The DN and raw attributes of the one entry for ``username``."""
        if not acceptable_username(username):
            raise UserNotFound("not an acceptable user name")
        filter_ = self.config.user_filter.format(username=escape_filter_chars(username))
        found = self.search(self.config.user_base, filter_, ["oathTOTPToken"],
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
        conn = self.call(f"compare {group_dn}", ldap3.Connection.compare, group_dn, "member",
                         member_dn)
        code = conn.result.get("result")
        if code not in (COMPARE_TRUE, COMPARE_FALSE):
            raise DirectoryError(f"compare {group_dn}: {conn.result.get('description')}", code)
        return code == COMPARE_TRUE

    def read_token(self, dn: str) -> Token:
        """A token entry under token_base and its params; EntryError if anything is off."""
        if not is_below(dn, self.config.token_base):
            raise EntryError(f"token {dn!r} is not under {self.config.token_base}")
        entry = self.read(dn, TOKEN_ATTRS)
        if entry is None:
            raise EntryError(f"token entry {dn} does not exist")
        params_dn = one(entry["raw_attributes"], "oathTOTPParams", dn).decode("utf-8", "replace")
        if not is_below(params_dn, self.config.token_base):
            raise EntryError(f"token entry {dn}: params {params_dn!r} not under token_base")
        params, max_failures = self.read_params(params_dn)
        return token_from(entry["dn"], entry["raw_attributes"], params, max_failures)

    def read_params(self, dn: str) -> tuple[TotpParams, int]:
        """A params entry, from a short-lived cache in a resident process: the entries are
        named after their values (enrollment.py) and never change in place, and every
        login of the authd would read the same few."""
        cached = _PARAMS.get(dn)
        if cached is not None and time.monotonic() - cached[0] < PARAMS_TTL:
            return cached[1]
        entry = self.read(dn, PARAMS_ATTRS)
        if entry is None:
            raise EntryError(f"params entry {dn} does not exist")
        found = params_from(dn, entry["raw_attributes"])
        _PARAMS[dn] = (time.monotonic(), found)
        return found

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
            self.open(dn, password).unbind()
        except lexc.LDAPInvalidCredentialsResult:
            return False
        except lexc.LDAPException as err:
            raise DirectoryUnavailable(describe(err)) from None
        return True

    # -- what campus-mfa doctor asks ----------------------------------------------------------

    def missing_schema(self, names: tuple[str, ...]) -> list[str]:
        """Which of these object classes the server's subschema does not define."""
        entry = self.read("cn=Subschema", ["objectClasses"])
        defined = b" ".join(entry["raw_attributes"].get("objectClasses", [])) if entry else b""
        return [name for name in names if f"NAME '{name}'".encode() not in defined]

    def context_csns(self) -> dict[str, str]:
        """The contextCSN of ``base_dn`` by server ID: the newest change this server holds
        from each provider (empty without replication)."""
        entry = self.read(self.config.base_dn, ["contextCSN"])
        values = entry["raw_attributes"].get("contextCSN", []) if entry else []
        csns = [value.decode("ascii", "replace") for value in values]
        return {csn.split("#")[2]: csn for csn in csns if csn.count("#") == 3}

    def exists(self, dn: str) -> bool:
        """Whether this connection can see the entry ``dn``."""
        return self.read(dn, ["1.1"]) is not None

    def entries_visible_to(self, base: str, bind_dn: str | None = None,
                           password: str | None = None) -> int:
        """How many entries under ``base`` a search as ``bind_dn`` (default: anonymous)
        returns: the ACL check of ``campus-mfa doctor``."""
        try:
            conn = self.open(bind_dn or "", password or "")
            try:
                conn.search(base, "(objectClass=*)", attributes=["oathSecret"])
                return len([e for e in conn.response if e.get("type") == "searchResEntry"])
            finally:
                conn.unbind()
        except lexc.LDAPNoSuchObjectResult:
            return 0
        except lexc.LDAPException as err:
            raise DirectoryError(f"search {base} as {bind_dn or 'anonymous'}: "
                                 f"{describe(err)}") from None

    # -- the shared counters ------------------------------------------------------------------

    def record_success(self, token: Token, step: int, now: float) -> bool:
        """Mark ``step`` used and clear failures, if nobody changed the last step since
        ``token`` was read. False means another login got there first."""
        return self.compare_and_swap(token.dn, {
            "oathTOTPLastTimeStep": [(ldap3.MODIFY_DELETE, [str(token.last_step)]),
                                     (ldap3.MODIFY_ADD, [str(step)])],
            "oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
            "oathLastLogin": [(ldap3.MODIFY_REPLACE, [gentime(now)])]})

    def count_attempt(self, token: Token, now: float) -> bool:
        """Add one to the failure counter if it still holds what ``token`` says (compare-
        and-swap); False if another attempt changed it first. An attempt is counted before
        its code is looked at, and a success clears the counter."""
        return self.compare_and_swap(token.dn, {
            "oathFailureCount": [(ldap3.MODIFY_DELETE, [str(token.failures)]),
                                 (ldap3.MODIFY_ADD, [str(token.failures + 1)])],
            "oathLastFailure": [(ldap3.MODIFY_REPLACE, [gentime(now)])]})
