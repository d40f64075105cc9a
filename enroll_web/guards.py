"""The two gates of the portal's own pages: signed in (with the code off campus when
2-step verification is On, and the session still valid), and on campus for changes."""
from __future__ import annotations

import functools
from typing import Any, Callable

from flask import flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import FAILURE
from policy.errors import UserNotFound
from policy.messages import CAMPUS_ONLY_MESSAGE, SESSION_ENDED_MESSAGE, SET_UP_MESSAGE
from policy.rules.decision import CODE_REQUIRED, DENIED, decide
from policy.rules.state import UserState

from . import grants
from .context import client_source, config, log_event, on_campus, read_user_state


def signed_in_state(username: str) -> UserState | ResponseReturnValue:
    """The user's state read fresh, or the answer that ends a session whose grounds are
    gone (the user, the token or the role it was granted under, or its age)."""
    try:
        state: UserState | None = read_user_state(username)
    except UserNotFound:
        state = None
    reason = grants.why_it_ends(state)
    if reason is None:
        return state  # type: ignore[return-value]
    grants.end(reason)
    flash(SESSION_ENDED_MESSAGE)
    return redirect(url_for("auth.login"))


def set_up_first(reason: str) -> ResponseReturnValue:
    """Off campus, no token, and 2-step verification required: the set-up message."""
    log_event(FAILURE, reason)
    return render_template("campus_only.html", message=SET_UP_MESSAGE, denied=True), 403


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
        state = signed_in_state(username)
        if not isinstance(state, UserState):
            return state
        g.user = state
        g.campus = on_campus()
        decision = decide(client_source(), state, config().policy)
        if decision.outcome == CODE_REQUIRED and not grants.code_entered(state):
            return redirect(url_for("auth.verify", next=request.endpoint))
        if decision.outcome == DENIED:
            return set_up_first(decision.reason)
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
