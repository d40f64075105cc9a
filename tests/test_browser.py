"""The site as it is deployed: Debian's nginx with the shipped example site terminating TLS
(a throwaway CA), gunicorn on a unix socket with the unit's own flags, and Debian's headless
chromium in a campus and an off-campus network namespace (tests/support/netns.py draws the
layout). The ``site`` fixture (conftest.py) is the deployed site.

The seed's story: log in, Request a Role, set up, scan the QR code from a screenshot with
zbarimg, compute the code with oathtool (an independent TOTP implementation), confirm, see
status On; then the same user from the off-campus namespace: log in, Enter Verification
Code, the portal, changes refused. The site learns the client's address only from nginx.
Screenshots of every screen go to $CAMPUS_MFA_ARTIFACTS or tests/artifacts/.
"""
from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from devtools import devldap
from devtools.commands import campus_mfa
from devtools.oathtool import oathtool
from support import ARTIFACTS, weblab
from support.netns import CLIENT
from support.sitelab import HOST, ask, gunicorn, wait_until_serving

COOKIE = "__Host-campus-mfa"
BASE32_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # 160 bits, for `campus-mfa import`


def enroll_on_campus(screens: weblab.Screens, url: str, uid: str, password: str) -> str:
    """The seed's campus story in the browser; returns the secret read from the QR code."""
    from selenium.webdriver.common.by import By

    browser = screens.driver
    browser.get(url)
    assert screens.heading() == "Users Portal"
    screens.shot("01-users-portal")
    screens.click_link("User Information Management (*Internal Only)")
    assert screens.heading() == "Log in with your CIS account"
    screens.shot("02-log-in")
    screens.log_in(uid, password)
    assert screens.heading() == "User Information Management"
    screens.shot("03-user-information-management")
    screens.click_button("Activate")
    assert browser.find_element(By.CLASS_NAME, "role-status").text == "Active"
    screens.shot("04-request-a-role-active")

    screens.click_link("Set up Multi-Factor Authentication")
    assert browser.find_element(By.ID, "mfa-status").text == "Off"
    screens.shot("05-set-up-multi-factor-authentication")
    screens.click_link("2 Factor Authentication Setup")
    assert screens.heading() == "2 Factor Authentication Setup"
    screens.shot("06-2-factor-authentication-setup")
    screens.click_button("Use a Token Application")
    assert "Use a Token Application" in browser.page_source
    screens.shot("07-use-a-token-application")
    qr_png = screens.path("07-qr-code")
    browser.find_element(By.ID, "qr").screenshot(str(qr_png))

    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(qr_png)],
                             capture_output=True, text=True, check=True).stdout.strip()
    uri = urlparse(decoded)
    query = parse_qs(uri.query)
    key = browser.find_element(By.ID, "secret-key").text
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/Example University:{uid}"
    assert query["issuer"] == ["Example University"]
    assert query["secret"] == [key.replace(" ", "")] and len(query["secret"][0]) == 32
    assert set(query) == {"secret", "issuer"}  # SHA1, 6 digits, 30 s: the defaults
    secret = query["secret"][0]

    screens.click_link("Next")
    screens.shot("08-authentication-code")
    browser.find_element(By.NAME, "code").send_keys(oathtool(secret))
    screens.click_button("Confirm")
    assert browser.find_element(By.ID, "mfa-status").text == "On"
    screens.shot("09-status-on")
    return secret


def test_enrollment_on_campus_then_login_off_campus_over_https(site, fresh_user):
    from selenium.webdriver.common.by import By

    uid, password = fresh_user()
    with site.browser("campus") as browser:
        secret = enroll_on_campus(weblab.Screens(browser, ARTIFACTS), site.url("/"), uid,
                                  password)

    with site.browser("off") as browser:
        screens = weblab.Screens(browser, ARTIFACTS)
        browser.get(site.url("/login"))
        screens.shot("10-off-campus-log-in")
        screens.log_in(uid, password)
        assert screens.heading() == "Enter Verification Code"
        screens.shot("11-enter-verification-code")
        browser.find_element(By.NAME, "code").send_keys(
            oathtool(secret, time.time() + 30))
        screens.click_button("Login")
        assert screens.heading() == "Users Portal"
        screens.click_link("Set up Multi-Factor Authentication")
        assert browser.find_element(By.ID, "mfa-status").text == "On"
        assert "Changes are available from the campus network only" in browser.page_source
        screens.shot("12-off-campus-status")
        browser.get(site.url("/user-info"))
        assert "available from the campus network only" in browser.page_source
        screens.shot("13-campus-network-only")

        # A copy of the session cookie works while the session lasts ...
        copied = browser.get_cookie(COOKIE)
        assert copied is not None and copied["secure"] and copied["httpOnly"]
        thief = site.client("off")
        thief.cookies[COOKIE] = copied["value"]
        page = thief.get("/mfa")
        assert page.status == 200 and '<strong id="mfa-status">On</strong>' in page.body
        browser.get(site.url("/mfa"))
        screens.click_text_button("Log out")
        assert screens.heading() == "Log in with your CIS account"
        assert "You have logged out." in browser.page_source
        screens.shot("14-logged-out")

    # ... and is dead once its user logged out: the server forgot the session.
    thief.cookies = {COOKIE: copied["value"]}
    for path in ("/mfa", "/user-info"):
        replay = thief.get(path)
        assert replay.status == 302 and replay.location.startswith("/login"), replay
    site.audit_line(f"user={uid} service=campus-mfa-enroll source={CLIENT['off', 'v4']} "
                    'outcome=success reason="logged out"')


