"""The enrollment site: a Flask application that walks a user through the seed's screens
(log in, Request a Role, 2 Factor Authentication Setup, Confirm) and writes MFA state only
through policy/'s directory layer.

Run it with ``gunicorn 'enroll_web:create_app()'``; the configuration is the one TOML file
everything else reads (``CAMPUS_MFA_CONFIG`` if set, else /etc/campus-mfa/campus-mfa.toml).
"""
from __future__ import annotations

import os
from datetime import timedelta

from flask import Flask, Response, current_app, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from policy.audit import where
from policy.config import DEFAULT_PATH, Config, WebConfig, load_config
from policy.errors import ConfigError, DirectoryError
from policy.messages import FORM_EXPIRED, INTERNAL_ERROR, SERVICE_UNAVAILABLE, TOO_MANY_ATTEMPTS
from policy.secret_file import read_secret_file

from .context import close_directory
from .limits import limiter
from .redirects import form_targets
from .sessions import ServerSessionInterface, session_store

# No inline script or style anywhere; the QR code is inline SVG markup, which CSP does not
# treat as a resource, so nothing more than 'self' is needed; forms may also lead to the
# protected sites (redirects.form_targets).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'{targets}; frame-ancestors 'none'")
SECURITY_HEADERS = {
    # Pages show secrets (the key, the QR code) and personal state: never keep a copy.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Same-origin requests carry a Referer, which Flask-WTF's CSRF check demands over
    # HTTPS (WTF_CSRF_SSL_STRICT); other sites never learn a URL of this one.
    "Referrer-Policy": "same-origin",
}

csrf = CSRFProtect()


def create_app(config: Config | str | None = None) -> Flask:
    """Build the application from a Config, a path to the TOML file, or (None) the path
    in ``CAMPUS_MFA_CONFIG`` / the default path. A bad config raises ConfigError at once."""
    if not isinstance(config, Config):
        config = load_config(config or os.environ.get("CAMPUS_MFA_CONFIG") or DEFAULT_PATH)
    web = config.web

    app = Flask(__name__)
    app.config.update(
        CAMPUS_MFA=config,
        SECRET_KEY=read_secret_file(web.secret_key_file, "web.secret_key_file"),
        SESSION_COOKIE_NAME=cookie_name(web),
        # A parent domain lets the cookie reach the protected sites the gate guards.
        SESSION_COOKIE_DOMAIN=web.cookie_domain or None,
        SESSION_COOKIE_SECURE=web.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=web.session_lifetime),
        WTF_CSRF_TIME_LIMIT=web.session_lifetime,
        RATELIMIT_STORAGE_URI=web.rate_limit_storage,
        RATELIMIT_HEADERS_ENABLED=False,
        MAX_CONTENT_LENGTH=64 * 1024,
        CAMPUS_MFA_HEADERS={**SECURITY_HEADERS, "Content-Security-Policy":
                            CONTENT_SECURITY_POLICY.format(targets="".join(
                                f" {source}" for source in form_targets(web)))},
    )
    if web.trusted_proxies:
        # Exactly that many hops of X-Forwarded-For / -Proto are believed; with 0 the
        # headers are ignored and REMOTE_ADDR is the client.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=web.trusted_proxies, x_proto=web.trusted_proxies)

    # The cookie carries a signed session id only; the session lives in the store.
    app.session_interface = ServerSessionInterface(session_store(web))
    csrf.init_app(app)
    limiter.init_app(app)

    from . import auth, gate, mfa, portal
    app.register_blueprint(auth.bp)
    app.register_blueprint(gate.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(mfa.bp)

    app.teardown_appcontext(close_directory)
    app.after_request(_add_security_headers)
    _register_error_pages(app)
    return app


def cookie_name(web: WebConfig) -> str:
    """__Host- for a cookie of the portal's host alone; __Secure- when it is scoped to a
    parent domain (web.cookie_domain), which __Host- forbids; neither over plain HTTP."""
    if not web.cookie_secure:
        return "campus-mfa"
    return "__Secure-campus-mfa" if web.cookie_domain else "__Host-campus-mfa"


def _add_security_headers(response: Response) -> Response:
    if request.endpoint == "gate.auth":
        return response  # an answer to nginx's auth_request: no browser ever sees it
    for name, value in current_app.config["CAMPUS_MFA_HEADERS"].items():
        response.headers[name] = value
    return response


def _register_error_pages(app: Flask) -> None:
    """Every error is a plain page: no traceback, no form values, no secret."""

    @app.errorhandler(CSRFError)
    def csrf_error(err: CSRFError) -> tuple[str, int]:
        return render_template("error.html", title="Bad Request", message=FORM_EXPIRED), 400

    @app.errorhandler(TooManyRequests)
    def too_many(err: TooManyRequests) -> tuple[str, int]:
        return render_template("error.html", title="Too Many Attempts",
                               message=TOO_MANY_ATTEMPTS), 429

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[str, int]:
        return render_template("error.html", title=err.name,
                               message=err.description or ""), err.code or 500

    @app.errorhandler(DirectoryError)
    @app.errorhandler(ConfigError)
    def unavailable(err: Exception) -> tuple[str, int]:
        # Directory and config messages are written to hold no secret; log them for admins.
        app.logger.error("service unavailable: %s: %s", type(err).__name__, err)
        return render_template("error.html", title="Service Unavailable",
                               message=SERVICE_UNAVAILABLE), 503

    @app.errorhandler(Exception)
    def internal_error(err: Exception) -> tuple[str, int]:
        # Only the type and where it happened: an exception's message or locals could
        # quote a form value (a password, a code).
        app.logger.error("internal error: %s at %s", type(err).__name__, where(err))
        return render_template("error.html", title="Internal Error", message=INTERNAL_ERROR), 500
