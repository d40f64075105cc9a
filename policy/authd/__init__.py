"""campus-mfa-authd: the PAM module's work in one resident process, and its client."""
