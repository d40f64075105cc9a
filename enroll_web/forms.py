"""The site's forms (Flask-WTF: every one carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import InputRequired, Length

CODE_FIELD_ATTRS = {"autocomplete": "one-time-code", "inputmode": "numeric",
                    "autocapitalize": "off", "spellcheck": "false"}


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[InputRequired(), Length(max=256)],
                           render_kw={"autocomplete": "username", "autocapitalize": "off",
                                      "spellcheck": "false", "autofocus": True})
    # No InputRequired: an empty password gets the same answer as a wrong one.
    password = PasswordField("Password", validators=[Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Log in")


class VerificationForm(FlaskForm):
    """Enter Verification Code (off campus, 2-step verification On)."""
    code = StringField("Verification code", validators=[Length(max=64)],
                       render_kw={**CODE_FIELD_ATTRS, "autofocus": True})
    submit = SubmitField("Login")


class RoleForm(FlaskForm):
    submit = SubmitField("Activate")


class TokenAppForm(FlaskForm):
    """"Use a Token Application"; with a token already On, a code from it is needed."""
    current_code = StringField("Verification code from your current token app",
                               validators=[Length(max=64)], render_kw=CODE_FIELD_ATTRS)
    submit = SubmitField("Use a Token Application")


class ConfirmForm(FlaskForm):
    code = StringField("Authentication code", validators=[Length(max=64)],
                       render_kw={**CODE_FIELD_ATTRS, "autofocus": True})
    submit = SubmitField("Confirm")


class TurnOffForm(FlaskForm):
    current_code = StringField("Verification code from your current token app",
                               validators=[Length(max=64)], render_kw=CODE_FIELD_ATTRS)
    submit = SubmitField("Turn off 2-step verification")


class LogoutForm(FlaskForm):
    submit = SubmitField("Log out")
