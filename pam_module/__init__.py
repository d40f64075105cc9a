"""The PAM adapter: pam_campus_mfa.py is loaded by pam_python.so, not imported as a package."""
