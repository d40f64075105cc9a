"""Server-side sessions: the cookie holds only a signed random id and the session itself
lives in a store on the server, so ending a session (log out, a change of the user's MFA
state) ends it for every copy of the cookie.

Built on Flask-Session 0.3.2 (Debian 12) and cachelib: Flask-Session's session class and
its signer of session ids, cachelib's stores. Its store interfaces are not used as they are,
because in 0.3.2 they read ``app.session_cookie_name`` (deprecated in Flask 2.2, gone in
2.3), set the cookie without SameSite, store a session for every request that has none (the
``_permanent`` flag), reuse an id the store does not know, and keep the id across
``session.clear()``.
"""
from __future__ import annotations

import os
import secrets
import socket
import time

from cachelib.base import BaseCache
from cachelib.file import FileSystemCache
from flask import Flask, Request, Response, current_app, session
from flask_session.sessions import FileSystemSession
from flask_session.sessions import SessionInterface as FlaskSessionInterface
from itsdangerous import BadSignature

from policy.config import WebConfig
from policy.errors import ConfigError

KEY_PREFIX = "session:"
# cachelib's file store prunes itself once it holds more entries than this: the expired
# ones first, then the ones closest to expiry, i.e. signed-in users would be logged out
# without a word. Its default, 500, is reached by 500 visits of the login page (each holds
# a CSRF token) within one session lifetime; 0 (no limit) would never delete an expired
# file. 50,000 stays clear of what one university's users keep open within
# web.session_lifetime, bounds the directory (about 200 MB), and keeps the rare clean-up
# pass that drops the expired files affordable.
SESSION_FILE_THRESHOLD = 50_000
RENEWED = "_renewed"  # when the store last took the session (Unix time)
RENEW_EVERY = 60      # seconds: how late an idle session may expire


class SessionStoreError(RuntimeError):
    """The store did not keep a session (a full disk, a broken store)."""


def session_store(web: WebConfig) -> BaseCache:
    """Where sessions live: redis (web.session_store) when several site processes or hosts
    share them, else a directory of files (web.session_dir, mode 0700) on this host."""
    if web.session_store:
        return redis_store(web.session_store)
    path = web.session_dir
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="ascii"):
            pass
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"web.session_dir = {path!r}: cannot write there: "
                          f"{err.strerror}") from None
    return FileSystemCache(path, threshold=SESSION_FILE_THRESHOLD, mode=0o600)


def redis_store(url: str) -> BaseCache:
    """A redis server as the store (``redis://HOST:PORT/DB`` or ``unix:///PATH?db=N``). It
    must answer now: a site that could keep no session would log everybody out."""
    import redis  # python3-redis: only sites with a shared store need it
    from cachelib.redis import RedisCache

    if url.startswith("unix://"):  # redis-py 4.3 leaves the socket of a failed connect open
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(url[len("unix://"):].partition("?")[0])
            except OSError as err:
                raise ConfigError(f"web.session_store = {url!r}: no answer: "
                                  f"{err.strerror}") from None
    client = redis.Redis.from_url(url, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as err:
        client.connection_pool.disconnect()
        raise ConfigError(f"web.session_store = {url!r}: no answer: "
                          f"{type(err).__name__}") from None
    return RedisCache(host=client, key_prefix="campus-mfa:")


class ServerSession(FileSystemSession):
    """A session held in the store; ``sid`` is its key there. ``fresh``: its id was made
    in this request (nothing in the store to compare with yet)."""

    fresh = False


class ServerSessionInterface(FlaskSessionInterface):
    """Every session is permanent: it lasts PERMANENT_SESSION_LIFETIME after the last
    request. The cookie's expiry and the store's timeout are renewed when the session
    changes, and otherwise at most every RENEW_EVERY seconds: a protected site asks the
    gate on every request, which must not write the store each time."""

    def __init__(self, store: BaseCache) -> None:
        self.store = store

    def _new(self) -> ServerSession:
        new = ServerSession(sid=secrets.token_urlsafe(32))
        new.fresh = True
        return new

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        signed = request.cookies.get(app.config["SESSION_COOKIE_NAME"])
        if signed:
            try:
                sid = self._get_signer(app).unsign(signed).decode("ascii")
            except (BadSignature, UnicodeDecodeError):
                return self._new()
            data = self.store.get(KEY_PREFIX + sid)
            if isinstance(data, dict):
                return ServerSession(data, sid=sid)
        return self._new()  # an id the store does not know is never taken over

    def save_session(self, app: Flask, session: ServerSession,  # type: ignore[override]
                     response: Response) -> None:
        name = app.config["SESSION_COOKIE_NAME"]
        cookie = {"domain": self.get_cookie_domain(app), "path": self.get_cookie_path(app),
                  "secure": self.get_cookie_secure(app), "httponly": self.get_cookie_httponly(app),
                  "samesite": self.get_cookie_samesite(app)}
        response.vary.add("Cookie")
        if not session:
            if session.modified:  # emptied in this request: forget it everywhere
                self.store.delete(KEY_PREFIX + session.sid)
                response.delete_cookie(name, **cookie)
            return
        lifetime = int(app.permanent_session_lifetime.total_seconds())
        now = time.time()
        if not (session.modified or session.fresh) and \
                now - session.get(RENEWED, 0) < min(RENEW_EVERY, lifetime / 10):
            return  # nothing new, and renewed a moment ago
        key = KEY_PREFIX + session.sid
        if not session.fresh and not self.store.has(key):
            return  # ended by another request meanwhile (log out): do not bring it back
        session[RENEWED] = int(now)
        if not self.store.set(key, dict(session), timeout=lifetime):
            raise SessionStoreError("the session store did not keep the session")
        signed = self._get_signer(app).sign(session.sid.encode("ascii")).decode("ascii")
        response.set_cookie(name, signed, expires=now + lifetime, **cookie)

    def renew(self, session: ServerSession) -> None:
        """Empty ``session`` and give it a new id; the entry under the old id is deleted."""
        self.store.delete(KEY_PREFIX + session.sid)
        session.clear()
        session.sid = secrets.token_urlsafe(32)
        session.fresh = True


def renew_session() -> None:
    """Start over with an empty session under a new id, deleting the old one from the
    store: at log in (no fixation), log out and when a session is ended, so that a copy of
    the old cookie opens nothing any more."""
    current_app.session_interface.renew(session)  # type: ignore[attr-defined]
