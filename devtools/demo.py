"""`make demo`: a throwaway directory, the PAM service campus-mfa-demo, the enrollment site
and a file share behind the gate (nginx on loopback, the shipped snippet), in the
foreground. Ctrl-C stops and removes everything it started.

Not part of the installed packages: it writes /etc/pam.d/campus-mfa-demo and runs slapd.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from policy.config import load_config
from policy.directory.enrollment import EnrollmentDirectory

from . import devldap, nginx
from .authd import AuthdProcess
from .commands import stop_process
from .syslog import SyslogListener
from .toml import toml_value, toml_with

ROOT = Path(__file__).resolve().parent.parent
PAM_SERVICE = Path("/etc/pam.d/campus-mfa-demo")


def pam_service_text(config_path: str, authd_socket: str) -> str:
    """The demo's PAM stack: the users live only in the throwaway directory, so the
    first factor is pam_permit here; a real stack puts pam_unix/pam_sss first."""
    return ("# campus-mfa demo (removed when the demo stops)\n"
            "auth requisite pam_permit.so\n"
            f"auth required pam_python.so {ROOT}/pam_module/pam_campus_mfa.py "
            f"config={config_path} authd={authd_socket}\n"
            "account required pam_permit.so\n")


DEMO_SITES = """\
server {{  # the portal (nginx-campus-mfa-enroll.conf's location, plain HTTP on loopback)
	listen 127.0.0.1:{port};
{location}}}
server {{  # the demo share, behind the gate
	listen 127.0.0.1:{share_port};
	include {prefix}/campus-mfa-gate.conf;
	location / {{
		root {share};
		autoindex on;
	}}
}}
"""


def gate_config(config_path: str, port: int) -> None:
    """The demo's config with the gate on: the portal on 127.0.0.1:``port`` behind nginx."""
    text = Path(config_path).read_text()
    Path(config_path).write_text(toml_with(text, {"web": {
        "trusted_proxies": "1", "portal_url": toml_value(f"http://127.0.0.1:{port}"),
        "protected_hosts": toml_value(["127.0.0.1"])}}))


def serve(work: Path, port: int, share_port: int, config_path: str
          ) -> tuple[subprocess.Popen, nginx.Nginx]:
    """gunicorn on a unix socket that nginx's workers reach (as the unit makes it), and
    nginx with the portal and the share; returns once the portal answers through nginx."""
    work.chmod(0o711)
    run_dir = nginx.socket_dir(work / "run")
    share = work / "share"
    share.mkdir(mode=0o755)
    (share / "report.txt").write_text("A file of the demo share, behind the gate.\n")
    (share / "report.txt").chmod(0o644)
    socket = run_dir / "web.sock"
    site = subprocess.Popen(
        ["gunicorn", "--bind", f"unix:{socket}", "--umask", "0117", "--workers", "2",
         "enroll_web:create_app()"], cwd=ROOT, group="www-data", extra_groups=[],
        env={**os.environ, "CAMPUS_MFA_CONFIG": config_path})
    prefix = work / "nginx"
    prefix.mkdir()
    (prefix / "campus-mfa-gate.conf").write_text(
        nginx.gate_snippet(f"unix:{socket}", f"127.0.0.1:{port}"))
    server = nginx.Nginx(prefix, DEMO_SITES.format(
        port=port, share_port=share_port, prefix=prefix, share=share,
        location=nginx.portal_location(f"unix:{socket}")), level="warn")
    try:
        nginx.wait_serving(port, "/login", [site, server.proc], "the demo site")
    except RuntimeError as err:
        stop_process(site)
        server.stop()
        raise RuntimeError(f"{err}:\n{server.errors()}") from None
    return site, server


def print_audit_lines(path: str) -> SyslogListener:
    """Listen where the demo config sends syslog lines and show them in the terminal."""
    return SyslogListener(path, echo=lambda line: print("  audit:", line, flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="site port on 127.0.0.1")
    parser.add_argument("--share-port", type=int, default=0,
                        help="the demo share's port on 127.0.0.1 (default: --port + 1)")
    args = parser.parse_args()
    if PAM_SERVICE.exists():
        print(f"{PAM_SERVICE} exists: is another demo running?", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="campus-mfa-demo-")
    share_port = args.share_port or args.port + 1
    ldap = devldap.start(os.path.join(work, "ldap"), devldap.free_port())
    site = authd = server = None
    listener = None
    try:
        gate_config(ldap.config_path, args.port)
        config = load_config(ldap.config_path)
        with EnrollmentDirectory(config.ldap) as writer:
            writer.set_role(writer.find_user("alice")[0], True)
        listener = print_audit_lines(config.audit.syslog_socket)
        authd = AuthdProcess(os.path.join(work, "authd.sock"),
                             echo=lambda line: print("  authd:", line, end="", flush=True))
        PAM_SERVICE.write_text(pam_service_text(ldap.config_path, authd.path))
        site, server = serve(Path(work), args.port, share_port, ldap.config_path)
        print(f"""
campus-mfa demo (Ctrl-C stops and removes everything)
  directory   {ldap.uri}  (config {ldap.config_path})
  campus      127.0.0.0/8 and ::1; every other source address is off campus
  users       alice / alice-pass (has the Multifactor Authentication role), bob / bob-pass
  site        http://127.0.0.1:{args.port}/  -- log in as alice, set up 2-step verification
  share       http://127.0.0.1:{share_port}/  -- a file share behind the gate: sign in first
  authd       {authd.path}  (pid {authd.pid}: it runs the PAM service's logins)

Try:
  pamtester -I rhost=127.0.0.1 campus-mfa-demo alice authenticate      # campus: no code
  pamtester -I rhost=203.0.113.7 campus-mfa-demo alice authenticate    # off campus
  /usr/bin/python3 -m policy --config {ldap.config_path} status alice
  /usr/bin/python3 -m policy --config {ldap.config_path} check alice --from 203.0.113.7
""", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        site.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
        if site is not None:
            stop_process(site)
        if authd is not None:
            authd.stop()
        if listener is not None:
            listener.close()
        PAM_SERVICE.unlink(missing_ok=True)
        devldap.stop(ldap.dir)
        shutil.rmtree(work, ignore_errors=True)
        print("demo stopped and removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
