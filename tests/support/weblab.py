"""The site's outside, for tests that drive it the way it is deployed: Debian's nginx in
the lab's server namespace (support/netns.py), and clients in its campus and off-campus
namespaces: headless chromium, or plain http.client; and http.client over a unix socket,
to a backend directly.

Selenium opens its HTTP connections to chromedriver lazily, so every call on a driver made
inside ``netns.entered`` must be made inside the same namespace (keep the whole browser
session in the with-block). ``Screens`` clicks through pages as a person does and
screenshots each one.
"""
from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import nginx
from devtools.commands import run
from support.netns import PREFIX, SERVER, Lab, entered
from support.site import csrf_token

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic", "--no-proxy-server",
                  "--disable-dev-shm-usage", "--window-size=1200,1000")


# -- nginx ----------------------------------------------------------------------------------

class Nginx(nginx.Nginx):
    """devtools/nginx.py's nginx in the lab's server namespace; ready once it listens."""

    def __init__(self, lab: Lab, prefix: Path, site: str) -> None:
        self.lab = lab
        super().__init__(prefix, site, argv_prefix=("ip", "netns", "exec", lab.server))
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        while True:
            with entered(self.lab.server):
                try:
                    socket.create_connection((SERVER["campus", "v4"], 443), timeout=1).close()
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start:\n{self.errors()}")
            time.sleep(0.05)


# -- clients --------------------------------------------------------------------------------

@contextmanager
def chromium(resolve: dict[str, str], ca: Path | None, artifacts: Path | None = None
             ) -> Iterator[Any]:
    """A headless chromium driven by selenium; use (and leave) it inside ``entered``.
    ``resolve`` maps host names to addresses (chromium's host resolver rules, so no DNS is
    asked); ``ca`` is put in a fresh NSS database of the browser's own HOME, so the site's
    certificate is verified as a user's browser would verify it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-chromium-"))
    try:
        if ca is not None:
            nssdb = home / ".pki" / "nssdb"
            nssdb.mkdir(parents=True)
            run("certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password")
            run("certutil", "-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "campus-mfa test CA",
                "-i", str(ca))
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        rules = ", ".join(f"MAP {host} {address}" for host, address in resolve.items())
        for flag in CHROMIUM_FLAGS + (f"--user-data-dir={home / 'profile'}",):
            options.add_argument(flag)
        if rules:
            options.add_argument(f"--host-resolver-rules={rules}")
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver", env=env),
                                  options=options)
        try:
            driver.set_page_load_timeout(20)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address`` with SNI and certificate checks for ``host``."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, context=context, timeout=15)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(raw, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int) -> None:
        super().__init__(host, port, timeout=15)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to a server on a unix socket (gunicorn as the units run it)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


class Client:
    """http.client from inside a client namespace to the lab's server, with a cookie jar of
    its own (name -> value; enough for one site's session cookie). Every request is made
    with the thread inside the namespace, on a fresh connection."""

    def __init__(self, netns: str, host: str, address: str, ca: Path) -> None:
        self.netns, self.host, self.address = netns, host, address
        self.context = ssl.create_default_context(cafile=str(ca))
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, https: bool = True) -> Reply:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        with entered(self.netns):
            conn: http.client.HTTPConnection = (
                _PinnedHTTPS(self.host, self.address, 443, self.context) if https
                else _PinnedHTTP(self.host, self.address, 80))
            try:
                conn.request(method, path, body=body, headers=sent)
                response = conn.getresponse()
                reply = Reply(response.status, response.headers,
                              response.read().decode("utf-8", "replace"))
            finally:
                conn.close()
        for header in reply.headers.get_all("Set-Cookie") or []:
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            expired = "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower()
            if expired:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value.strip()
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post_form(self, path: str, fields: dict[str, str], *, page: str | None = None,
                  headers: dict[str, str] | None = None, referer: bool = True) -> Reply:
        """POST ``fields`` with the CSRF token of ``page`` (default ``path``), and the
        Referer a browser sends under ``Referrer-Policy: same-origin``."""
        from urllib.parse import urlencode

        token = csrf_token(self.get(page or path, headers=headers).body)
        sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if referer:
            sent["Referer"] = f"https://{self.host}{page or path}"
        return self.request("POST", path, body=urlencode(
            {**fields, "csrf_token": token}).encode(), headers=sent)


class Screens:
    """What a person does on the pages: click and wait for the next page, read the
    heading, take a screenshot of each screen."""

    def __init__(self, driver: Any, artifacts: Path, prefix: str = "") -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.prefix = prefix
        artifacts.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.artifacts / f"{self.prefix}{name}.png"

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.path(name)))

    def heading(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "h1").text

    def loads_a_page(self, click: Any) -> None:
        """Click, then wait until the old page is gone: a click returns before the next
        page has loaded, and reading the old page's elements would race with it."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        old_page = self.driver.find_element(By.TAG_NAME, "html")
        click()

        def old_page_gone(_: Any) -> bool:
            # Mid-navigation chromium reports the old node either as stale or as "Node
            # with given id does not belong to the document"; both mean it is gone.
            try:
                old_page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as err:
                if "does not belong to the document" in (err.msg or ""):
                    return True
                raise
            return False

        WebDriverWait(self.driver, 15).until(old_page_gone)

    def click_button(self, value: str) -> None:
        from selenium.webdriver.common.by import By

        self.loads_a_page(self.driver.find_element(
            By.CSS_SELECTOR, f"input[type=submit][value='{value}'], "
                             f"button[type=submit][value='{value}']").click)

    def click_text_button(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.loads_a_page(self.driver.find_element(
            By.XPATH, f"//button[normalize-space()='{text}']").click)

    def click_link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.loads_a_page(self.driver.find_element(By.LINK_TEXT, text).click)

    def log_in(self, uid: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.NAME, "username").send_keys(uid)
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.click_button("Log in")
