"""Server-side sessions (issue 11, item 8): the cookie holds a signed id, the session lives
on the server, and log out, ``campus-mfa reset`` and ``campus-mfa revoke-role`` end it for
every copy of the cookie. Flask's test client against the real slapd; the admin command
runs as its own process, as a helpdesk runs it."""
from __future__ import annotations

import struct
import time
from email.utils import parsedate_to_datetime

import pytest
from flask import request

from devtools.commands import campus_mfa
from enroll_web import create_app
from enroll_web.sessions import KEY_PREFIX, SESSION_FILE_THRESHOLD
from policy.errors import ConfigError
from policy.messages import SESSION_ENDED_MESSAGE
from support.site import (CAMPUS, client_at, enroll, login, post_form, read_state, session_cookie,
                          session_id, stored_session, web_config)


def cli(config_path: str, *args: str) -> None:
    done = campus_mfa(config_path, *args)
    assert done.returncode == 0, done.stderr


def with_cookie(app, cookie: str):  # type: ignore[no-untyped-def]
    """Another client (a thief's) holding a copy of the cookie."""
    thief = client_at(app, CAMPUS)
    thief.set_cookie("localhost", app.config["SESSION_COOKIE_NAME"], cookie)
    return thief


def sent_to_login(response) -> bool:  # type: ignore[no-untyped-def]
    return response.status_code == 302 and response.location.startswith("/login")


def test_the_cookie_holds_a_signed_id_and_the_server_the_session(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    assert login(client, "alice", "alice-pass").status_code == 302
    cookie = session_cookie(client)
    assert "alice" not in cookie and len(session_id(app, cookie)) == 43  # 32 random bytes
    assert stored_session(app, cookie)["user"] == "alice"
    assert client.get("/mfa").status_code == 200
    sid, signature = cookie.split(".", 1)
    forged = f"{sid}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert sent_to_login(with_cookie(app, forged).get("/mfa"))


def test_log_out_ends_the_session_for_every_copy_of_the_cookie(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    login(client, "alice", "alice-pass")
    copied = session_cookie(client)
    assert with_cookie(app, copied).get("/mfa").status_code == 200
    response = post_form(client, "/logout", {}, page="/mfa")
    assert sent_to_login(response)
    assert stored_session(app, copied) is None
    assert sent_to_login(with_cookie(app, copied).get("/mfa"))
    assert sent_to_login(with_cookie(app, copied).get("/user-info"))


def test_a_session_lasts_session_lifetime_after_the_last_request(make_app):
    app, _ = make_app(session_lifetime=120)
    client = client_at(app, CAMPUS)
    response = login(client, "alice", "alice-pass")
    now = time.time()
    cookie = response.headers["Set-Cookie"]
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0]).timestamp()
    assert abs(expires - (now + 120)) < 5
    store = app.session_interface.store
    path = store._get_filename(KEY_PREFIX + session_id(app, session_cookie(client)))
    with open(path, "rb") as entry:
        assert abs(struct.unpack("I", entry.read(4))[0] - (now + 120)) < 5


def test_admin_reset_ends_the_session(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    enroll(client, cfg, uid, password)  # its own new token does not end the session
    assert client.get("/mfa").status_code == 200
    copied = session_cookie(client)
    cli(cfg.path, "reset", uid)
    ended = client.get("/mfa")
    assert sent_to_login(ended)
    assert SESSION_ENDED_MESSAGE in client.get(ended.location).get_data(as_text=True)
    assert stored_session(app, copied) is None
    assert sent_to_login(with_cookie(app, copied).get("/mfa"))


def test_admin_revoke_role_ends_the_session_and_grant_role_does_not(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    cli(cfg.path, "grant-role", uid)
    assert client.get("/user-info").status_code == 200  # more rights: nothing to end
    cli(cfg.path, "revoke-role", uid)
    assert not read_state(cfg, uid).in_group(cfg.ldap.role_group)
    copied = session_cookie(client)
    assert sent_to_login(client.get("/user-info"))
    assert sent_to_login(with_cookie(app, copied).get("/mfa"))

    # Activating the role on the site is the session's own change: it goes on.
    login(client, uid, password)
    post_form(client, "/user-info/role", {}, page="/user-info")
    assert read_state(cfg, uid).in_group(cfg.ldap.role_group)
    assert client.get("/mfa").status_code == 200


def test_a_new_token_from_another_session_ends_this_one(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    other = client_at(app, CAMPUS)
    login(other, uid, password)
    enroll(client_at(app, CAMPUS), cfg, uid, password)
    assert sent_to_login(other.get("/mfa"))


def test_an_anonymous_page_view_stores_no_session(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    for path in ("/", "/static/site.css", "/mfa"):
        response = client.get(path)
        response.close()  # the static file's handle
        assert "Set-Cookie" not in response.headers, path
    assert "Set-Cookie" in client.get("/login").headers  # its form's CSRF token


def test_a_request_running_while_the_session_ends_does_not_bring_it_back(make_app):
    """A request that opened the session before log out deleted it saves nothing after."""
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    login(client, "alice", "alice-pass")
    cookie = session_cookie(client)
    interface = app.session_interface
    name = app.config["SESSION_COOKIE_NAME"]
    with app.test_request_context("/mfa", headers={"Cookie": f"{name}={cookie}"}):
        session = interface.open_session(app, request)
        assert session["user"] == "alice"
        interface.store.delete(KEY_PREFIX + session.sid)  # log out, in another request
        session["csrf_token"] = "a page with a form was rendered meanwhile"
        response = app.response_class()
        interface.save_session(app, session, response)
    assert stored_session(app, cookie) is None and "Set-Cookie" not in response.headers


def test_many_new_sessions_do_not_push_out_a_signed_in_one(make_app, tmp_path):
    """cachelib's file store drops the sessions closest to expiry once it holds more than
    its threshold; with its default of 500, 600 visits of the login page (each keeps a
    CSRF token) would log a signed-in user out."""
    assert SESSION_FILE_THRESHOLD == 50_000
    app, _ = make_app(session_dir=str(tmp_path / "sessions"))
    client = client_at(app, CAMPUS)
    login(client, "alice", "alice-pass")
    # Her last click was a minute ago: hers is the session closest to expiry.
    cookie = session_cookie(client)
    app.session_interface.store.set(KEY_PREFIX + session_id(app, cookie),
                                    stored_session(app, cookie), timeout=900 - 60)
    for _ in range(600):
        assert "Set-Cookie" in client_at(app, CAMPUS).get("/login").headers
    assert client.get("/mfa").status_code == 200
    assert len(list((tmp_path / "sessions").iterdir())) == 602  # and the count file


def test_an_unusable_session_dir_is_a_config_error_naming_the_key(slapd, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = web_config(slapd, session_dir=str(blocker / "sessions"))
    with pytest.raises(ConfigError, match=rf"^web\.session_dir = '{blocker}/sessions': "
                                          r"cannot write there: Not a directory$"):
        create_app(cfg)


def test_the_store_is_a_0700_directory_of_0600_files(make_app, tmp_path):
    app, _ = make_app(session_dir=str(tmp_path / "sessions"))
    login(client_at(app, CAMPUS), "alice", "alice-pass")
    assert (tmp_path / "sessions").stat().st_mode & 0o777 == 0o700
    modes = {path.stat().st_mode & 0o777 for path in (tmp_path / "sessions").iterdir()}
    assert modes == {0o600}
