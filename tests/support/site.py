"""Helpers for the enrollment site tests: an app on the session's slapd, a client that
can be on or off campus, CSRF tokens from the pages, and codes for a token's next step."""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient

from devtools.codes import wrong_code
from policy.config import Config, load_config
from policy.directory.service import ServiceDirectory
from policy.rules.state import UserState
from policy.rules.totp import TotpParams, code_at_step, from_base32, time_step

CAMPUS = "127.0.0.1"
OFF_CAMPUS = "203.0.113.7"
PARAMS = TotpParams()
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
KEY_RE = re.compile(r'id="secret-key">([A-Z2-7 ]+)<')


def web_config(slapd: Any, *, policy: dict | None = None, **web: Any) -> Config:
    """The slapd's config with some [web] (and [policy]) values changed."""
    cfg = load_config(slapd.config_path)
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, **web))
    if policy:
        cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, **policy))
    return cfg


def client_at(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def with_cookies_of(client: FlaskClient, app: Flask) -> FlaskClient:
    """A client of ``app`` at ``client``'s address with its cookies: the same browser
    answered by another process, or a copy of its cookies."""
    other = client_at(app, client.environ_base["REMOTE_ADDR"])
    for cookie in client.cookie_jar:
        other.set_cookie(cookie.domain.lstrip(".") or "localhost", cookie.name, cookie.value)
    return other


def path_of(url: str) -> str:
    """The path and query of ``url``: what a client asks the site it names for."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def session_cookie(client: FlaskClient) -> str:
    """The value of the client's one session cookie: a session id and its signature."""
    values = [c.value for c in client.cookie_jar if c.name in ("campus-mfa", "__Host-campus-mfa")]
    assert len(values) == 1, values
    return values[0]


def session_id(app: Flask, cookie: str) -> str:
    return app.session_interface._get_signer(app).unsign(cookie).decode()  # type: ignore


def stored_session(app: Flask, cookie: str) -> dict | None:
    """What the server's store holds for the session the cookie names (None: nothing)."""
    from enroll_web.sessions import KEY_PREFIX

    return app.session_interface.store.get(KEY_PREFIX + session_id(app, cookie))  # type: ignore


def csrf_token(html: str) -> str:
    """The CSRF token of the page's form."""
    found = CSRF_RE.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def post_form(client: FlaskClient, url: str, data: dict, *, page: str | None = None,
              **kwargs: Any) -> Any:
    """POST ``data`` with the CSRF token taken from ``page`` (default: GET ``url``)."""
    html = client.get(page or url, **kwargs).get_data(as_text=True)
    return client.post(url, data={**data, "csrf_token": csrf_token(html)}, **kwargs)


def login(client: FlaskClient, username: str, password: str) -> Any:
    return post_form(client, "/login", {"username": username, "password": password})


def read_state(cfg: Config, username: str) -> UserState:
    with ServiceDirectory(cfg.ldap) as directory:
        return directory.read_state(username, (cfg.ldap.role_group,))


class Codes:
    """Codes for one secret, each for a later step than the last one used (the replay
    guard refuses anything else), within the accepted window of now."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.last = time_step(time.time(), PARAMS.period) - 2

    def next(self) -> tuple[str, int]:
        now_step = time_step(time.time(), PARAMS.period)
        step = max(self.last + 1, now_step - 1)
        if step > now_step + 1:  # three codes used within one period: wait for the next
            time.sleep(PARAMS.period - time.time() % PARAMS.period + 0.1)
            return self.next()
        self.last = step
        return code_at_step(self.secret, step, PARAMS), step

    def wrong(self) -> str:
        """A well-formed code that matches no step of the window."""
        return wrong_code(self.secret, PARAMS)


def start_setup(client: FlaskClient, current_code: str | None = None) -> Any:
    data = {"current_code": current_code} if current_code is not None else {}
    return post_form(client, "/mfa/setup", data)


def shown_secret(client: FlaskClient) -> bytes:
    html = client.get("/mfa/token").get_data(as_text=True)
    found = KEY_RE.search(html)
    assert found, "no key on the token page"
    return from_base32(found.group(1))


def begin_setup(client: FlaskClient, username: str, password: str) -> bytes:
    """Log in, take the role, start the setup (on campus); return the secret shown."""
    assert login(client, username, password).status_code == 302
    post_form(client, "/user-info/role", {}, page="/user-info")
    assert start_setup(client).status_code == 302
    return shown_secret(client)


def enroll(client: FlaskClient, cfg: Config, username: str, password: str) -> Codes:
    """Log in, role, setup, confirm on campus; return the Codes of the new token."""
    codes = Codes(begin_setup(client, username, password))
    code, _ = codes.next()
    response = post_form(client, "/mfa/confirm", {"code": code})
    assert response.status_code == 302 and response.location.endswith("/mfa")
    assert read_state(cfg, username).token is not None
    return codes
