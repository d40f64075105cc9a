"""The seed's screens in a real browser: Debian's chromium, headless, against gunicorn.

Log in, Request a Role, set up, scan the QR code from a screenshot with zbarimg, compute
the code with oathtool (an independent TOTP implementation), confirm, see status On; then
the same user from off campus (through the one trusted proxy hop) gets "Enter Verification
Code". Screenshots of every screen go to $CAMPUS_MFA_ARTIFACTS or tests/artifacts/.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from policy import devldap

pytestmark = pytest.mark.slapd

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CAMPUS_MFA_ARTIFACTS") or ROOT / "tests" / "artifacts")
OFF_CAMPUS = "203.0.113.50"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic",
                  "--disable-dev-shm-usage", "--window-size=1200,1000")


@pytest.fixture
def site(slapd, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """gunicorn serving the site exactly as in production, behind one (pretend) proxy."""
    text = Path(slapd.config_path).read_text(encoding="utf-8")
    config = tmp_path / "campus-mfa.toml"
    config.write_text(text.replace("[web]\n", "[web]\ntrusted_proxies = 1\n"), encoding="utf-8")
    port = devldap.free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen(
        ["/usr/bin/gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "enroll_web:create_app()"],
        cwd=ROOT, env={**os.environ, "CAMPUS_MFA_CONFIG": str(config)},
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("gunicorn did not start:\n" + (
                        tmp_path / "gunicorn.log").read_text(errors="replace"))
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="campus-mfa-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def oathtool(secret: str, *at: str) -> str:
    done = subprocess.run(["oathtool", "--totp", "--base32", *at, secret],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_enrollment_and_off_campus_login_in_chromium(site, browser, fresh_user):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    uid, password = fresh_user()

    def shot(name: str) -> None:
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def heading() -> str:
        return browser.find_element(By.TAG_NAME, "h1").text

    def loads_a_page(click) -> None:
        """Click, then wait until the old page is gone: a click returns before the next
        page has loaded, and reading the old page's elements would race with it."""
        old_page = browser.find_element(By.TAG_NAME, "html")
        click()

        def old_page_gone(_) -> bool:
            # Mid-navigation chromium reports the old node either as stale or as "Node
            # with given id does not belong to the document"; both mean it is gone.
            try:
                old_page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as err:
                if "does not belong to the document" in err.msg:
                    return True
                raise
            return False

        WebDriverWait(browser, 15).until(old_page_gone)

    def click_button(value: str) -> None:
        loads_a_page(browser.find_element(
            By.CSS_SELECTOR, f"input[type=submit][value='{value}']").click)

    def click_link(text: str) -> None:
        loads_a_page(browser.find_element(By.LINK_TEXT, text).click)

    def log_in() -> None:
        browser.find_element(By.NAME, "username").send_keys(uid)
        browser.find_element(By.NAME, "password").send_keys(password)
        click_button("Log in")

    browser.get(site + "/")
    assert heading() == "Users Portal"
    shot("01-users-portal")
    click_link("User Information Management (*Internal Only)")
    assert heading() == "Log in with your CIS account"
    shot("02-log-in")
    log_in()
    assert heading() == "User Information Management"
    shot("03-user-information-management")
    click_button("Activate")
    assert browser.find_element(By.CLASS_NAME, "role-status").text == "Active"
    shot("04-request-a-role-active")

    click_link("Set up Multi-Factor Authentication")
    assert browser.find_element(By.ID, "mfa-status").text == "Off"
    shot("05-set-up-multi-factor-authentication")
    click_link("2 Factor Authentication Setup")
    assert heading() == "2 Factor Authentication Setup"
    shot("06-2-factor-authentication-setup")
    click_button("Use a Token Application")
    assert "Use a Token Application" in browser.page_source
    shot("07-use-a-token-application")
    qr_png = ARTIFACTS / "07-qr-code.png"
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

    click_link("Next")
    shot("08-authentication-code")
    browser.find_element(By.NAME, "code").send_keys(oathtool(secret))
    click_button("Confirm")
    assert browser.find_element(By.ID, "mfa-status").text == "On"
    shot("09-status-on")

    # The same user from off campus: the proxy (this loopback hop) forwards the address.
    browser.delete_all_cookies()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                            {"headers": {"X-Forwarded-For": OFF_CAMPUS}})
    browser.get(site + "/login")
    shot("10-off-campus-log-in")
    log_in()
    assert heading() == "Enter Verification Code"
    shot("11-enter-verification-code")
    browser.find_element(By.NAME, "code").send_keys(oathtool(secret, "--now", "now + 30 seconds"))
    click_button("Login")
    assert heading() == "Users Portal"
    click_link("Set up Multi-Factor Authentication")
    assert browser.find_element(By.ID, "mfa-status").text == "On"
    assert "Changes are available from the campus network only" in browser.page_source
    shot("12-off-campus-status")
    browser.get(site + "/user-info")
    assert "available from the campus network only" in browser.page_source
    shot("13-campus-network-only")
