"""`make demo`'s program: it comes up, the PAM service and the site work, Ctrl-C removes all."""
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from devtools import devldap
from devtools.oathtool import oathtool
from devtools.pamtester import CODE_PROMPT, SUCCESS, run_pamtester

pytestmark = pytest.mark.slapd  # the demo starts a slapd of its own

ROOT = Path(__file__).resolve().parent.parent


def pamtester(rhost, user, answers=()):
    return run_pamtester("campus-mfa-demo", user, rhost, list(answers), timeout=60)


def test_demo_runs_and_cleans_up_after_ctrl_c():
    port = devldap.free_port()
    demo = subprocess.Popen(["/usr/bin/python3", "-m", "devtools.demo", "--port", str(port)],
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
        subprocess.run(["/usr/bin/python3", "-m", "policy", "--config", config, "import",
                        "alice", "--secret", secret], cwd=ROOT, check=True, capture_output=True)
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
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert "demo stopped and removed" in rest
    assert demo.returncode == 0
    assert not Path("/etc/pam.d/campus-mfa-demo").exists()
    assert not work.exists()
    # The PAM service's logins ran in the demo's campus-mfa-authd, which is gone too.
    authd_pid = int(re.search(r"authd .*\(pid (\d+):", banner).group(1))
    audit = [line for line in (banner + rest).splitlines() if "audit:" in line]
    assert audit and all(f"campus-mfa[{authd_pid}]:" in line for line in audit), audit
    assert not Path(f"/proc/{authd_pid}").exists()
