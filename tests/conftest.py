"""Shared fixtures: one throwaway slapd per test session (never a system slapd)."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from pamtest import AuthdProcess
from policy import devldap
from utmp_support import utmp_file


def pytest_configure(config: pytest.Config) -> None:
    """Register the one marker the suite uses."""
    config.addinivalue_line("markers", "slapd: uses the session's throwaway slapd")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A skipped test is a failure here: missing parts (slapd, modules) must be fixed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"tests must not skip: {report.longrepr}"


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devldap.DevLdap]:
    """A running slapd with the shipped schema, ACL and example tree."""
    root = tmp_path_factory.mktemp("slapd") / "ldap"
    handle = devldap.start(str(root), devldap.free_port())
    try:
        yield handle
    finally:
        devldap.stop(handle.dir)


@pytest.fixture(scope="session")
def authd() -> Iterator[AuthdProcess]:
    """One resident authd (policy/authd.py) for the session, on a socket of its own."""
    handle = AuthdProcess()
    try:
        yield handle
    finally:
        assert handle.stop() == 0


@pytest.fixture(scope="session")
def utmp() -> Iterator[str]:
    """/var/run/utmp, created for the session if the machine has none (then removed)."""
    with utmp_file() as path:
        yield path


@pytest.fixture
def fresh_user(slapd: devldap.DevLdap) -> Callable[[], tuple[str, str]]:
    """Factory: create a uniquely named user via the admin DN, return (uid, password)."""
    def make() -> tuple[str, str]:
        uid = "u" + secrets.token_hex(6)
        password = secrets.token_urlsafe(12)
        devldap.add_user(slapd, uid, password)
        return uid, password
    return make
