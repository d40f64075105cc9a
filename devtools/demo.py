"""`make demo`: a throwaway directory, the PAM service campus-mfa-demo and the enrollment
site, in the foreground. Ctrl-C stops and removes everything it started.

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

from . import devldap
from .authd import AuthdProcess
from .commands import stop_process
from .syslog import SyslogListener

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


def print_audit_lines(path: str) -> SyslogListener:
    """Listen where the demo config sends syslog lines and show them in the terminal."""
    return SyslogListener(path, echo=lambda line: print("  audit:", line, flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="site port on 127.0.0.1")
    args = parser.parse_args()
    if PAM_SERVICE.exists():
        print(f"{PAM_SERVICE} exists: is another demo running?", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="campus-mfa-demo-")
    ldap = devldap.start(os.path.join(work, "ldap"), devldap.free_port())
    site = authd = None
    listener = None
    try:
        config = load_config(ldap.config_path)
        with EnrollmentDirectory(config.ldap) as writer:
            writer.set_role(writer.find_user("alice")[0], True)
        listener = print_audit_lines(config.audit.syslog_socket)
        authd = AuthdProcess(os.path.join(work, "authd.sock"),
                             echo=lambda line: print("  authd:", line, end="", flush=True))
        PAM_SERVICE.write_text(pam_service_text(ldap.config_path, authd.path))
        site = subprocess.Popen(
            ["gunicorn", "--bind", f"127.0.0.1:{args.port}", "--workers", "2",
             "enroll_web:create_app()"],
            cwd=ROOT, env={**os.environ, "CAMPUS_MFA_CONFIG": ldap.config_path})
        print(f"""
campus-mfa demo (Ctrl-C stops and removes everything)
  directory   {ldap.uri}  (config {ldap.config_path})
  campus      127.0.0.0/8 and ::1; every other source address is off campus
  users       alice / alice-pass (has the Multifactor Authentication role), bob / bob-pass
  site        http://127.0.0.1:{args.port}/  -- log in as alice, set up 2-step verification
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
