"""The fixtures (helpers live in tests/support/): one throwaway slapd and one authd per
test session (never a system slapd), the PAM lab, the site on the test client, and the
site as deployed in the network lab, and the gate as deployed in a lab of its own."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from devtools import devldap
from devtools.authd import AuthdProcess
from devtools.redis import RedisServer
from enroll_web import create_app
from policy.config import Config
from support import gatelab, netns, sitelab
from support.pamlab import PamLab, make_lab
from support.site import web_config
from support.utmp import utmp_file


def pytest_configure(config: pytest.Config) -> None:
    """Register the one marker the suite uses."""
    config.addinivalue_line("markers", "slapd: starts slapd (the session's, or one of its own)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slapd`` marker on every test that uses the session's slapd, through any
    fixture; a test that starts one of its own (devldap.start) carries the marker itself."""
    for item in items:
        if "slapd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slapd)


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
def redis() -> Iterator[RedisServer]:
    """A throwaway redis-server (devtools/redis.py) for sessions and rate limits shared by
    several site processes."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


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


@pytest.fixture
def pam(slapd: devldap.DevLdap, tmp_path: Path, fresh_user: Callable) -> Iterator[PamLab]:
    """The PAM lab (support/pamlab.py) with the module in-process (``authd=off``)."""
    yield from make_lab(slapd, tmp_path, fresh_user, None)


@pytest.fixture(params=["in-process", "authd"])
def pam_both(request: pytest.FixtureRequest, slapd: devldap.DevLdap, tmp_path: Path,
             fresh_user: Callable, authd: AuthdProcess) -> Iterator[PamLab]:
    """The same test twice: the module in-process, then through the session's authd."""
    if request.param == "authd":
        yield from make_lab(slapd, tmp_path, fresh_user, authd)
    else:
        yield from make_lab(slapd, tmp_path, fresh_user, None, idle_authd_pid=authd.pid)


@pytest.fixture
def make_app(slapd: devldap.DevLdap) -> Callable[..., tuple[Flask, Config]]:
    """Factory: the site (create_app) on the session's slapd, with some [web] and
    ``policy=`` values changed; returns the app and its config."""
    def make(**web: Any) -> tuple[Flask, Config]:
        policy = web.pop("policy", None)
        cfg = web_config(slapd, policy=policy, **web)
        return create_app(cfg), cfg
    return make


@pytest.fixture(scope="session")
def netlab() -> Iterator[netns.Lab]:
    """A server and a campus and an off-campus client namespace (support/netns.py)."""
    with netns.lab() as made:
        yield made


@pytest.fixture(scope="session")
def site(netlab: netns.Lab, slapd: devldap.DevLdap) -> Iterator[sitelab.Site]:
    """The enrollment site as deployed (nginx's example site with TLS, gunicorn with the
    unit's flags) in the lab's server namespace, on the session's slapd; the lab's campus
    client is on campus."""
    with sitelab.deployed(netlab, Path(slapd.config_path).read_text(),
                          netns.CAMPUS_NETWORKS) as deployed:
        yield deployed


@pytest.fixture(scope="session")
def gate(slapd: devldap.DevLdap, redis: RedisServer) -> Iterator[gatelab.Gate]:
    """The gate as deployed (support/gatelab.py): nginx with the portal's site and a
    protected file share and application, two portal processes sharing ``redis``, in a
    network lab of its own, on the session's slapd."""
    with netns.lab("g") as net:
        with gatelab.deployed(net, slapd, redis) as deployed:
            yield deployed
