"""campus-mfa's core: no Flask, no PAM. Empty on purpose: a login imports only the modules
it uses (see README.md, "Where things live")."""
