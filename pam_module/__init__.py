"""The PAM adapter: pam_campus_mfa.py is loaded by pam_python.so (by path, not imported);
it imports adapter.py, where the work is."""
