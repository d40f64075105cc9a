"""The campus-mfa command line for sysadmins and the helpdesk."""
