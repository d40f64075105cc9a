"""campus-mfa core: configuration, campus networks, the decision, TOTP rules, the directory.

Kept free of imports so that the PAM module's campus path loads only what it uses.
"""
