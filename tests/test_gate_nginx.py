"""The gate as deployed (support/gatelab.py): Debian's nginx with TLS runs the shipped snippet
in front of a file share (autoindex, WebDAV) and a small application, the README's server
block as written; two portal processes share sessions and limits through redis; chromium
and http.client sign in from the campus and the off-campus namespace, and curl checks the
redirect and the forged headers (issue 13's scenarios 1-6, the forgeries, broken cookies,
the hostile ``rd`` table, the directory down; issue 14's two processes). Screenshots of every screen go to $CAMPUS_MFA_ARTIFACTS or tests/artifacts/.
A code used over ssh and then at the gate: tests/test_ssh_e2e.py (test 9)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import ldap3
import pytest
import redis as redis_client

from devtools import devldap
from devtools.codes import wrong_code
from devtools.commands import campus_mfa
from devtools.oathtool import oathtool
from policy.messages import MISMATCH_MESSAGE, SERVICE_UNAVAILABLE, SET_UP_MESSAGE
from policy.rules.totp import TotpParams, to_base32
from support import ARTIFACTS, weblab
from support.gatelab import CODE_LIMIT, FILES, RECHECK_SECONDS, REPORT, REQUIRED_GROUP, Gate
from support.netns import SERVER
from support.site import csrf_token, path_of
from support.sitelab import HOST

PORTAL = f"https://{HOST}"


@dataclass
class Person:
    uid: str
    password: str
    secret: bytes | None = None

    def code(self) -> str:
        assert self.secret is not None
        return oathtool(to_base32(self.secret))


@pytest.fixture
def person(slapd: devldap.DevLdap, fresh_user: Callable) -> Callable[..., Person]:
    """Factory: a new directory user, with a linked token unless ``token=False``."""
    def make(token: bool = True) -> Person:
        uid, password = fresh_user()
        secret = devldap.link_new_token(slapd, uid)[0] if token else None
        return Person(uid, password, secret)
    return make


def sign_in(gate: Gate, where: str, who: Person, page: str = "/app/",
            code: str | None = None) -> tuple[weblab.Client, weblab.Client]:
    """Ask for ``page`` on the protected site, sign in at the portal (the code too, if
    given), and check that the portal sends the client back to exactly that page."""
    portal, files, verify = gate.password_step(where, who.uid, who.password, page)
    if code is not None:
        step = portal.post_form(verify, {"code": code})
    else:
        step = portal.get(verify)  # nothing more to enter: on to the page
    assert step.status == 302 and step.location == gate.url(page), (step, step.body)
    return portal, files


def passes(files: weblab.Client, who: Person, **headers: str) -> bool:
    """Whether the application answers for ``who`` (else the gate sent to sign in)."""
    reply = files.get("/app/", headers=headers)
    if reply.status == 302:
        assert reply.location.startswith(f"{PORTAL}/login?rd="), reply.location
        return False
    assert (reply.status, reply.body) == (200, f"Remote-User: {who.uid}\n"), reply
    return True


def cli(gate: Gate, *args: str) -> None:
    out = campus_mfa(gate.site.config, *args)
    assert out.returncode == 0, out.stderr


def until_refused(files: weblab.Client, who: Person) -> float:
    """Wait until the gate stops letting ``who`` through: within web.recheck_seconds (and
    a second for the requests themselves)."""
    started = time.monotonic()
    while passes(files, who):
        assert time.monotonic() - started < RECHECK_SECONDS + 1, "the session still passes"
        time.sleep(0.2)


# -- 1, 3: off campus with a token, in a browser, to a file and back ------------------------

@contextmanager
def at_sign_in(gate: Gate, where: str, wanted: str) -> Iterator[tuple[Any, weblab.Screens]]:
    """A browser in ``where`` that asked for ``wanted`` and was sent to the sign-in."""
    with gate.site.browser(where) as browser:
        screens = weblab.Screens(browser, ARTIFACTS, f"gate-{where}-")
        browser.get(wanted)
        assert browser.current_url.startswith(f"{PORTAL}/login?rd=")
        assert screens.heading() == "Log in with your CIS account"
        screens.shot("1-log-in")
        yield browser, screens


def test_off_campus_the_password_and_the_code_lead_back_to_the_share(gate, person):
    from selenium.webdriver.common.by import By

    who = person()
    wanted = gate.url("/share/reports/")
    with at_sign_in(gate, "off", wanted) as (browser, screens):
        screens.log_in(who.uid, who.password)
        assert screens.heading() == "Enter Verification Code"
        screens.shot("2-verification-code")
        browser.find_element(By.NAME, "code").send_keys(wrong_code(who.secret))
        screens.click_button("Login")
        assert MISMATCH_MESSAGE in browser.page_source
        screens.shot("3-wrong-code")
        field = browser.find_element(By.NAME, "code")
        field.clear()
        field.send_keys(who.code())
        screens.click_button("Login")
        assert browser.current_url == wanted
        assert screens.heading() == "Index of /share/reports/"
        assert browser.find_element(By.LINK_TEXT, "report.pdf")
        screens.shot("4-the-share")
        cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    # The browser's cookie, in a plain client off campus: the file itself, and WebDAV.
    _, files = gate.clients("off")
    files.cookies.update(cookies)
    report = files.get("/share/reports/report.pdf")
    assert (report.status, report.body.encode("utf-8", "replace")[:8]) == (200, b"%PDF-1.4")
    assert int(report.headers["Content-Length"]) == len(REPORT)
    put = files.request("PUT", "/share/reports/notes.txt", body=b"written through the gate\n")
    assert put.status == 201, put
    assert (gate.share / "reports" / "notes.txt").read_bytes() == b"written through the gate\n"
    listing = files.request("PROPFIND", "/share/reports/", headers={"Depth": "1"})
    assert listing.status == 207 and "notes.txt" in listing.body, listing
    # Without the cookie: the sign-in, and nothing written.
    anonymous = gate.clients("off")[1]
    refused = anonymous.request("PUT", "/share/reports/evil.txt", body=b"no\n")
    assert refused.status == 302 and refused.location.startswith(f"{PORTAL}/login")
    assert not (gate.share / "reports" / "evil.txt").exists()
    assert anonymous.request("PROPFIND", "/share/", headers={"Depth": "1"}).status == 302


# -- 2: on campus the password is enough -----------------------------------------------------

def test_on_campus_the_password_is_enough(gate, person):
    who = person()
    wanted = gate.url("/app/hello")
    with at_sign_in(gate, "campus", wanted) as (browser, screens):
        screens.log_in(who.uid, who.password)
        assert browser.current_url == wanted
        assert f"Remote-User: {who.uid}" in browser.page_source
        screens.shot("2-the-application")


# -- 4: off campus without a token -----------------------------------------------------------

def test_off_campus_without_a_token_opt_in_passes_and_a_required_group_is_refused(
        gate, person, slapd):
    optional = person(token=False)
    _, files = sign_in(gate, "off", optional)
    assert passes(files, optional)

    required = person(token=False)
    conn = devldap.admin_connection(slapd)
    try:
        conn.modify(REQUIRED_GROUP, {"member": [(ldap3.MODIFY_ADD, [
            f"uid={required.uid},ou=people,{slapd.base_dn}"])]})
    finally:
        conn.unbind()
    portal, files, verify = gate.password_step("off", required.uid, required.password)
    refused = portal.get(verify)
    assert SET_UP_MESSAGE in refused.body, refused.body
    assert not passes(files, required)


# -- 5: the step-up --------------------------------------------------------------------------

def test_a_campus_session_used_off_campus_is_asked_for_the_code_once(gate, person):
    who = person()
    portal, files = sign_in(gate, "campus", who)
    assert passes(files, who)
    off_portal, off_files = gate.clients("off")
    off_portal.cookies.update(portal.cookies)
    sent = off_files.get("/app/")
    assert sent.status == 302
    step = off_portal.get(path_of(sent.location))  # signed in: straight to the code
    assert step.status == 302 and step.location.startswith("/verify?"), step
    step = off_portal.post_form(step.location, {"code": who.code()})
    assert step.location == gate.url("/app/"), step
    assert passes(off_files, who)
    assert passes(files, who)  # and back on campus: nothing more


def test_a_session_signed_in_off_campus_passes_on_campus(gate, person):
    who = person()
    portal, files = sign_in(gate, "off", who, code=who.code())
    campus_portal, campus_files = gate.clients("campus")
    campus_portal.cookies.update(portal.cookies)
    assert passes(campus_files, who)


# -- 6: log out, a copied cookie, reset and revoke-role -------------------------------------

def test_log_out_closes_every_site_for_every_copy_of_the_cookie(gate, person):
    who = person()
    portal, files = sign_in(gate, "off", who, code=who.code())
    copy_portal, copy_files = gate.clients("campus")
    copy_portal.cookies.update(portal.cookies)
    assert passes(files, who) and passes(copy_files, who)
    out = portal.post_form("/logout", {}, page="/")
    assert out.status == 302
    assert not passes(files, who)
    assert not passes(copy_files, who)


@pytest.mark.parametrize("command", ["reset", "revoke-role"])
def test_reset_and_revoke_role_end_the_sessions_within_the_recheck(gate, person, command):
    who = person()
    cli(gate, "grant-role", who.uid)
    _, files = sign_in(gate, "off", who, code=who.code())
    assert passes(files, who)
    cli(gate, command, who.uid)
    until_refused(files, who)


# -- forgeries and broken cookies -------------------------------------------------------------

def test_a_forged_remote_user_never_reaches_the_application(gate, person):
    who = person()
    _, files = sign_in(gate, "campus", who)
    assert passes(files, who, **{"Remote-User": "root"})
    assert gate.upstream.seen[-1]["Remote-User"] == who.uid
    seen = len(gate.upstream.seen)
    anonymous = gate.clients("off")[1]
    forged = anonymous.get("/app/", headers={"Remote-User": "root"})
    assert forged.status == 302 and len(gate.upstream.seen) == seen


def test_a_forged_x_forwarded_for_does_not_make_a_client_on_campus(gate, person):
    campus_address = "192.0.2.2"
    who = person()
    portal, _ = sign_in(gate, "campus", who)
    off_portal, off_files = gate.clients("off")
    off_portal.cookies.update(portal.cookies)
    assert not passes(off_files, who, **{"X-Forwarded-For": campus_address})
    # Signing in off campus with the header: the code is still asked for.
    other = person()
    _, fresh_files, _ = gate.password_step("off", other.uid, other.password,
                                           headers={"X-Forwarded-For": campus_address})
    assert not passes(fresh_files, other, **{"X-Forwarded-For": campus_address})


def curl(gate: Gate, where: str, page: str, *headers: str) -> tuple[int, str, str]:
    """curl, an independent client, in the ``where`` namespace asks the protected site for
    ``page`` (the lab's CA, the site's name pinned to the server's address there): the status,
    where a redirect points, and the body."""
    out = subprocess.run(
        ["ip", "netns", "exec", gate.site.lab.clients[where], "curl", "--silent",
         "--show-error", "--max-time", "10", "--cacert", str(gate.site.tls.ca),
         "--resolve", f"{FILES}:443:{SERVER[where, 'v4']}",
         "--write-out", "\n%{http_code} %{redirect_url}",
         *[arg for header in headers for arg in ("--header", header)], gate.url(page)],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, _, last = out.stdout.rpartition("\n")
    status, _, location = last.partition(" ")
    return int(status), location, body


def test_curl_sees_the_redirect_and_its_forged_headers_change_nothing(gate, person):
    forged = ("Remote-User: root", "X-Forwarded-For: 192.0.2.2")
    seen = len(gate.upstream.seen)
    status, location, _ = curl(gate, "off", "/app/report.pdf", *forged)
    assert (status, location) == (
        302, f"{PORTAL}/login?rd={quote(gate.url('/app/report.pdf'), safe='')}")
    assert len(gate.upstream.seen) == seen
    who = person()
    portal, _ = sign_in(gate, "campus", who)  # the password only
    cookie = "Cookie: " + "=".join(session_cookie(portal))
    # On campus the session passes, and the application hears the gate, not the client.
    assert curl(gate, "campus", "/app/", cookie, *forged)[::2] == (
        200, f"Remote-User: {who.uid}\n")
    assert gate.upstream.seen[-1]["Remote-User"] == who.uid
    # Off campus the forged campus address does not spare it the code.
    status, location, _ = curl(gate, "off", "/app/", cookie, *forged)
    assert status == 302 and location.startswith(f"{PORTAL}/login?rd="), location


def session_cookie(client: weblab.Client) -> tuple[str, str]:
    names = [name for name in client.cookies if name.startswith("__Secure-")]
    assert len(names) == 1, client.cookies
    return names[0], client.cookies[names[0]]


def test_garbage_truncated_and_expired_cookies_send_to_sign_in(gate, person, redis):
    who = person()
    portal, files = sign_in(gate, "campus", who)
    name, value = session_cookie(portal)
    for broken in ("garbage", value[:-6], value[: len(value) // 2], value + "A", ""):
        files.cookies[name] = broken
        reply = files.get("/app/")
        assert reply.status == 302 and reply.location.startswith(f"{PORTAL}/login?rd="), \
            (broken, reply)
    # Expired: the store forgets the session at the end of its idle lifetime.
    files.cookies[name] = value
    assert passes(files, who)
    store = redis_client.Redis(unix_socket_path=str(redis.socket))
    keys = [key for key in store.keys("*") if value.rsplit(".", 1)[0].encode() in key]
    assert len(keys) == 1, keys
    store.pexpire(keys[0], 1)
    time.sleep(0.05)
    assert not passes(files, who)


# -- the hostile rd table, through nginx -----------------------------------------------------

HOSTILE = ["//evil.example/", "https:evil.example", "https://files.example.edu@evil.example/",
           "https://evil.example/?files.example.edu", "https:\\\\evil.example",
           "https://files.example.edu\\@evil.example/", "javascript:alert(1)",
           "JAVASCRIPT:alert(1)", "https%3A%2F%2Fevil.example", "HTTPS://EVIL.EXAMPLE/",
           "https://files.example.edu.evil.example/", "https://evil.example/files.example.edu",
           "http://files.example.edu/app/", "https://files.example.edu./app/",
           "https://files.example.edu:8443/app/", "ftp://files.example.edu/"]


def test_after_sign_in_only_a_listed_https_host_is_a_destination(gate, person):
    who = person()
    portal, _ = sign_in(gate, "campus", who)
    for rd in HOSTILE + [gate.url("/app/x?y=1")]:
        step = portal.get(f"/login?rd={quote(rd, safe='')}")
        assert step.status == 302 and step.location.startswith("/verify?"), (rd, step)
        assert parse_qs(urlsplit(step.location).query)["rd"] == [rd]
        onward = portal.get(step.location)
        expected = rd if rd == gate.url("/app/x?y=1") else "/"
        assert onward.status == 302 and onward.location == expected, (rd, onward.location)


# -- the directory down ------------------------------------------------------------------------

def test_with_the_directory_down_sign_in_is_a_clear_503_and_nothing_passes(gate, person,
                                                                          slapd):
    who, waiting = person(), person()
    _, waiting_files = sign_in(gate, "off", waiting, code=waiting.code())
    assert passes(waiting_files, waiting)
    portal, files = gate.clients("off")
    login = files.get("/app/").location
    os.kill(slapd.pid, signal.SIGSTOP)
    try:
        down = portal.post_form(path_of(login), {"username": who.uid,
                                                 "password": who.password})
        assert down.status == 503 and SERVICE_UNAVAILABLE in down.body, down
        assert who.password not in down.body
        assert not passes(files, who)
        # A session due for its check is not let through on what the portal last knew.
        time.sleep(RECHECK_SECONDS + 0.5)
        assert not passes(waiting_files, waiting)
    finally:
        os.kill(slapd.pid, signal.SIGCONT)
    step = portal.post_form(path_of(login), {"username": who.uid, "password": who.password})
    assert step.status == 302 and step.location.startswith("/verify?")


# -- issue 14: two portal processes, one redis --------------------------------------------------

def test_two_portal_processes_share_sessions_and_the_code_limit_per_account(gate, person):
    who = person()
    portal, _, verify = gate.password_step("off", who.uid, who.password)
    page = portal.get(verify)
    assert page.status == 200, page
    token = csrf_token(page.body)
    access_log = gate.site.nginx.prefix / "access.log"
    posts_before = access_log.read_text().count('"POST /verify')
    # Two addresses off campus (IPv4, IPv6), one account: each address stays under the
    # limit, the account reaches it, whichever process answers.
    v6 = weblab.Client(gate.site.lab.clients["off"], HOST, SERVER["off", "v6"],
                       gate.site.tls.ca)
    v6.cookies = portal.cookies
    statuses = []
    for n in range(CODE_LIMIT + 1):
        client = portal if n % 2 else v6
        reply = client.request("POST", verify, body=(
            f"csrf_token={token}&code={wrong_code(who.secret, TotpParams())}").encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Referer": f"{PORTAL}{verify}"})
        statuses.append(reply.status)
    assert statuses[:CODE_LIMIT] == [200] * CODE_LIMIT, statuses
    assert statuses[CODE_LIMIT] == 429, statuses
    # Each of the two processes answered some of them (whatever the session had, every
    # answer above came from the one redis): nginx logs a request once it has answered.
    deadline = time.monotonic() + 5
    while True:
        posts = [line for line in access_log.read_text().splitlines()
                 if '"POST /verify' in line][posts_before:]
        if len(posts) == CODE_LIMIT + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(posts) == CODE_LIMIT + 1, posts
    assert all(any(f"unix:{s}" in line for line in posts) for s in gate.sockets), posts
