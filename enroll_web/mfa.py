"""Set up Multi-Factor Authentication: status, 2 Factor Authentication Setup, the token
application (QR code and key), Confirm, and turning 2-step verification off.

The pending token lives in the directory, unlinked; the session holds only its DN: no
secret ever goes into a session, not even the server-side one.
"""
from __future__ import annotations

import time

from flask import Blueprint, flash, g, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import FAILURE, SUCCESS
from policy.errors import EntryError
from policy.messages import (CHANGED_MEANWHILE, CONFIRM_MISMATCH, NEEDS_ROLE, NOW_OFF, NOW_ON,
                             START_AGAIN)
from policy.rules.state import Token
from policy.rules.totp import (grouped, matching_step, new_secret, parse_code, provisioning_uri,
                               to_base32)

from .codes import check_current_code
from .context import config, directory, has_role, log_event
from .forms import ConfirmForm, TokenAppForm, TurnOffForm
from .grants import note_own_change
from .guards import campus_only, login_required
from .limits import limit_code
from .qr import qr_svg

bp = Blueprint("mfa", __name__, url_prefix="/mfa")

APPS = ("Google Authenticator", "Microsoft Authenticator",
        "the password manager built into iPhone and iPad")


def _needs_role() -> ResponseReturnValue:
    return render_template("error.html", title="Request a Role first", message=NEEDS_ROLE), 403


def _forget_pending() -> str | None:
    """Take this session's unconfirmed token out of the session; its DN, if any."""
    session.pop("pending_replaces", None)
    return session.pop("pending_token", None)


def _drop_pending() -> None:
    """Forget (and delete) this session's unconfirmed token, if any."""
    pending = _forget_pending()
    if pending:
        directory().delete_token(pending)


def _current_token_dn() -> str:
    return g.user.token.dn if g.user.token is not None else ""


@bp.route("")
@login_required
def status() -> ResponseReturnValue:
    """Set up Multi-Factor Authentication: 2-step verification On/Off."""
    return render_template("mfa_status.html", state=g.user, role=has_role(g.user),
                           campus=g.campus, off_form=TurnOffForm(), error=None)


@bp.route("/setup", methods=["GET", "POST"])
@login_required
@campus_only
@limit_code
def setup() -> ResponseReturnValue:
    """2 Factor Authentication Setup: choose 'Use a Token Application'. Replacing a token
    that is On needs a current code from it (a stolen password alone re-binds nothing)."""
    if not has_role(g.user):
        return _needs_role()
    form = TokenAppForm()
    error = None
    if form.validate_on_submit():
        if g.user.token is not None:
            error = check_current_code(g.user, form.current_code.data or "", "replace token")
        if error is None:
            _drop_pending()
            totp = config().totp
            session["pending_token"] = directory().create_pending_token(
                new_secret(), totp.new_token_params(), totp.max_failures, time.time())
            session["pending_replaces"] = _current_token_dn()
            log_event(SUCCESS, "new token created, waiting for confirmation")
            return redirect(url_for("mfa.token"))
    return render_template("mfa_setup.html", form=form, state=g.user, error=error)


def _pending_token() -> Token | None:
    """The session's pending token, or None (and the session forgets a stale one)."""
    dn = session.get("pending_token")
    if not dn:
        return None
    try:
        return directory().read_token(dn)
    except EntryError:
        _forget_pending()
        return None


@bp.route("/token")
@login_required
@campus_only
def token() -> ResponseReturnValue:
    """Use a Token Application: the QR code and the key as text."""
    pending = _pending_token()
    if pending is None:
        return redirect(url_for("mfa.setup"))
    uri = provisioning_uri(pending.secret, g.user.username, config().totp.issuer,
                           pending.params)
    return render_template("mfa_token.html", qr=qr_svg(uri), apps=APPS,
                           key=grouped(to_base32(pending.secret)), params=pending.params)


@bp.route("/confirm", methods=["GET", "POST"])
@login_required
@campus_only
@limit_code
def confirm() -> ResponseReturnValue:
    """Enter the authentication code; a correct one links the pending token (status On)
    and records its time step as used. A wrong one keeps the same token for another try."""
    pending = _pending_token()
    if pending is None:
        flash(START_AGAIN)
        return redirect(url_for("mfa.setup"))
    form = ConfirmForm()
    error = None
    if form.is_submitted():
        code = parse_code(form.code.data or "", pending.params.digits) \
            if form.validate() else None
        step = matching_step(pending.secret, code, pending.params, time.time()) \
            if code else None
        if step is None:
            log_event(FAILURE, "confirmation code refused")
            error = CONFIRM_MISMATCH
        elif session.get("pending_replaces", "") != _current_token_dn():
            # 2-step verification changed elsewhere since the current code was checked.
            _drop_pending()
            flash(CHANGED_MEANWHILE)
            return redirect(url_for("mfa.status"))
        else:
            try:
                directory().link_token(g.user, pending.dn, step)
            except EntryError:
                _drop_pending()
                flash(CHANGED_MEANWHILE)
                return redirect(url_for("mfa.status"))
            _forget_pending()
            note_own_change(token=pending.dn)
            log_event(SUCCESS, "token confirmed: 2-step verification on")
            flash(NOW_ON)
            return redirect(url_for("mfa.status"))
    return render_template("mfa_confirm.html", form=form, error=error)


@bp.route("/off", methods=["POST"])
@login_required
@campus_only
@limit_code
def turn_off() -> ResponseReturnValue:
    """Turn 2-step verification off; needs a current code from the token."""
    form = TurnOffForm()
    if g.user.token is None or not form.validate_on_submit():
        return redirect(url_for("mfa.status"))
    error = check_current_code(g.user, form.current_code.data or "", "turn off")
    if error is None:
        directory().unlink_token(g.user)
        note_own_change(token="")
        log_event(SUCCESS, "token removed: 2-step verification off")
        flash(NOW_OFF)
        return redirect(url_for("mfa.status"))
    return render_template("mfa_status.html", state=g.user, role=has_role(g.user),
                           campus=g.campus, off_form=form, error=error)
