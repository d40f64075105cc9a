"""What every view needs: the config, one directory connection per request, where the
client is, who is signed in, and the two gates (signed in; on campus)."""
from __future__ import annotations

import functools
from typing import Any, Callable

from flask import current_app, g, redirect, render_template, request, session, url_for

from policy.audit import audit
from policy.config import Config
from policy.decision import CODE_REQUIRED, DENIED, decide
from policy.directory import Directory, UserNotFound
from policy.login import SET_UP_MESSAGE
from policy.network import Source, campus_network_of, normalize_source
from policy.state import UserState

SERVICE = "campus-mfa-enroll"
CAMPUS_ONLY_MESSAGE = ("This change is available from the campus network only. "
                       "Connect from campus and try again.")


def config() -> Config:
    return current_app.config["CAMPUS_MFA"]


def directory() -> Directory:
    """The request's connection as the enrollment DN (it may read state, update the shared
    counters and write MFA state); closed when the request ends."""
    if "directory" not in g:
        g.directory = Directory(config().ldap, write=True)
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
    return normalize_source(request.remote_addr or "", SERVICE, ())


def on_campus() -> bool:
    return campus_network_of(client_source(), config().policy.campus_networks) is not None


def log_event(outcome: str, reason: str, user: str | None = None, *,
              warning: bool = False) -> None:
    """One audit line for an enrollment event: facts only, never a code or a secret."""
    audit(config().audit, user=user if user is not None else session.get("user", "-"),
          service=SERVICE, source=client_source(), outcome=outcome, reason=reason,
          warning=warning)


def second_factor_done(state: UserState) -> bool:
    """True if this session entered a code from the user's current token."""
    return state.token is not None and session.get("verified_token") == state.token.dn


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Signed in, and -- off campus with 2-step verification On -- the code entered.

    Sets g.user (the UserState, read fresh) and g.campus for the view.
    """
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        username = session.get("user")
        if not username:
            return redirect(url_for("auth.login", next=request.endpoint))
        try:
            state = read_user_state(username)
        except UserNotFound:
            session.clear()
            return redirect(url_for("auth.login"))
        g.user = state
        g.campus = on_campus()
        decision = decide(client_source(), state, config().policy)
        if decision.outcome == CODE_REQUIRED and not second_factor_done(state):
            return redirect(url_for("auth.verify", next=request.endpoint))
        if decision.outcome == DENIED:
            log_event("refused", decision.reason, warning=True)
            return render_template("campus_only.html", message=SET_UP_MESSAGE,
                                   denied=True), 403
        return view(*args, **kwargs)
    return wrapped


def campus_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse changes of MFA state from off campus (after login_required)."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.campus:
            log_event("refused", f"{request.endpoint} from off campus", warning=True)
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
