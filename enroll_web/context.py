"""What every view needs: the config, one directory connection per request, where the
client is, who is signed in, and the two gates (signed in; on campus)."""
from __future__ import annotations

import functools
from typing import Any, Callable

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import FAILURE, SUCCESS, audit
from policy.config import Config
from policy.directory.enrollment import EnrollmentDirectory
from policy.errors import UserNotFound
from policy.messages import CAMPUS_ONLY_MESSAGE, SESSION_ENDED_MESSAGE, SET_UP_MESSAGE
from policy.rules.decision import CODE_REQUIRED, DENIED, decide
from policy.rules.network import Source, campus_network_of, normalize_source
from policy.rules.state import UserState

from .sessions import renew_session

SERVICE = "campus-mfa-enroll"
# The MFA state a session was granted under: {"token": linked token DN or "", "role": bool}.
GRANTED = "granted_under"


def config() -> Config:
    return current_app.config["CAMPUS_MFA"]


def directory() -> EnrollmentDirectory:
    """The request's connection as the enrollment DN (it may read state, update the shared
    counters and write MFA state); closed when the request ends."""
    if "directory" not in g:
        g.directory = EnrollmentDirectory(config().ldap)
    return g.directory


def read_user_state(username: str) -> UserState:
    """The user's state with the memberships the site asks about: the role group and the
    required groups (for the decision)."""
    return directory().read_state(
        username, (config().ldap.role_group, *config().policy.required_groups))


def close_directory(_exc: BaseException | None = None) -> None:
    found = g.pop("directory", None)
    if found is not None:
        found.close()


def client_source() -> Source:
    """The client address as policy/ sees a PAM_RHOST. No service is "local" here, so a
    request without an address is off campus."""
    return normalize_source(request.remote_addr or "")


def on_campus() -> bool:
    return campus_network_of(client_source(), config().policy.campus_networks) is not None


def log_event(outcome: str, reason: str, user: str | None = None) -> None:
    """One audit line for an enrollment event: facts only, never a code or a secret."""
    audit(config().audit, user=user if user is not None else session.get("user", "-"),
          service=SERVICE, source=client_source(), outcome=outcome, reason=reason,
          warning=outcome != SUCCESS)


def second_factor_done(state: UserState) -> bool:
    """True if this session entered a code from the user's current token."""
    return state.token is not None and session.get("verified_token") == state.token.dn


def remember_granted(state: UserState) -> None:
    """At sign-in: the user's MFA state this session is granted under."""
    session[GRANTED] = {"token": state.token.dn if state.token else "",
                        "role": has_role(state)}


def note_own_change(*, token: str | None = None, role: bool | None = None) -> None:
    """This session changed the user's state itself (confirmed or removed a token,
    activated the role): the session goes on under the new state."""
    granted = dict(session.get(GRANTED) or {})
    if token is not None:
        granted["token"] = token
    if role is not None:
        granted["role"] = role
    session[GRANTED] = granted


def changed_behind_the_session(state: UserState) -> str | None:
    """Why the session must end, or None: its token was removed or replaced, or its role
    revoked, other than by the session itself (``campus-mfa reset``/``revoke-role``, or
    another session of the user). The admin command needs no access to the site's store."""
    granted = session.get(GRANTED)
    if not isinstance(granted, dict):
        return "no record of the state it was granted under"
    if granted.get("token") != (state.token.dn if state.token else ""):
        return "2-step verification changed since sign-in"
    if not has_role(state):
        if granted.get("role"):
            return "role revoked since sign-in"
    elif not granted.get("role"):
        note_own_change(role=True)  # granted meanwhile: nothing to end
    return None


def end_session(reason: str) -> ResponseReturnValue:
    """End the session everywhere (the store forgets it) and send the user to log in."""
    log_event(FAILURE, f"session ended: {reason}")
    renew_session()
    flash(SESSION_ENDED_MESSAGE)
    return redirect(url_for("auth.login"))


def read_signed_in_state(username: str) -> UserState | ResponseReturnValue:
    """The user's state read fresh, or the answer that ends a session whose grounds are
    gone (the user, the token or the role it was granted under)."""
    try:
        state = read_user_state(username)
    except UserNotFound:
        return end_session("no directory entry for the user any more")
    reason = changed_behind_the_session(state)
    return end_session(reason) if reason else state


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Signed in, the session still valid for the user's MFA state, and -- off campus with
    2-step verification On -- the code entered.

    Sets g.user (the UserState, read fresh) and g.campus for the view.
    """
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        username = session.get("user")
        if not username:
            return redirect(url_for("auth.login", next=request.endpoint))
        state = read_signed_in_state(username)
        if not isinstance(state, UserState):
            return state
        g.user = state
        g.campus = on_campus()
        decision = decide(client_source(), state, config().policy)
        if decision.outcome == CODE_REQUIRED and not second_factor_done(state):
            return redirect(url_for("auth.verify", next=request.endpoint))
        if decision.outcome == DENIED:
            log_event(FAILURE, decision.reason)
            return render_template("campus_only.html", message=SET_UP_MESSAGE,
                                   denied=True), 403
        return view(*args, **kwargs)
    return wrapped


def campus_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse changes of MFA state from off campus (after login_required)."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.campus:
            log_event(FAILURE, f"{request.endpoint} from off campus")
            return render_template("campus_only.html", message=CAMPUS_ONLY_MESSAGE), 403
        return view(*args, **kwargs)
    return wrapped


def has_role(state: UserState) -> bool:
    return state.in_group(config().ldap.role_group)


SAFE_NEXT = ("portal.user_info", "mfa.status", "mfa.setup", "portal.index")


def next_url() -> str:
    """Where to go after login or the code: only a known page of this site."""
    target = request.args.get("next", "")
    return url_for(target if target in SAFE_NEXT else "portal.index")
