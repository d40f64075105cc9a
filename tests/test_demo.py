"""`make demo`'s program: it comes up, the PAM service, the site and the share behind the
gate work, Ctrl-C removes all."""
import http.client
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from devtools import devldap
from devtools.commands import campus_mfa
from devtools.oathtool import oathtool
from devtools.pamtester import CODE_PROMPT, SUCCESS, run_pamtester
from support.site import csrf_token

pytestmark = pytest.mark.slapd  # the demo starts a slapd of its own

ROOT = Path(__file__).resolve().parent.parent


def pamtester(rhost, user, answers=()):
    return run_pamtester("campus-mfa-demo", user, rhost, list(answers), timeout=60)


def get(port, path, cookie="", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.headers, reply.read().decode()
    finally:
        conn.close()


def signs_in_to_the_share(port, share_port):
    """The demo share sends to the portal's sign-in and back; bob is on campus (loopback),
    so his password opens it."""
    status, headers, _ = get(share_port, "/report.txt")
    back = f"http://127.0.0.1:{share_port}/report.txt"
    login = f"/login?rd={quote(back, safe='')}"
    assert (status, headers["Location"]) == (302, f"http://127.0.0.1:{port}{login}")
    status, headers, page = get(port, login)
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    token = csrf_token(page)
    status, headers, _ = get(port, login, cookie, urlencode(
        {"username": "bob", "password": "bob-pass", "csrf_token": token}))
    assert status == 302, status
    cookie = headers["Set-Cookie"].split(";", 1)[0]  # a new session id at sign-in
    status, headers, _ = get(port, headers["Location"], cookie)
    assert (status, headers["Location"]) == (302, back)
    status, _, text = get(share_port, "/report.txt", cookie)
    assert (status, text) == (200, "A file of the demo share, behind the gate.\n")


def test_demo_runs_and_cleans_up_after_ctrl_c():
    port, share_port = devldap.free_port(), devldap.free_port()
    demo = subprocess.Popen(["/usr/bin/python3", "-m", "devtools.demo", "--port", str(port),
                             "--share-port", str(share_port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            lines.append(line)
            if "check alice --from" in line or not line:
                break
        banner = "".join(lines)
        config = re.search(r"\(config (\S+)\)", banner).group(1)
        work = Path(config).parent.parent
        assert pamtester("127.0.0.1", "alice").stdout.strip() == SUCCESS
        secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        assert campus_mfa(config, "import", "alice", "--secret", secret).returncode == 0
        off = pamtester("203.0.113.7", "alice", [oathtool(secret)])
        assert CODE_PROMPT in off.output
        assert off.stdout.strip().endswith(SUCCESS)
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as page:
                    assert page.status == 200 and b"Log in" in page.read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("the demo site never answered")
        assert f"share       http://127.0.0.1:{share_port}/" in banner
        signs_in_to_the_share(port, share_port)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert "demo stopped and removed" in rest
    assert demo.returncode == 0
    assert not Path("/etc/pam.d/campus-mfa-demo").exists()
    assert not work.exists()
    # The PAM service's logins ran in the demo's campus-mfa-authd, which is gone too.
    authd_pid = int(re.search(r"authd .*\(pid (\d+):", banner).group(1))
    audit = [line for line in (banner + rest).splitlines()
             if "audit:" in line and "service=campus-mfa-demo" in line]
    assert audit and all(f"campus-mfa[{authd_pid}]:" in line for line in audit), audit
    assert not Path(f"/proc/{authd_pid}").exists()
