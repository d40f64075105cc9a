"""The gate in front of other web sites (enroll_web/gate.py, /auth), with Flask's test
client against the session's slapd: what each address needs, the step-up, the sign-in's
way back (``rd``), the end of a session, and no directory read per request.
tests/test_gate_nginx.py runs the same through nginx's auth_request with a browser."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import pytest

from devtools.commands import campus_mfa
from enroll_web import grants
from enroll_web.redirects import form_targets, safe_destination
from policy.config import WebConfig
from policy.directory.enrollment import EnrollmentDirectory
from support.site import (CAMPUS, OFF_CAMPUS, client_at, enroll, login, path_of, post_form,
                          with_cookies_of)

PORTAL = "https://mfa.example.edu"
FILE = "https://files.example.edu/report.pdf"
GATE = {"portal_url": PORTAL, "protected_hosts": ("files.example.edu", ".apps.example.edu"),
        "cookie_domain": "example.edu"}


@pytest.fixture
def gate_app(make_app):
    """The site with the gate on, served as mfa.example.edu (the cookie's domain)."""
    def make(**changes):
        app, cfg = make_app(**{**GATE, **changes})
        app.config["SERVER_NAME"] = "mfa.example.edu"
        return app, cfg
    return make


def ask(client, original=FILE):
    """What nginx's auth_request asks for a request to ``original``."""
    return client.get("/auth", headers={"X-Original-URL": original})


def sign_in_location(original: str) -> str:
    return f"{PORTAL}/login?rd={quote(original, safe='')}"


def follow_sign_in(client, response, password, uid, code=None):
    """The browser's way from the gate's 401 through the portal and back: the rd it is
    sent to at the end."""
    assert response.status_code == 401
    signed = post_form(client, path_of(response.headers["Location"]),
                       {"username": uid, "password": password})
    assert signed.status_code == 302, signed.get_data(as_text=True)
    assert signed.location.startswith("/verify?rd=")
    page = client.get(signed.location)
    if page.status_code == 302:  # no code needed from here
        assert code is None, "no code was asked for"
        return page.location
    assert "Enter Verification Code" in page.get_data(as_text=True)
    assert code is not None, "a code was asked for"
    done = post_form(client, signed.location, {"code": code})
    assert done.status_code == 302, done.get_data(as_text=True)
    return done.location


def test_without_a_session_the_gate_sends_to_sign_in_and_back(gate_app, fresh_user):
    app, _ = gate_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    first = ask(client)
    assert (first.status_code, first.headers["Location"]) == (401, sign_in_location(FILE))
    assert "Remote-User" not in first.headers
    assert follow_sign_in(client, first, password, uid) == FILE  # campus: password only
    again = ask(client)
    assert (again.status_code, again.headers["Remote-User"]) == (200, uid)


def test_off_campus_with_a_token_needs_the_code_and_the_gate_then_passes(gate_app, fresh_user):
    app, cfg = gate_app()
    uid, password = fresh_user()
    codes = enroll(client_at(app, CAMPUS), cfg, uid, password)
    off = client_at(app, OFF_CAMPUS)
    code, _ = codes.next()
    assert follow_sign_in(off, ask(off), password, uid, code) == FILE
    assert ask(off).headers["Remote-User"] == uid
    # A session that entered no code (a new one, password only) does not pass.
    other = client_at(app, OFF_CAMPUS)
    assert login(other, uid, password).status_code == 302
    assert ask(other).status_code == 401


def test_a_session_signed_in_on_campus_steps_up_off_campus(gate_app, fresh_user):
    """The same cookie from campus, then from off campus: asked for the code (not the
    password again) before the next request passes; back on campus nothing more."""
    app, cfg = gate_app()
    uid, password = fresh_user()
    codes = enroll(client_at(app, CAMPUS), cfg, uid, password)
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    assert ask(client).status_code == 200
    client.environ_base["REMOTE_ADDR"] = OFF_CAMPUS
    bounced = ask(client)
    assert bounced.status_code == 401
    login_page = client.get(path_of(bounced.headers["Location"]))
    assert login_page.status_code == 302 and login_page.location.startswith("/verify?rd=")
    code, _ = codes.next()
    done = post_form(client, login_page.location, {"code": code})
    assert (done.status_code, done.location) == (302, FILE)
    assert ask(client).status_code == 200
    client.environ_base["REMOTE_ADDR"] = CAMPUS
    assert ask(client).status_code == 200


@pytest.mark.parametrize("enforcement, passes", [("opt-in", True), ("required", False)])
def test_off_campus_without_a_token(gate_app, fresh_user, enforcement, passes):
    app, _ = gate_app(policy={"enforcement": enforcement})
    uid, password = fresh_user()
    off = client_at(app, OFF_CAMPUS)
    signed = post_form(off, path_of(ask(off).headers["Location"]),
                       {"username": uid, "password": password})
    if passes:
        assert (signed.status_code, signed.location) == (302, f"/verify?rd={quote(FILE, safe='')}")
        assert off.get(signed.location).location == FILE
        assert ask(off).headers["Remote-User"] == uid
    else:
        refused = off.get(signed.location)
        assert refused.status_code == 403
        assert "Set it up from the campus network first" in refused.get_data(as_text=True)
        assert ask(off).status_code == 401


def test_log_out_closes_every_protected_site_for_every_copy_of_the_cookie(gate_app,
                                                                         fresh_user):
    app, _ = gate_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    copy = with_cookies_of(client, app)
    assert ask(copy).headers["Remote-User"] == uid
    post_form(client, "/logout", {}, page="/")
    assert ask(client).status_code == 401
    assert ask(copy).status_code == 401


def make_due(client):
    """As if web.recheck_seconds had passed since the gate last read the user's state."""
    with client.session_transaction() as session:
        session[grants.GRANTED] = {**session[grants.GRANTED], "checked": 0}


def assert_ended(client):
    """The session is gone from the store (not just refused once)."""
    with client.session_transaction() as session:
        assert "user" not in session, dict(session)


def run_admin(cfg, *args):
    done = campus_mfa(cfg.path, *args)
    assert done.returncode == 0, done.stderr


def test_reset_and_revoke_end_the_session_at_the_next_check(gate_app, fresh_user, slapd):
    app, cfg = gate_app(recheck_seconds=3600)
    uid, password = fresh_user()
    enroll(client_at(app, CAMPUS), cfg, uid, password)
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    assert ask(client).status_code == 200
    run_admin(cfg, "reset", uid)
    assert ask(client).status_code == 200  # not before the view is web.recheck_seconds old
    make_due(client)  # ... which it now is
    assert ask(client).status_code == 401
    assert_ended(client)
    # revoke-role likewise.
    login(client, uid, password)
    assert ask(client).status_code == 200
    run_admin(cfg, "revoke-role", uid)
    make_due(client)
    assert ask(client).status_code == 401


def test_no_directory_read_per_request(gate_app, fresh_user, monkeypatch):
    app, _ = gate_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    reads = []
    original = EnrollmentDirectory.read_state
    monkeypatch.setattr(EnrollmentDirectory, "read_state",
                        lambda self, *a, **k: reads.append(a) or original(self, *a, **k))
    for _ in range(20):
        assert ask(client).status_code == 200
    assert reads == []
    make_due(client)
    assert ask(client).status_code == 200
    assert len(reads) == 1


def test_a_directory_outage_at_a_check_fails_closed(gate_app, fresh_user, monkeypatch):
    from policy.errors import DirectoryUnavailable

    app, _ = gate_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    assert ask(client).status_code == 200

    def down(self, *args, **kwargs):
        raise DirectoryUnavailable("no server answered")

    monkeypatch.setattr(EnrollmentDirectory, "read_state", down)
    make_due(client)
    assert ask(client).status_code == 401


def test_a_session_older_than_its_maximum_age_ends(gate_app, fresh_user):
    app, cfg = gate_app()
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    login(client, uid, password)
    assert ask(client).status_code == 200
    with client.session_transaction() as session:
        session[grants.SIGNED_IN] -= cfg.web.session_max_age + 1
    assert ask(client).status_code == 401
    assert_ended(client)


def test_the_cookie_reaches_the_protected_hosts(gate_app, fresh_user):
    app, _ = gate_app(cookie_secure=True)
    uid, password = fresh_user()
    client = client_at(app, CAMPUS)
    reply = login(client, uid, password)
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("__Secure-campus-mfa=")  # __Host- may not name a domain
    assert "Domain=example.edu" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "SameSite=Lax" in cookie


# -- where the sign-in may send the browser back to (the hostile table) -------------------

WEB = WebConfig(**GATE)


@pytest.mark.parametrize("rd, expected", [
    (FILE, FILE),
    ("https://files.example.edu/a?x=1&y=2#top", "https://files.example.edu/a?x=1&y=2#top"),
    ("HTTPS://FILES.EXAMPLE.EDU/", "https://files.example.edu/"),      # mixed case
    ("https://files.example.edu:443/x", "https://files.example.edu/x"),
    ("https://wiki.apps.example.edu/", "https://wiki.apps.example.edu/"),  # .apps.example.edu
    ("https://mfa.example.edu/mfa", "https://mfa.example.edu/mfa"),    # the portal itself
    ("https://apps.example.edu/", None),                               # the parent itself
    ("//evil.example", None),
    ("https:evil", None),
    ("https:/evil.example", None),
    ("https://files.example.edu@evil.example", None),
    ("https://user:pw@files.example.edu/", None),
    ("https://evil.example/?files.example.edu", None),
    ("https://files.example.edu.evil.example/", None),
    ("https://files.example.edu\\@evil.example", None),                # backslashes
    ("https:\\\\evil.example", None),
    ("https://files.example.edu\\.evil.example/", None),
    ("javascript:alert(1)", None),
    ("JaVaScRiPt:alert(1)", None),
    ("data:text/html,x", None),
    ("https%3A%2F%2Fevil.example", None),                               # percent-encoded
    ("https://files%2Eexample.edu/", None),
    ("https://files.example.edu%2F@evil.example/", None),
    ("https://files.example.edu./", None),                              # trailing dot
    ("https://files.example.edu:8443/", None),                          # a port
    ("https://files.example.edu:0/", None),
    ("http://files.example.edu/", None),                                # not https
    ("https://files.example.edu/\r\nLocation: https://evil.example", None),
    (" https://files.example.edu/", None),
    ("https://fïles.example.edu/", None),
    ("", None),
    ("https://files.example.edu/" + "a" * 3000, None),
])
def test_only_listed_hosts_over_https_are_sent_back_to(rd, expected):
    assert safe_destination(rd, WEB) == expected


def test_forms_may_lead_to_the_protected_hosts(gate_app):
    """A browser applies CSP form-action to the redirects after a form: the sign-in's last
    step goes to a protected host, and nowhere else."""
    app, _ = gate_app()
    csp = app.test_client().get("/login").headers["Content-Security-Policy"]
    assert "form-action 'self' https://files.example.edu https://*.apps.example.edu;" in csp
    demo = WebConfig(portal_url="http://127.0.0.1:8080", protected_hosts=("127.0.0.1",))
    assert form_targets(demo) == ["https://127.0.0.1", "http://127.0.0.1:*"]


def test_http_only_to_a_listed_loopback_host():
    demo = WebConfig(portal_url="http://127.0.0.1:8080", protected_hosts=("127.0.0.1",))
    assert safe_destination("http://127.0.0.1:8081/share/", demo) == "http://127.0.0.1:8081/share/"
    assert safe_destination("http://127.0.0.2:8081/", demo) is None
    assert safe_destination("http://[::1]:8081/", demo) is None


def test_a_hostile_original_url_sends_to_the_plain_sign_in(gate_app):
    app, _ = gate_app()
    client = client_at(app, OFF_CAMPUS)
    for original in ("https://evil.example/", "javascript:alert(1)", "//evil.example"):
        answer = ask(client, original)
        assert (answer.status_code, answer.headers["Location"]) == (401, f"{PORTAL}/login")
    answer = ask(client, FILE)
    assert parse_qs(urlsplit(answer.headers["Location"]).query) == {"rd": [FILE]}


# -- the gate's configuration ---------------------------------------------------------------

@pytest.mark.parametrize("web, problem", [
    ('protected_hosts = ["files.example.edu"]\ncookie_domain = "example.edu"',
     r"web\.portal_url must be set when web\.protected_hosts is"),
    ('portal_url = "https://mfa.example.edu"\nprotected_hosts = ["files.example.edu"]',
     r"web\.protected_hosts has files\.example\.edu, which the portal's cookie never reaches"),
    ('portal_url = "https://mfa.example.edu"\nprotected_hosts = ["files.other.edu"]\n'
     'cookie_domain = "example.edu"', r"web\.protected_hosts has files\.other\.edu, which the "
     r"portal's cookie"),
    ('portal_url = "http://mfa.example.edu"', r"web\.portal_url must be https://HOST\[:PORT\]"),
    ('portal_url = "https://mfa.example.edu/sso"', r"web\.portal_url must be https://"),
    ('cookie_domain = ".example.edu"', r"web\.cookie_domain must be a DNS name"),
    ('portal_url = "https://mfa.example.edu"\nprotected_hosts = ["https://files.example.edu"]\n'
     'cookie_domain = "example.edu"', r"web\.protected_hosts must hold DNS names"),
    ('portal_url = "https://mfa.example.edu"\nprotected_hosts = ["files.example.edu:443"]\n'
     'cookie_domain = "example.edu"', r"web\.protected_hosts must hold DNS names"),
    ('portal_url = "https://mfa.example.org"\ncookie_domain = "example.edu"',
     r"web\.cookie_domain must hold the portal's host mfa\.example\.org"),
    ('recheck_seconds = 0', r"web\.recheck_seconds must be between 1 and 3600"),
    ('session_max_age = 60', r"web\.session_max_age must be at least web\.session_lifetime"),
])
def test_gate_settings_are_checked(slapd, tmp_path, web, problem):
    from pathlib import Path

    from policy.config import load_config
    from policy.errors import ConfigError

    path = tmp_path / "campus-mfa.toml"
    path.write_text(Path(slapd.config_path).read_text().replace("[web]\n", f"[web]\n{web}\n"))
    with pytest.raises(ConfigError, match=rf"^{path}: {problem}"):
        load_config(str(path))
