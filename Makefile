PY := /usr/bin/python3

.PHONY: dev-ldap dev-ldap-stop

# make dev-ldap DIR=/tmp/campus-ldap PORT=3891   (slapd keeps running in the background)
dev-ldap:
	@test -n "$(DIR)" -a -n "$(PORT)" || { echo "usage: make dev-ldap DIR=/some/dir PORT=3891" >&2; exit 2; }
	$(PY) -m policy.devldap start --dir "$(DIR)" --port "$(PORT)"

# make dev-ldap-stop DIR=/tmp/campus-ldap   (stops slapd and removes DIR)
dev-ldap-stop:
	@test -n "$(DIR)" || { echo "usage: make dev-ldap-stop DIR=/some/dir" >&2; exit 2; }
	$(PY) -m policy.devldap stop --dir "$(DIR)"
