"""The enrollment site's security rules (SECURITY.md 20-25), each against the real slapd."""
from __future__ import annotations

import base64
import logging
import re
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

import enroll_web.mfa
from devtools import devldap
from enroll_web import create_app
from policy.directory.enrollment import EnrollmentDirectory
from policy.messages import LOGIN_FAILED
from policy.rules.totp import to_base32
from support.site import (CAMPUS, OFF_CAMPUS, Codes, begin_setup, client_at, csrf_token, enroll,
                          login, post_form, session_cookie, stored_session, web_config)

POSTS = ["/login", "/logout", "/verify", "/user-info/role", "/mfa/setup", "/mfa/confirm",
         "/mfa/off"]


def text(response) -> str:  # type: ignore[no-untyped-def]
    return response.get_data(as_text=True)


def what_the_session_holds(app, client) -> str:  # type: ignore[no-untyped-def]
    """The cookie (a signed id) and the server-side session it names, as text."""
    cookie = session_cookie(client)
    return f"{cookie} {stored_session(app, cookie)!r}"


@pytest.mark.parametrize("url", POSTS)
def test_post_without_csrf_token_is_400(make_app, alice_client, url):
    app, client = alice_client
    response = client.post(url, data={"code": "123456", "current_code": "123456",
                                      "username": "alice", "password": "alice-pass"})
    assert response.status_code == 400
    assert "The form has expired or was not sent by this site" in text(response)


