"""What a signed-in session was granted under, and when that ends it.

At sign-in the session records the user's MFA state (the linked token's DN, the role, and
what a login from off campus needs: nothing more, the code, or a refusal) and when it was
signed in. A change behind the session's back -- ``campus-mfa reset``/``revoke-role``, a new
token set up in another session -- ends it (the admin command needs no access to the
site's session store); a change made in this very session updates the record. The pages
read the user's state on every request; the gate (/auth) at most every
``web.recheck_seconds``, so that a protected site costs no LDAP round trip per request.
"""
from __future__ import annotations

import time

from flask import session

from policy.audit import FAILURE
from policy.rules.decision import decide
from policy.rules.network import Source
from policy.rules.state import UserState

from .context import config, has_role, log_event
from .sessions import renew_session

GRANTED = "granted_under"   # {"token": DN or "", "role": bool, "off_campus": outcome,
SIGNED_IN = "signed_in"     #  "checked": when}; SIGNED_IN: Unix time of the sign-in
VERIFIED = "verified_token"  # the DN of the token this session entered a code of
OFF_CAMPUS = Source("", via="any address off campus")
PAST_MAX_AGE = "signed in longer ago than web.session_max_age"


def record(state: UserState, *, at_sign_in: bool = False) -> None:
    """Keep what the session is granted under now (at sign-in, or after a check)."""
    if at_sign_in:
        session[SIGNED_IN] = int(time.time())
    session[GRANTED] = {"token": state.token.dn if state.token else "",
                        "role": has_role(state), "checked": int(time.time()),
                        "off_campus": decide(OFF_CAMPUS, state, config().policy).outcome}


def note_own_change(*, token: str | None = None, role: bool | None = None) -> None:
    """This session changed the user's state itself (confirmed or removed a token,
    activated the role): the session goes on under the new state."""
    granted = dict(session.get(GRANTED) or {})
    if token is not None:
        granted["token"] = token
        granted["checked"] = 0  # what off campus needs now: read it again
    if role is not None:
        granted["role"] = role
    session[GRANTED] = granted


def why_it_ends(state: UserState | None) -> str | None:
    """Why the session must end, or None (and the record is brought up to date). ``state``
    None: the user has no directory entry any more."""
    granted = session.get(GRANTED)
    if state is None:
        return "no directory entry for the user any more"
    if not isinstance(granted, dict):
        return "no record of the state it was granted under"
    if past_max_age():
        return PAST_MAX_AGE
    if granted.get("token") != (state.token.dn if state.token else ""):
        return "2-step verification changed since sign-in"
    if granted.get("role") and not has_role(state):
        return "role revoked since sign-in"
    record(state)  # a role granted meanwhile, or just a fresh look
    return None


def past_max_age() -> bool:
    """Whether the session was signed in longer ago than web.session_max_age."""
    return time.time() - session.get(SIGNED_IN, 0) > config().web.session_max_age


def end(reason: str) -> None:
    """End the session everywhere: the store forgets it, a copy of the cookie opens
    nothing."""
    log_event(FAILURE, f"session ended: {reason}")
    renew_session()


def code_entered(state: UserState) -> bool:
    """True if this session entered a code from the user's current token."""
    return state.token is not None and session.get(VERIFIED) == state.token.dn


def due_for_a_check() -> bool:
    """Whether the gate's view of the user is older than web.recheck_seconds."""
    granted = session.get(GRANTED) or {}
    return time.time() - granted.get("checked", 0) >= config().web.recheck_seconds
