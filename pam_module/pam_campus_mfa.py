"""campus-mfa's PAM module, loaded by pam_python.so after the first factor:

    auth required pam_python.so /usr/share/campus-mfa/pam_module/pam_campus_mfa.py [options]

pam_python starts a fresh interpreter for every authentication and compiles this file from
source each time, so it only makes the import path safe and imports the adapter
(pam_module/adapter.py), which Python loads byte-compiled like the rest of the package.
"""
import os
import sys


def trusted_sys_path(path: list[str], root: str, pythonpath: str) -> list[str]:
    """``path`` with ``root`` first and without what the caller's environment can add:
    PYTHONPATH entries and the current directory."""
    untrusted = {os.path.realpath(entry) for entry in pythonpath.split(os.pathsep) if entry}
    kept = [entry for entry in path
            if entry not in ("", ".") and os.path.realpath(entry) not in untrusted | {root}]
    return [root, *kept]


# The checkout (or /usr/share/campus-mfa when installed) holds pam_module/ and policy/ side
# by side. pam_python runs Python isolated, but a Python host process may not, and a
# `policy` or `ldap3` planted on PYTHONPATH by the user who runs su or sudo must not load.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path[:] = trusted_sys_path(sys.path, ROOT, os.environ.get("PYTHONPATH", ""))

import pam_module  # noqa: E402  (only now that the path is ours)
import policy  # noqa: E402

for _package in (pam_module, policy):
    if not os.path.realpath(_package.__file__).startswith(ROOT + os.sep):
        # A host process imported another package of that name first; pam_python fails
        # the call.
        raise ImportError(f"the loaded {_package.__name__} package is not the one in {ROOT}")

from pam_module.adapter import pam_sm_authenticate, pam_sm_setcred  # noqa: E402,F401
