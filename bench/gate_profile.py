"""Where the portal's /auth spends its CPU, beside the bare handler's: both WSGI apps called
in this process (no gunicorn, no nginx), with the session signed in for section 6 and the
headers nginx's subrequest carries; then a cProfile of the portal's calls, split into the
parts a request goes through (shares of the profiled time, applied to the unprofiled CPU:
the profiler's own overhead makes them approximate). What gunicorn adds per request is the
same for both apps (section 6's gunicorn CPU per request minus these)."""
from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass
from pathlib import Path

CALLS = 2000
# (what, file, function): cumulative time of each in the profile.
PARTS = (
    ("Flask-Limiter's check before the view (no limit applies to /auth)",
     "flask_limiter/extension.py", "_check_request_limit"),
    ("opening the session: the cookie's signature, the store's file",
     "enroll_web/sessions.py", "open_session"),
    ("saving the session (nothing changed: no write)", "enroll_web/sessions.py",
     "save_session"),
    ("the view: the session's age and grant, the client's address",
     "enroll_web/gate.py", "auth"),
    ("the security headers", "enroll_web/__init__.py", "_add_security_headers"),
)


@dataclass(frozen=True)
class AppCost:
    real_ms: float                     # CPU per /auth call, the portal's WSGI app alone
    bare_ms: float                     # the same for the bare Flask app
    parts: list[tuple[str, float]]     # the portal's parts, ms per call (profile shares)


def app_cost(config: Path, cookie: str, original_url: str) -> AppCost:
    """Time CALLS calls of each app, then profile the portal's."""
    from werkzeug.test import EnvironBuilder

    from enroll_web import create_app

    from .bare_auth import app as bare

    portal = create_app(str(config))
    base = EnvironBuilder(path="/auth", environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={
        "Host": "127.0.0.1", "Cookie": cookie, "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Proto": "http", "X-Original-URL": original_url}).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        statuses.append(status)

    def run(wsgi: object) -> float:
        calls = [dict(base) for _ in range(CALLS)]
        statuses.clear()
        began = time.process_time()
        for environ in calls:
            b"".join(wsgi(environ, start_response))  # type: ignore[operator]
        spent = time.process_time() - began
        if statuses != ["200 OK"] * CALLS:
            raise RuntimeError(f"/auth in-process answered {sorted(set(statuses))}")
        return spent * 1000 / CALLS

    run(portal.wsgi_app)            # warm: caches, the first renewal of the session
    run(bare.wsgi_app)
    real_ms, bare_ms = run(portal.wsgi_app), run(bare.wsgi_app)
    profile = cProfile.Profile()
    profile.runcall(run, portal.wsgi_app)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(cum for (path, _, name), (_, _, _, cum, _) in stats.items()
                if path.endswith("middleware/proxy_fix.py") and name == "__call__")
    parts = []
    for what, path_end, function in PARTS:
        cum = sum(c for (path, _, name), (_, _, _, c, _) in stats.items()
                  if path.endswith(path_end) and name == function)
        parts.append((what, real_ms * cum / total))
    parts.append(("the rest: Flask's request context and response, werkzeug, ProxyFix",
                  real_ms - sum(ms for _, ms in parts)))
    return AppCost(real_ms, bare_ms, parts)
