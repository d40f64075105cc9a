"""The enrollment site's screens end to end on the real slapd (Flask test client)."""
from __future__ import annotations

import pytest

from policy.directory.service import ServiceDirectory
from policy.login import login as pam_login
from policy.messages import MISMATCH_MESSAGE, SET_UP_MESSAGE
from support.site import (CAMPUS, OFF_CAMPUS, Codes, begin_setup, client_at, csrf_token, enroll,
                          login, post_form, read_state, shown_secret, start_setup)

CAMPUS_ONLY = "available from the campus network only"


class Conversation:
    """A PAM conversation that answers one code."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.errors: list[str] = []

    def ask(self, prompt: str, digits: int) -> str:
        return self.code

    def error(self, text: str) -> None:
        self.errors.append(text)


def text(response) -> str:  # type: ignore[no-untyped-def]
    return response.get_data(as_text=True)


def test_portal_shows_the_seed_entries(make_app):
    app, _ = make_app()
    page = text(client_at(app, CAMPUS).get("/"))
    assert "User Information Management (*Internal Only)" in page
    assert "Set up Multi-Factor Authentication" in page


@pytest.mark.parametrize("url", ["/user-info", "/mfa", "/mfa/setup", "/mfa/token",
                                 "/mfa/confirm"])
def test_pages_need_a_login(make_app, url):
    app, _ = make_app()
    response = client_at(app, CAMPUS).get(url)
    assert response.status_code == 302
    assert "/login" in response.location


def test_enrollment_on_campus_follows_the_seed(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    assert login(client, uid, password).status_code == 302

    page = text(client.get("/user-info"))
    assert "Request a Role" in page and "Multifactor Authentication" in page
    assert "Not active" in page
    response = post_form(client, "/user-info/role", {}, page="/user-info")
    assert response.status_code == 302
    assert ">Active<" in text(client.get("/user-info"))
    assert read_state(cfg, uid).in_group(cfg.ldap.role_group)

    page = text(client.get("/mfa"))
    assert '<strong id="mfa-status">Off</strong>' in page
    assert "2 Factor Authentication Setup" in page
    assert "Use a Token Application" in text(client.get("/mfa/setup"))

    response = start_setup(client)
    assert response.status_code == 302 and response.location.endswith("/mfa/token")
    page = text(client.get("/mfa/token"))
    assert "<svg" in page and "QR code" in page
    for app_name in ("Google Authenticator", "Microsoft Authenticator", "iPhone and iPad"):
        assert app_name in page
    secret = shown_secret(client)
    assert read_state(cfg, uid).token is None  # pending: nobody links to it yet

    codes = Codes(secret)
    response = post_form(client, "/mfa/confirm", {"code": codes.wrong()})
    assert response.status_code == 200
    assert "The authentication code does not match" in text(response)
    assert shown_secret(client) == secret  # another try, same QR code

    code, step = codes.next()
    response = post_form(client, "/mfa/confirm", {"code": code})
    assert response.status_code == 302 and response.location.endswith("/mfa")
    page = text(client.get("/mfa"))
    assert '<strong id="mfa-status">On</strong>' in page
    token = read_state(cfg, uid).token
    assert token is not None and token.secret == secret and token.last_step == step


def test_setup_needs_the_role(make_app, fresh_user):
    app, _ = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    page = text(client.get("/mfa"))
    assert '<a class="button primary" href="/mfa/setup">' not in page
    assert "Request a Role" in page
    response = client.get("/mfa/setup")
    assert response.status_code == 403
    assert "Request a Role" in text(response)


def test_off_campus_with_a_token_asks_for_the_code_first(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    codes = enroll(client_at(app, CAMPUS), cfg, uid, password)

    client = client_at(app, OFF_CAMPUS)
    response = login(client, uid, password)
    assert response.status_code == 302
    for url in ("/mfa", "/user-info"):
        response = client.get(url)
        assert response.status_code == 302 and "/verify" in response.location
    page = text(client.get("/verify"))
    assert "<h1>Enter Verification Code</h1>" in page and 'value="Login"' in page

    response = post_form(client, "/verify", {"code": codes.wrong()})
    assert MISMATCH_MESSAGE in text(response)
    code, _ = codes.next()
    response = post_form(client, "/verify", {"code": code})
    assert response.status_code == 302
    assert '<strong id="mfa-status">On</strong>' in text(client.get("/mfa"))


def test_confirmation_code_cannot_be_used_again(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    codes = Codes(begin_setup(client, uid, password))
    code, _ = codes.next()
    post_form(client, "/mfa/confirm", {"code": code})

    off = client_at(app, OFF_CAMPUS)
    login(off, uid, password)
    response = post_form(off, "/verify", {"code": code})
    assert MISMATCH_MESSAGE in text(response)
    assert off.get("/mfa").status_code == 302  # still not past the code


def test_replay_state_is_shared_with_the_pam_path(make_app, fresh_user):
    """A code used by a PAM login cannot be used on the site, and the other way round."""
    app, cfg = make_app()
    uid, password = fresh_user()
    codes = enroll(client_at(app, CAMPUS), cfg, uid, password)

    code, _ = codes.next()
    assert pam_login(cfg, uid, OFF_CAMPUS, "sshd", Conversation(code), tries=1).outcome \
        == "success"
    off = client_at(app, OFF_CAMPUS)
    login(off, uid, password)
    assert MISMATCH_MESSAGE in text(post_form(off, "/verify", {"code": code}))

    code, _ = codes.next()
    assert post_form(off, "/verify", {"code": code}).status_code == 302
    conversation = Conversation(code)
    assert pam_login(cfg, uid, OFF_CAMPUS, "sshd", conversation, tries=1).outcome \
        == "failure"
    assert conversation.errors == [MISMATCH_MESSAGE]


def test_replacing_a_token_needs_a_current_code(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    codes = enroll(client, cfg, uid, password)
    old = read_state(cfg, uid).token

    page = text(client.get("/mfa/setup"))
    assert "Verification code from your current token app" in page
    for attempt in ("", codes.wrong()):
        response = start_setup(client, attempt)
        assert response.status_code == 200 and MISMATCH_MESSAGE in text(response)
        assert client.get("/mfa/token").status_code == 302  # no new token was made

    code, _ = codes.next()
    assert start_setup(client, code).status_code == 302
    new_codes = Codes(shown_secret(client))
    assert new_codes.secret != old.secret
    new_code, _ = new_codes.next()
    assert post_form(client, "/mfa/confirm", {"code": new_code}).status_code == 302
    token = read_state(cfg, uid).token
    assert token.secret == new_codes.secret and token.dn != old.dn
    with ServiceDirectory(cfg.ldap) as directory:  # the old token entry is gone
        with pytest.raises(Exception, match="does not exist"):
            directory.read_token(old.dn)


def test_turning_off_needs_a_current_code(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    codes = enroll(client, cfg, uid, password)

    response = post_form(client, "/mfa/off", {"current_code": codes.wrong()}, page="/mfa")
    assert response.status_code == 200 and MISMATCH_MESSAGE in text(response)
    assert read_state(cfg, uid).token is not None
    code, _ = codes.next()
    response = post_form(client, "/mfa/off", {"current_code": code}, page="/mfa")
    assert response.status_code == 302
    assert read_state(cfg, uid).token is None
    assert '<strong id="mfa-status">Off</strong>' in text(client.get("/mfa"))


CHANGES = [("get", "/user-info"), ("post", "/user-info/role"), ("get", "/mfa/setup"),
           ("post", "/mfa/setup"), ("get", "/mfa/token"), ("get", "/mfa/confirm"),
           ("post", "/mfa/confirm"), ("post", "/mfa/off")]


@pytest.mark.parametrize("method,url", CHANGES)
def test_changes_are_refused_off_campus(make_app, fresh_user, method, url):
    app, cfg = make_app()
    uid, password = fresh_user()
    campus = client_at(app, CAMPUS)
    login(campus, uid, password)
    codes = enroll(campus, cfg, uid, password)

    off = client_at(app, OFF_CAMPUS)
    login(off, uid, password)
    post_form(off, "/verify", {"code": codes.next()[0]})
    assert '<strong id="mfa-status">On</strong>' in text(off.get("/mfa"))
    before = read_state(cfg, uid)
    data = {"csrf_token": csrf_token(text(off.get("/mfa"))), "code": codes.wrong(),
            "current_code": codes.wrong()}
    response = off.get(url) if method == "get" else off.post(url, data=data)
    assert response.status_code == 403
    assert CAMPUS_ONLY in text(response)
    assert read_state(cfg, uid) == before


def test_role_request_refused_off_campus_without_a_token(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    off = client_at(app, OFF_CAMPUS)
    login(off, uid, password)
    page = text(off.get("/mfa"))
    assert "Changes are available from the campus network only" in page
    response = post_form(off, "/user-info/role", {}, page="/mfa")
    assert response.status_code == 403 and CAMPUS_ONLY in text(response)
    assert not read_state(cfg, uid).in_group(cfg.ldap.role_group)


def test_required_enforcement_refuses_off_campus_without_a_token(make_app, fresh_user):
    app, _ = make_app(policy={"enforcement": "required"})
    uid, password = fresh_user()
    off = client_at(app, OFF_CAMPUS)
    login(off, uid, password)
    response = off.get("/mfa")
    assert response.status_code == 403
    assert SET_UP_MESSAGE in text(response)


def test_logout_ends_the_session(make_app, fresh_user):
    app, _ = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    assert client.get("/mfa").status_code == 200
    response = post_form(client, "/logout", {}, page="/mfa")
    assert response.status_code == 302
    assert "You have logged out." in text(client.get("/login"))
    assert client.get("/mfa").status_code == 302
