"""What every view needs: the config, one directory connection per request, where the
client is, and one audit line per event."""
from __future__ import annotations

from flask import current_app, g, request, session, url_for

from policy.audit import SUCCESS, audit
from policy.config import Config
from policy.directory.enrollment import EnrollmentDirectory
from policy.rules.network import Source, campus_network_of, normalize_source
from policy.rules.state import UserState

SERVICE = "campus-mfa-enroll"
SAFE_NEXT = ("portal.user_info", "mfa.status", "mfa.setup", "portal.index")


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
    """The client address as policy/ sees a PAM_RHOST (only the trusted hops of
    X-Forwarded-For count, see create_app). No address: off campus."""
    return normalize_source(request.remote_addr or "")


def on_campus() -> bool:
    return campus_network_of(client_source(), config().policy.campus_networks) is not None


def has_role(state: UserState) -> bool:
    return state.in_group(config().ldap.role_group)


def log_event(outcome: str, reason: str, user: str | None = None) -> None:
    """One audit line for an event of the site: facts only, never a code or a secret."""
    audit(config().audit, user=user if user is not None else session.get("user", "-"),
          service=SERVICE, source=client_source(), outcome=outcome, reason=reason,
          warning=outcome != SUCCESS)


def next_url() -> str:
    """Where to go after login or the code when no protected page asked: a known page of
    this site (``next``), else the portal."""
    target = request.args.get("next", "")
    return url_for(target if target in SAFE_NEXT else "portal.index")
