"""The directory: a user's MFA state in OATH-LDAP entries, through ldap3."""
