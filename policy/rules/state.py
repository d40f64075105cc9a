"""A user's MFA state as read from the directory; plain data, no I/O."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the campus path never loads the TOTP code
    from .totp import TotpParams


@dataclass(frozen=True)
class Token:
    """An OATH-LDAP TOTP token entry and its counters."""

    dn: str
    secret: bytes
    params: TotpParams
    max_failures: int
    last_step: int            # oathTOTPLastTimeStep: only codes of a later step are accepted
    failures: int             # oathFailureCount: consecutive failures, reset on success
    last_failure: int | None  # oathLastFailure as Unix seconds; the back-off counts from it


@dataclass(frozen=True)
class UserState:
    """What the decision and the site need to know about one user."""

    username: str
    dn: str
    token: Token | None       # the linked token: 2-step verification is On
    # Group DN as configured -> member or not, for the groups asked about when the state
    # was read (the directory compares DNs, so their spelling does not matter).
    memberships: Mapping[str, bool] = field(default_factory=dict)

    def in_group(self, group_dn: str) -> bool:
        """KeyError for a group that was not asked about: a bug, never "not a member"."""
        return self.memberships[group_dn]


@dataclass(frozen=True)
class Unreadable:
    """The state could not be read; never to be mistaken for "not enrolled"."""

    reason: str
    user_unknown: bool = False  # no directory entry at all (or a name that cannot be one)
    unreachable: bool = False   # no server answered: the only case "allow" lets through
