"""Every text a user reads, from the PAM conversation and from the site, in one place (the
seed's wording where it has one). Messages say what happened and what to do; none names a
value that was typed."""
from __future__ import annotations

# -- a login (PAM, and the site's Enter Verification Code) ---------------------------------
PROMPT = "Verification code: "
MISMATCH_MESSAGE = "The verification code does not match."
SET_UP_MESSAGE = ("2-step verification is required for logins from off campus. "
                  "Set it up from the campus network first.")
LOCKED_MESSAGE = ("Too many wrong verification codes: 2-step verification is locked. "
                  "Ask the helpdesk to unlock it.")
UNAVAILABLE_MESSAGE = "The verification service is unavailable. Try again later."
PASSWORD_PROMPT = "Password: "  # combined mode, when no module before asked for it


def backoff_seconds(retry_at: float, now: float) -> int:
    """Whole seconds until the back-off ends (at least 1)."""
    return max(1, int(retry_at - now + 0.999))


def backoff_message(seconds: int) -> str:
    return f"Too many wrong verification codes. Try again in {seconds} seconds."


# -- the enrollment site ---------------------------------------------------------------------
LOGIN_FAILED = "The user name or password is incorrect."
LOGGED_OUT = "You have logged out."
CAMPUS_ONLY_MESSAGE = ("This change is available from the campus network only. "
                       "Connect from campus and try again.")
SESSION_ENDED_MESSAGE = ("Your session has ended because your 2-step verification or your "
                         "role changed. Log in again.")
CONFIRM_MISMATCH = ("The authentication code does not match. Enter the latest code shown "
                    "in your token app.")
NEEDS_ROLE = ("Activate 'Multifactor Authentication' on the 'Request a Role' page in User "
              "Information Management first.")
START_AGAIN = "Start the setup again."
CHANGED_MEANWHILE = "2-step verification was changed meanwhile. Start the setup again."
NOW_ON = "2-step verification is now On."
NOW_OFF = "2-step verification is now Off."
FORM_EXPIRED = ("The form has expired or was not sent by this site. Go back, reload the page "
                "and try again.")
TOO_MANY_ATTEMPTS = "Too many attempts from here. Wait a minute and try again."
SERVICE_UNAVAILABLE = "The service is unavailable. Try again later."
INTERNAL_ERROR = "Something went wrong. Try again later."


def role_active(role_name: str) -> str:
    return f"The role '{role_name}' is active. You can now set up Multi-Factor Authentication."
