"""Log in with the campus account, Enter Verification Code (off campus), log out."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import FAILURE, SUCCESS
from policy.directory.entries import acceptable_username
from policy.errors import UserNotFound
from policy.messages import LOGGED_OUT, LOGIN_FAILED, MISMATCH_MESSAGE
from policy.rules.decision import CODE_REQUIRED, DENIED, decide
from policy.rules.state import UserState

from . import grants
from .codes import check_current_code
from .context import client_source, config, directory, log_event, next_url, read_user_state
from .forms import LoginForm, LogoutForm, VerificationForm
from .guards import set_up_first, signed_in_state
from .limits import limit_code, limit_login
from .redirects import safe_destination
from .sessions import renew_session

bp = Blueprint("auth", __name__)


def first_factor(username: str, password: str) -> bool:
    """The campus password: an LDAP bind as the user, or the host's PAM stack. An empty
    password never reaches either (an empty simple bind is an anonymous one)."""
    if not password or not acceptable_username(username):
        return False
    web = config().web
    if web.first_factor == "ldap":
        return directory().check_password(username, password)
    import pam  # python3-pampy; only sites configured with first_factor = "pam" need it

    if not pam.pam().authenticate(username, password, service=web.pam_service):
        return False
    try:  # the account must also be in the directory, where its MFA state lives
        directory().find_user(username)
    except UserNotFound:
        return False
    return True


@bp.route("/login", methods=["GET", "POST"])
@limit_login
def login() -> ResponseReturnValue:
    """Log in with your CIS account. Sent here by the gate while signed in (a session
    from campus now used from off campus: the step-up), the code comes next without the
    password."""
    if request.method == "GET" and session.get("user") and request.args.get("rd"):
        return redirect(url_for("auth.verify", **onward_args()))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data or ""
        if first_factor(username, form.password.data or ""):
            state = read_user_state(username)
            renew_session()  # a new session under a new id: nothing from before survives
            session["user"] = username
            grants.record(state, at_sign_in=True)
            log_event(SUCCESS, "password accepted", username)
            # Off campus with 2-step verification On, the code comes next; else it
            # passes straight on.
            return redirect(url_for("auth.verify", **onward_args()))
        log_event(FAILURE, "password refused or unknown user", username)
        error = LOGIN_FAILED
    elif form.is_submitted():
        error = LOGIN_FAILED
    return render_template("login.html", form=form, error=error)


@bp.route("/verify", methods=["GET", "POST"])
@limit_code
def verify() -> ResponseReturnValue:
    """Enter Verification Code: off campus with 2-step verification On."""
    username = session.get("user")
    if not username:
        return redirect(url_for("auth.login", **onward_args()))
    state = signed_in_state(username)
    if not isinstance(state, UserState):
        return state
    decision = decide(client_source(), state, config().policy)
    if decision.outcome == DENIED:
        return set_up_first(decision.reason)
    if decision.outcome != CODE_REQUIRED or grants.code_entered(state):
        return redirect(onward())
    form = VerificationForm()
    error = None
    if form.validate_on_submit():
        error = check_current_code(state, form.code.data or "", "off-campus sign-in")
        if error is None:
            session[grants.VERIFIED] = state.token.dn  # type: ignore[union-attr]
            return redirect(onward())
    elif form.is_submitted():
        error = MISMATCH_MESSAGE
    return render_template("verify.html", form=form, error=error)


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    if LogoutForm().validate_on_submit() and session.get("user"):
        log_event(SUCCESS, "logged out")
    renew_session()  # the store forgets the session: every protected site closes too
    flash(LOGGED_OUT)
    return redirect(url_for("auth.login"))


def onward_args() -> dict[str, str]:
    """The query that carries the destination from one sign-in step to the next."""
    return {key: value for key in ("rd", "next") if (value := request.args.get(key))}


def onward() -> str:
    """After sign-in: the protected page asked for (``rd``, if the gate may send the browser
    there), else a page of the portal."""
    return safe_destination(request.args.get("rd"), config().web) or next_url()