def test_admin_reset_ends_a_session_over_https(site, fresh_user):
    """``campus-mfa reset`` on another host's command line: the next request of a session
    signed in before is sent to log in, and so is every later one with that cookie."""
    uid, password = fresh_user()
    imported = campus_mfa(site.config, "import", uid, "--secret", "-",
                          stdin=BASE32_SECRET + "\n")
    assert imported.returncode == 0, imported.stderr
    client = site.client("campus")
    assert client.post_form("/login", {"username": uid, "password": password}).status == 302
    assert '<strong id="mfa-status">On</strong>' in client.get("/mfa").body
    copied = dict(client.cookies)
    reset = campus_mfa(site.config, "reset", uid)
    assert reset.returncode == 0, reset.stderr
    ended = client.get("/mfa")
    assert ended.status == 302 and ended.location == "/login"
    assert "Your session has ended" in client.get("/login").body
    client.cookies = copied
    again = client.get("/mfa")
    assert again.status == 302 and again.location.startswith("/login")
    site.audit_line(f"user={uid} service=campus-mfa-enroll source={CLIENT['campus', 'v4']} "
                    'outcome=failure reason="session ended: 2-step verification changed '
                    'since sign-in"')


def test_nginx_replaces_a_forged_forwarded_for(site, fresh_user):
    """The example's nginx writes X-Forwarded-For itself: an off-campus client that claims
    a campus address stays off campus, a campus client that claims otherwise stays campus."""
    uid, password = fresh_user()
    off = site.client("off")
    claims_campus = {"X-Forwarded-For": CLIENT["campus", "v4"]}
    login = off.post_form("/login", {"username": uid, "password": password},
                          headers=claims_campus)
    assert login.status == 302
    refused = off.get("/user-info", headers=claims_campus)
    assert refused.status == 403 and "available from the campus network only" in refused.body
    seen = f"user={uid} service=campus-mfa-enroll source={CLIENT['off', 'v4']} "
    site.audit_line(seen + 'outcome=success reason="password accepted"')
    site.audit_line(seen + 'outcome=failure reason="portal.user_info from off campus"')

    campus = site.client("campus")
    claims_off = {"X-Forwarded-For": CLIENT["off", "v4"]}
    campus.post_form("/login", {"username": uid, "password": password}, headers=claims_off)
    page = campus.get("/user-info", headers=claims_off)
    assert page.status == 200 and "Request a Role" in page.body


@pytest.mark.parametrize("where", ["campus", "off"])
def test_plain_http_is_redirected_to_https(site, where):
    reply = site.client(where).get("/login?next=mfa.status", https=False)
    assert (reply.status, reply.location) == (301, f"https://{HOST}/login?next=mfa.status")


def test_https_answers_carry_hsts_the_referrer_policy_and_a_host_cookie(site):
    reply = site.client("campus").get("/login")
    assert reply.status == 200
    assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert reply.headers["Referrer-Policy"] == "same-origin"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "Domain=" not in cookie
    assert {"Secure", "HttpOnly", "Path=/", "SameSite=Lax"} <= {
        part.strip() for part in cookie.split(";")}


def test_csrf_stays_strict_over_https(site, fresh_user):
    """A POST whose Referer is missing or names another site is refused over HTTPS
    (Flask-WTF's WTF_CSRF_SSL_STRICT), even with a valid CSRF token."""
    uid, password = fresh_user()
    client = site.client("campus")
    form = {"username": uid, "password": password}
    for referer in ({}, {"Referer": "https://elsewhere.example.org/login"}):
        refused = client.post_form("/login", form, headers=referer, referer=False)
        assert refused.status == 400, refused
        assert "The form has expired or was not sent by this site" in refused.body
    assert client.post_form("/login", form).status == 302


def test_the_plain_http_demo_logs_in_and_posts(slapd, fresh_user, tmp_path):
    """``make demo`` serves plain HTTP on loopback (cookie_secure = false, two workers):
    a real chromium logs in and activates the role there too."""
    from selenium.webdriver.common.by import By

    uid, password = fresh_user()
    config = tmp_path / "campus-mfa.toml"
    config.write_text(Path(slapd.config_path).read_text())  # as `make demo` has it
    port = devldap.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["/usr/bin/gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "enroll_web:create_app()"]
    with gunicorn(argv, config, tmp_path / "gunicorn.log") as proc:
        wait_until_serving(proc, lambda: ask(http.client.HTTPConnection("127.0.0.1", port)),
                           tmp_path / "gunicorn.log")
        with weblab.chromium({}, None) as browser:
            screens = weblab.Screens(browser, ARTIFACTS, "http-")
            browser.get(url + "/user-info")
            screens.log_in(uid, password)
            assert screens.heading() == "User Information Management"
            screens.click_button("Activate")
            assert browser.find_element(By.CLASS_NAME, "role-status").text == "Active"
            screens.shot("01-request-a-role-active")
