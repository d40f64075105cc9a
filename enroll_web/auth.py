"""Log in with the campus account, Enter Verification Code (off campus), log out."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import FAILURE, SUCCESS
from policy.directory.entries import acceptable_username
from policy.errors import UserNotFound
from policy.messages import LOGGED_OUT, LOGIN_FAILED, MISMATCH_MESSAGE
from policy.rules.decision import CODE_REQUIRED, decide
from policy.rules.state import UserState

from .codes import check_current_code
from .context import (client_source, config, directory, log_event, next_url, read_signed_in_state,
                      read_user_state, remember_granted, second_factor_done)
from .forms import LoginForm, LogoutForm, VerificationForm
from .limits import limit_code, limit_login
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
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data or ""
        if first_factor(username, form.password.data or ""):
            state = read_user_state(username)
            renew_session()  # a new session under a new id: nothing from before survives
            session["user"] = username
            remember_granted(state)
            log_event(SUCCESS, "password accepted", username)
            # Off campus with 2-step verification On, the code comes next; else it
            # passes straight on.
            return redirect(url_for("auth.verify", next=request.args.get("next")))
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
        return redirect(url_for("auth.login"))
    state = read_signed_in_state(username)
    if not isinstance(state, UserState):
        return state
    decision = decide(client_source(), state, config().policy)
    if decision.outcome != CODE_REQUIRED or second_factor_done(state):
        return redirect(next_url())
    form = VerificationForm()
    error = None
    if form.validate_on_submit():
        error = check_current_code(state, form.code.data or "", "off-campus sign-in")
        if error is None:
            session["verified_token"] = state.token.dn  # type: ignore[union-attr]
            return redirect(next_url())
    elif form.is_submitted():
        error = MISMATCH_MESSAGE
    return render_template("verify.html", form=form, error=error)


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    if LogoutForm().validate_on_submit() and session.get("user"):
        log_event(SUCCESS, "logged out")
    renew_session()  # the store forgets the session: a copy of the cookie opens nothing
    flash(LOGGED_OUT)
    return redirect(url_for("auth.login"))
