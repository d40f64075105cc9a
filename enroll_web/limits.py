"""Rate limits on the two things worth guessing: the password and the code.

The limits come from ``[web] login_rate_limit`` / ``code_rate_limit`` and the counters live
in ``[web] rate_limit_storage`` (memory by default: per worker process; point several
workers or hosts at one memcached/redis to share them).
"""
from __future__ import annotations

from typing import Any, Callable

from flask import current_app, request, session
from flask_limiter import Limiter


def client_address() -> str:
    """The client as ProxyFix left it: only trusted hops of X-Forwarded-For count."""
    return request.remote_addr or "unknown"


def signed_in_user() -> str:
    """Code guesses are counted per account (the password is already known to whoever
    types them), so spreading guesses over many addresses does not help."""
    return "user:" + str(session.get("user") or client_address())


def login_limit() -> str:
    return current_app.config["CAMPUS_MFA"].web.login_rate_limit


def code_limit() -> str:
    return current_app.config["CAMPUS_MFA"].web.code_rate_limit


limiter = Limiter(key_func=client_address)


@limiter.request_filter
def _the_gate() -> bool:
    """nginx asks /auth before every request to a protected site: it carries no attempt and
    no limit applies to it, so the limiter does not look (its check was about a fifth of
    /auth's own CPU, docs/performance.md)."""
    return request.endpoint == "gate.auth"

# Decorators for the views: only POSTs (an attempt) count, never looking at the form.
limit_login = limiter.limit(login_limit, methods=["POST"])
limit_code_by_address = limiter.limit(code_limit, methods=["POST"])
limit_code_by_user = limiter.limit(code_limit, methods=["POST"], key_func=signed_in_user)


def limit_code(view: Callable[..., Any]) -> Callable[..., Any]:
    """Both code limits: per client address and per account."""
    return limit_code_by_address(limit_code_by_user(view))
