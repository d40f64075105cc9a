"""Users Portal and User Information Management (Request a Role)."""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue

from policy.audit import SUCCESS
from policy.messages import role_active

from .context import directory, has_role, log_event
from .forms import RoleForm
from .grants import note_own_change
from .guards import campus_only, login_required

bp = Blueprint("portal", __name__)

ROLE_NAME = "Multifactor Authentication"


@bp.route("/")
def index() -> ResponseReturnValue:
    """Users Portal: the two entries of the seed."""
    return render_template("portal.html", user=session.get("user"))


@bp.route("/user-info")
@login_required
@campus_only
def user_info() -> ResponseReturnValue:
    """User Information Management (*Internal Only*) with Request a Role."""
    return render_template("user_info.html", role_name=ROLE_NAME, active=has_role(g.user),
                           form=RoleForm())


@bp.route("/user-info/role", methods=["POST"])
@login_required
@campus_only
def request_role() -> ResponseReturnValue:
    """Activate 'Multifactor Authentication': membership of the role group."""
    if RoleForm().validate_on_submit() and not has_role(g.user):
        directory().set_role(g.user.dn, True)
        note_own_change(role=True)
        log_event(SUCCESS, "role activated: Multifactor Authentication")
        flash(role_active(ROLE_NAME))
    return redirect(url_for("portal.user_info"))
