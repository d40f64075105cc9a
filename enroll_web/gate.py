"""The gate in front of other web sites (docs/web-gate.md): nginx asks ``GET /auth`` for
every request to a protected site (``auth_request``), and the portal answers from the
session alone, without LDAP, what the client's address needs now:

- 200 with ``Remote-User: <uid>``: signed in, and from off campus with 2-step verification
  On the code entered in this session (a session signed in on campus is asked for it the
  first time it is used from off campus: the step-up);
- 401 with ``Location``: the portal's sign-in, ``rd`` the original URL (X-Original-URL, set
  by nginx), which nginx sends the browser to.

The user's state is read again at most every ``web.recheck_seconds`` (grants.py), so a reset
or a revoked role ends the session within that. The client's address is the trusted
X-Forwarded-For hop, as for every page of the portal.
"""
from __future__ import annotations

from flask import Blueprint, Response, request, session, url_for

from policy.errors import DirectoryError, UserNotFound
from policy.rules.decision import CODE_REQUIRED, EXEMPT

from . import grants
from .context import config, on_campus, read_user_state
from .redirects import safe_destination

bp = Blueprint("gate", __name__)


@bp.route("/auth")
def auth() -> Response:
    user = session.get("user")
    if user and _passes(user):
        return Response(status=200, headers={"Remote-User": user})
    return Response(status=401, headers={"Location": sign_in_url()})


def _passes(user: str) -> bool:
    """Whether this session may pass from the client's address now."""
    if grants.past_max_age():  # every request: the recheck below is not due on each
        grants.end(grants.PAST_MAX_AGE)
        return False
    if grants.due_for_a_check():
        try:
            state = read_user_state(user)
        except UserNotFound:
            state = None
        except DirectoryError:
            return False  # fail closed: the sign-in page says the service is unavailable
        reason = grants.why_it_ends(state)
        if reason is not None:
            grants.end(reason)
            return False
    if on_campus():
        return True
    granted = session[grants.GRANTED]
    if granted["off_campus"] == EXEMPT:
        return True
    return (granted["off_campus"] == CODE_REQUIRED and bool(granted["token"])
            and session.get(grants.VERIFIED) == granted["token"])


def sign_in_url() -> str:
    """The portal's sign-in for the page nginx was asked for (if the gate may send the
    browser back there)."""
    web = config().web
    back = safe_destination(request.headers.get("X-Original-URL"), web)
    path = url_for("auth.login", rd=back) if back else url_for("auth.login")
    return web.portal_url + path
