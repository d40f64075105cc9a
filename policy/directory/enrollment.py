"""What the enrollment DN writes: pending tokens, the link that turns 2-step verification
On, its removal, the role group, and the helpdesk's unlock (the site, the admin command).
It reads as the service DN does, bound as ``ldap.write_bind_dn``."""
from __future__ import annotations

import ldap3

from ..errors import DirectoryError, EntryError
from ..rules.state import UserState
from ..rules.totp import TotpParams
from .connection import (ATTRIBUTE_OR_VALUE_EXISTS, ENTRY_ALREADY_EXISTS, NO_SUCH_ATTRIBUTE,
                         NO_SUCH_OBJECT)
from .entries import gentime, is_below, params_attributes
from .service import ServiceDirectory


class EnrollmentDirectory(ServiceDirectory):
    """The directory as the enrollment DN (``ldap.write_bind_dn``) sees it."""

    def credentials(self) -> tuple[str, str, str]:
        if not self.config.write_bind_dn:
            raise DirectoryError("ldap.write_bind_dn is not configured")
        return (self.config.write_bind_dn, "ldap.write_bind_password_file",
                self.config.write_bind_password_file)

    def create_pending_token(self, secret: bytes, params: TotpParams, max_failures: int,
                             now: float) -> str:
        """Store a new, unlinked token; its DN. Nothing about any user changes yet."""
        import secrets  # enrollment only, not the login path

        params_dn = self.ensure_params(params, max_failures)
        ident = secrets.token_hex(16)
        dn = f"cn={ident},{self.config.token_base}"
        self.call(f"add {dn}", ldap3.Connection.add, dn, ["device", "oathTOTPToken"],
                  write=True, attributes={
                      "cn": ident, "oathTokenIdentifier": ident, "oathSecret": secret,
                      "oathSecretTime": gentime(now), "oathTOTPParams": params_dn,
                      "oathTOTPLastTimeStep": "0", "oathFailureCount": "0"})
        return dn

    def ensure_params(self, params: TotpParams, max_failures: int) -> str:
        """The DN of the params entry for these values, made if it is not there yet."""
        name = (f"totp-{params.algorithm.lower()}-{params.digits}-{params.period}"
                f"-w{params.window}-f{max_failures}")
        dn = f"cn={name},{self.config.token_base}"
        if not self.exists(dn):
            try:
                self.call(f"add {dn}", ldap3.Connection.add, dn, ["device", "oathTOTPParams"],
                          write=True,
                          attributes={"cn": name, **params_attributes(params, max_failures)})
            except DirectoryError as err:
                if err.code != ENTRY_ALREADY_EXISTS:  # another site worker made it
                    raise
        return dn

    def stale_pending_tokens(self, made_before: float) -> list[str]:
        """Tokens that no user links to and whose secret was made before ``made_before``:
        set-ups that were never confirmed. Two paged searches (the links, the old tokens),
        not one search per token: 50,000 tokens take seconds."""
        linked = {value.decode("utf-8", "replace").lower()
                  for entry in self.search_paged(self.config.user_base, "(oathTOTPToken=*)",
                                                 ["oathTOTPToken"])
                  for value in entry["raw_attributes"].get("oathTOTPToken", [])}
        old = self.search_paged(self.config.token_base,
                                f"(&(objectClass=oathTOTPToken)"
                                f"(oathSecretTime<={gentime(made_before)}))", ["1.1"])
        return [entry["dn"] for entry in old if entry["dn"].lower() not in linked]

    def link_token(self, user: UserState, token_dn: str, step: int) -> None:
        """Confirm: record ``step`` as used on the new token, link it to the user in one
        modify (compare-and-swap on the previous link), then delete the previous token."""
        token = self.read_token(token_dn)
        if not self.compare_and_swap(token_dn, {"oathTOTPLastTimeStep": [
                (ldap3.MODIFY_DELETE, [str(token.last_step)]), (ldap3.MODIFY_ADD, [str(step)])]}):
            raise EntryError("the new token was used concurrently")
        if user.token is None:
            changes = {"objectClass": [(ldap3.MODIFY_ADD, ["oathTOTPUser"])],
                       "oathTOTPToken": [(ldap3.MODIFY_ADD, [token_dn])]}
        else:
            changes = {"oathTOTPToken": [(ldap3.MODIFY_DELETE, [user.token.dn]),
                                         (ldap3.MODIFY_ADD, [token_dn])]}
        if not self.compare_and_swap(user.dn, changes):
            raise EntryError("2-step verification was changed concurrently; start again")
        if user.token is not None:
            self.delete_token(user.token.dn)

    def unlink_token(self, user: UserState) -> None:
        """Turn 2-step verification off: unlink in one modify, then delete the token."""
        if user.token is None:
            return
        self.modify(user.dn, {"oathTOTPToken": [(ldap3.MODIFY_DELETE, [user.token.dn])],
                              "objectClass": [(ldap3.MODIFY_DELETE, ["oathTOTPUser"])]})
        self.delete_token(user.token.dn)

    def delete_token(self, dn: str) -> None:
        if not is_below(dn, self.config.token_base):
            raise EntryError(f"token {dn!r} is not under {self.config.token_base}")
        try:
            self.call(f"delete {dn}", ldap3.Connection.delete, dn, write=True)
        except DirectoryError as err:
            if err.code != NO_SUCH_OBJECT:
                raise

    def set_role(self, user_dn: str, member: bool) -> None:
        """Add the user to the role group, or remove them; doing it twice changes nothing."""
        operation = ldap3.MODIFY_ADD if member else ldap3.MODIFY_DELETE
        try:
            self.modify(self.config.role_group, {"member": [(operation, [user_dn])]})
        except DirectoryError as err:
            if err.code not in (ATTRIBUTE_OR_VALUE_EXISTS, NO_SUCH_ATTRIBUTE):
                raise

    def reset_failures(self, token_dn: str) -> None:
        """Unlock: zero failures and forget the last failure."""
        self.modify(token_dn, {"oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
                               "oathLastFailure": [(ldap3.MODIFY_REPLACE, [])]})