@pytest.fixture
def alice_client(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    assert login(client, "alice", "alice-pass").status_code == 302
    return app, client


def test_cookie_flags_for_the_loopback_demo(alice_client):
    _, client = alice_client
    response = login(client, "alice", "alice-pass")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("campus-mfa=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie


def test_cookie_is_secure_by_default(make_app):
    app, _ = make_app(cookie_secure=True)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = CAMPUS
    page = client.get("/login", base_url="https://localhost")
    response = client.post("/login", base_url="https://localhost",
                           headers={"Referer": "https://localhost/login"}, data={
        "username": "alice", "password": "alice-pass",
        "csrf_token": csrf_token(text(page))})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-campus-mfa=")
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("url", ["/", "/login", "/user-info", "/mfa", "/mfa/setup",
                                 "/mfa/token", "/mfa/confirm", "/no-such-page"])
def test_every_page_has_the_security_headers(alice_client, url):
    _, client = alice_client
    response = client.get(url)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    # Not no-referrer: over HTTPS Flask-WTF's CSRF check needs a same-origin Referer.
    assert response.headers["Referrer-Policy"] == "same-origin"
    body = text(response)
    assert "<script" not in body and "<style" not in body and " style=" not in body


def test_the_secret_never_reaches_the_session(make_app, fresh_user):
    app, cfg = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    secret = begin_setup(client, uid, password)
    page = client.get("/mfa/token")
    assert page.headers["Cache-Control"] == "no-store"
    key = to_base32(secret)
    assert key in text(page).replace(" ", "")  # the page does show it
    pending = what_the_session_holds(app, client)
    assert "pending_token" in pending  # the DN of the pending entry, nothing more
    code, _ = Codes(secret).next()
    assert post_form(client, "/mfa/confirm", {"code": code}).status_code == 302
    confirmed = what_the_session_holds(app, client)
    assert "'user': '" in confirmed
    for seen in (pending, confirmed):
        for form in (key, key.lower(), secret.hex(), base64.b64encode(secret).decode()):
            assert form not in seen


def test_login_starts_a_new_session(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
        session["verified_token"] = "cn=forged,ou=tokens,dc=example,dc=edu"
    planted = session_cookie(client)
    assert stored_session(app, planted)["planted"] == "by an attacker"
    login(client, "alice", "alice-pass")
    signed_in = session_cookie(client)
    contents = repr(stored_session(app, signed_in))
    assert "planted" not in contents and "forged" not in contents
    assert "'user': 'alice'" in contents
    assert signed_in.split(".")[0] != planted.split(".")[0]  # a new id ...
    assert stored_session(app, planted) is None  # ... and the old one is gone


def test_empty_password_is_refused_before_any_bind(make_app, monkeypatch):
    app, _ = make_app()
    binds = []
    monkeypatch.setattr(EnrollmentDirectory, "open", lambda self, *a: binds.append(a))
    client = client_at(app, CAMPUS)
    response = login(client, "alice", "")
    assert response.status_code == 200 and LOGIN_FAILED in text(response)
    assert binds == []


def _answer(response) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r'value="[^"]*"', "", text(response))


def test_unknown_user_and_wrong_password_look_the_same(make_app):
    app, _ = make_app()
    client = client_at(app, CAMPUS)
    wrong = login(client, "alice", "not-alice-pass")
    unknown = login(client, "nobody-here", "not-alice-pass")
    assert wrong.status_code == unknown.status_code == 200
    assert LOGIN_FAILED in text(wrong)
    assert _answer(wrong).replace("alice", "X") == _answer(unknown).replace("nobody-here", "X")


def test_login_is_rate_limited_per_address(make_app):
    app, _ = make_app(login_rate_limit="3 per minute")
    client = client_at(app, CAMPUS)
    statuses = [login(client, "alice", "wrong").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert "Too many attempts" in text(login(client, "alice", "alice-pass"))
    assert login(client_at(app, "127.0.0.2"), "alice", "alice-pass").status_code == 302


def test_code_entry_is_rate_limited_per_account(make_app, fresh_user):
    app, cfg = make_app(code_rate_limit="3 per minute")
    uid, password = fresh_user()
    codes = enroll(client_at(app, CAMPUS), cfg, uid, password)
    statuses = []
    for address in ("203.0.113.7", "203.0.113.8", "198.51.100.9", "198.51.100.10"):
        off = client_at(app, address)
        login(off, uid, password)
        statuses.append(post_form(off, "/verify", {"code": codes.wrong()}).status_code)
    assert statuses == [200, 200, 200, 429]


def test_code_entry_is_rate_limited_per_address(make_app, fresh_user):
    app, cfg = make_app(code_rate_limit="3 per minute")
    users = [fresh_user() for _ in range(4)]
    statuses = []
    for number, (uid, password) in enumerate(users):
        codes = enroll(client_at(app, f"127.0.0.{10 + number}"), cfg, uid, password)
        off = client_at(app, OFF_CAMPUS)
        login(off, uid, password)
        statuses.append(post_form(off, "/verify", {"code": codes.wrong()}).status_code)
    assert statuses == [200, 200, 200, 429]


def test_forged_forwarded_for_changes_nothing_without_trusted_proxies(make_app, fresh_user):
    app, cfg = make_app(trusted_proxies=0)
    uid, password = fresh_user()
    enroll(client_at(app, CAMPUS), cfg, uid, password)
    off = client_at(app, OFF_CAMPUS)
    off.environ_base["HTTP_X_FORWARDED_FOR"] = CAMPUS
    login(off, uid, password)
    assert "/verify" in off.get("/mfa").location  # still off campus
    campus = client_at(app, CAMPUS)
    campus.environ_base["HTTP_X_FORWARDED_FOR"] = OFF_CAMPUS
    login(campus, uid, password)
    assert campus.get("/mfa").status_code == 200  # still on campus


@pytest.mark.parametrize("forwarded_for,campus", [
    (OFF_CAMPUS, False),
    (f"127.0.0.5, {OFF_CAMPUS}", False),   # the client's own claim in front is ignored
    (f"{OFF_CAMPUS}, 127.0.0.9", True),    # only the hop the proxy added counts
    ("", True),
])
def test_exactly_the_trusted_hops_are_believed(make_app, fresh_user, forwarded_for, campus):
    app, cfg = make_app(trusted_proxies=1)
    uid, password = fresh_user()
    enroll(client_at(app, CAMPUS), cfg, uid, password)
    client = client_at(app, CAMPUS)  # the reverse proxy on the loopback
    if forwarded_for:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    login(client, uid, password)
    response = client.get("/mfa")
    if campus:
        assert response.status_code == 200
    else:
        assert response.status_code == 302 and "/verify" in response.location


def test_directory_outage_gives_a_plain_503(slapd, tmp_path):
    cfg = web_config(slapd)
    port = devldap.free_port()
    cfg = type(cfg)(**{**cfg.__dict__, "ldap": type(cfg.ldap)(**{
        **cfg.ldap.__dict__, "uris": (f"ldap://127.0.0.1:{port}",), "timeout": 1.0})})
    client = client_at(create_app(cfg), CAMPUS)
    response = login(client, "alice", "alice-pass")
    assert response.status_code == 503
    body = text(response)
    assert "The service is unavailable" in body
    assert "Traceback" not in body and "alice-pass" not in body and "ldap://" not in body


def test_an_internal_error_shows_and_logs_no_secret(make_app, fresh_user, monkeypatch, caplog):
    app, _ = make_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    secret = begin_setup(client, uid, password)
    code, _ = Codes(secret).next()

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"boom {to_base32(secret)} {code} {password}")
    monkeypatch.setattr(enroll_web.mfa, "matching_step", explode)
    with caplog.at_level(logging.DEBUG):
        response = post_form(client, "/mfa/confirm", {"code": code})
    assert response.status_code == 500
    shown = text(response) + caplog.text
    assert "RuntimeError" in caplog.text
    for value in (to_base32(secret), code, password, "Traceback", "boom"):
        assert value not in shown


def test_audit_lines_name_facts_never_secrets(make_app, fresh_user, tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "syslog.sock"
    listener.bind(str(path))
    listener.settimeout(0.2)
    try:
        app, cfg = make_app()
        app.config["CAMPUS_MFA"] = type(cfg)(**{**cfg.__dict__, "audit": type(cfg.audit)(
            syslog_socket=str(path))})
        uid, password = fresh_user()
        codes = enroll(client_at(app, CAMPUS), cfg, uid, password)
        off = client_at(app, OFF_CAMPUS)
        login(off, uid, password)
        used, _ = codes.next()
        post_form(off, "/verify", {"code": used})
        lines = []
        while True:
            try:
                lines.append(listener.recv(4096).decode())
            except socket.timeout:
                break
    finally:
        listener.close()
    joined = "\n".join(lines)
    assert f"user={uid} service=campus-mfa-enroll source=203.0.113.7 outcome=success" in joined
    assert "token confirmed" in joined and "role activated" in joined
    for value in (password, used, to_base32(codes.secret)):
        assert value not in joined


def test_pam_first_factor_through_the_hosts_pam_stack(make_app, fresh_user, tmp_path):
    """first_factor = "pam": python-pam through a real stack (pam_unix, a local account).
    A pam_exec line before pam_unix records every call, so an empty password is seen
    never to reach PAM."""
    uid, directory_password = fresh_user()  # the directory entry holds the MFA state
    local_password = "local-" + secrets.token_hex(8)
    calls = tmp_path / "calls"
    recorder = tmp_path / "record"
    recorder.write_text(f'#!/bin/sh\necho "$PAM_USER" >> {calls}\n')
    recorder.chmod(0o755)
    service = "campus-mfa-enroll-test-" + secrets.token_hex(4)
    stack = Path("/etc/pam.d") / service
    subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", uid],
                   check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{uid}:{local_password}\n", text=True, check=True)
        stack.write_text(f"auth optional pam_exec.so quiet {recorder}\n"
                         "auth required pam_unix.so\naccount required pam_unix.so\n")
        app, _ = make_app(first_factor="pam", pam_service=service)
        client = client_at(app, CAMPUS)
        assert LOGIN_FAILED in text(login(client, uid, ""))
        assert not calls.exists()  # empty password: PAM never asked
        assert LOGIN_FAILED in text(login(client, uid, directory_password))
        response = login(client, uid, local_password)
        assert response.status_code == 302 and response.headers["Location"].startswith("/")
        assert calls.read_text().split() == [uid, uid]
        # A local account without a directory entry has no MFA state: refused.
        other = "nodir" + secrets.token_hex(4)
        subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin",
                        other], check=True, capture_output=True)
        try:
            subprocess.run(["chpasswd"], input=f"{other}:{local_password}\n", text=True,
                           check=True)
            assert LOGIN_FAILED in text(login(client_at(app, CAMPUS), other, local_password))
        finally:
            subprocess.run(["userdel", other], capture_output=True)
    finally:
        stack.unlink(missing_ok=True)
        subprocess.run(["userdel", uid], capture_output=True)


def test_create_app_reads_the_file_named_by_the_environment(slapd, monkeypatch):
    monkeypatch.setenv("CAMPUS_MFA_CONFIG", slapd.config_path)
    app = create_app()
    assert app.config["CAMPUS_MFA"].path == slapd.config_path
    assert app.config["SESSION_COOKIE_NAME"] == "campus-mfa"
