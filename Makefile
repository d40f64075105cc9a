# campus-mfa. Run as root on Debian 12. The runtime is Debian's Python with Debian's
# packages: everything here calls /usr/bin/python3, never the python3 first on PATH.
PY := /usr/bin/python3
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

# What the module, the site and the admin command need at run time.
RUNTIME_DEBS := python3-pyotp python3-ldap3 python3-netaddr python3-qrcode python3-flask \
	python3-flaskext.wtf python3-flask-limiter python3-flask-session python3-cachelib \
	python3-pampy libpam-python gunicorn
# What the demo adds: a throwaway directory, a PAM client, nginx for the share behind the gate.
DEMO_DEBS := $(RUNTIME_DEBS) slapd ldap-utils pamtester oathtool nginx
# What the test suite adds.
# sudo and libutempter0: su and sudo inside the e2e sessions, and a user's own utmp record.
TEST_DEBS := $(DEMO_DEBS) python3-pytest chromium chromium-driver python3-selenium zbar-tools \
	openssh-server openssh-client python3-pexpect iproute2 openssl libnss3-tools \
	sudo libutempter0 redis-server python3-redis libnginx-mod-http-dav-ext curl

DEMO_PORT ?= 8080

.PHONY: all deps-demo deps-test deps-bench demo test bench dev-ldap dev-ldap-stop

all: test

deps-demo:
	apt-get update -q >/dev/null || true
	$(APT) $(DEMO_DEBS) >/dev/null

deps-test:
	apt-get update -q >/dev/null || true
	$(APT) $(TEST_DEBS) >/dev/null

# The whole suite. Skips count as failures (tests/conftest.py), so a missing part fails.
test: deps-test deps-deb
	$(PY) -m pytest -rs

# make dev-ldap DIR=/tmp/campus-ldap PORT=3891   (slapd keeps running in the background)
dev-ldap:
	@test -n "$(DIR)" -a -n "$(PORT)" || { echo "usage: make dev-ldap DIR=/some/dir PORT=3891" >&2; exit 2; }
	$(PY) -m devtools.devldap start --dir "$(DIR)" --port "$(PORT)"

# make dev-ldap-stop DIR=/tmp/campus-ldap   (stops slapd and removes DIR)
dev-ldap-stop:
	@test -n "$(DIR)" || { echo "usage: make dev-ldap-stop DIR=/some/dir" >&2; exit 2; }
	$(PY) -m devtools.devldap stop --dir "$(DIR)"

# A throwaway directory, the PAM service campus-mfa-demo, the enrollment site and a share
# behind the gate (nginx on loopback), in the foreground; Ctrl-C stops and removes all of it.
demo: deps-demo
	@$(PY) -m devtools.demo --port $(DEMO_PORT)

# Debian packages (packaging/debian). `make deb` builds them in a throwaway copy of the
# tree made like a clean clone (tracked and new files, nothing git ignores), with
# packaging/debian as debian/, and leaves the .debs, .changes and .buildinfo in dist/.
# `make deb-test` builds, lints, installs, exercises and purges them (tests/test_deb.py;
# `make test` runs it too). It changes the machine while it runs and restores it after.

# What building, linting and checking them needs (systemd-analyze verifies the unit).
DEB_BUILD_DEBS := debhelper dh-python python3-setuptools fakeroot lintian systemd
DIST := $(CURDIR)/dist

.PHONY: deps-deb deb deb-test

deps-deb:
	apt-get update -q >/dev/null || true
	$(APT) -o DPkg::Lock::Timeout=300 $(DEB_BUILD_DEBS) >/dev/null

deb: deps-deb
	@set -e; \
	build=$$(mktemp -d /tmp/campus-mfa-deb.XXXXXX); trap 'rm -rf "$$build"' EXIT; \
	src="$$build/campus-mfa"; mkdir "$$src"; \
	git ls-files -z --cached --others --exclude-standard \
		| tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$$src"; \
	rm -rf "$$src/debian"; cp -r "$$src/packaging/debian" "$$src/debian"; \
	(cd "$$src" && dpkg-buildpackage -us -uc -b) >"$$build/build.log" 2>&1 \
		|| { tail -40 "$$build/build.log" >&2; echo "make deb: build failed" >&2; exit 1; }; \
	mkdir -p "$(DIST)"; \
	rm -f "$(DIST)"/campus-mfa*_* "$(DIST)"/libpam-campus-mfa_*; \
	cp "$$build"/*.deb "$$build"/*.changes "$$build"/*.buildinfo "$(DIST)/"; \
	ls -l "$(DIST)"

deb-test: deps-test deps-deb
	$(PY) -m pytest -rs tests/test_deb.py

# Only the OpenSSH end-to-end scenarios (tests/test_ssh_e2e.py: network namespaces, a real
# sshd and ssh client, issue 6); `make test` runs them too, with the rest of the suite.
.PHONY: e2e
e2e: deps-test
	$(PY) -m pytest -rs tests/test_ssh_e2e.py

# What the benchmark adds: the peers it is compared with, a load tool, the chart, and the
# nginx in front of the web gate.
BENCH_DEBS := $(DEMO_DEBS) libpam-google-authenticator libpam-oath wrk python3-matplotlib \
	python3-requests python3-ldap

deps-bench:
	apt-get update -q >/dev/null || true
	$(APT) $(BENCH_DEBS) >/dev/null

# A login's cost beside pam_google_authenticator, pam_oath and an empty pam_python module,
# plus concurrency, warm verifications, the site and the web gate through nginx
# (docs/performance.md). Loopback only, under 10 minutes; writes bench/out/report.md,
# bench/out/logins.png and bench/out/gate.png.
bench: deps-bench
	$(PY) bench/run.py
