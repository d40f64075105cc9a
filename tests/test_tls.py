"""StartTLS with certificate validation (SECURITY.md 17) against a slapd with its own CA."""
import dataclasses
import gc

import pytest

from devtools import devldap
from devtools.commands import campus_mfa
from policy.config import load_config
from policy.directory.service import ServiceDirectory
from policy.errors import DirectoryUnavailable

pytestmark = pytest.mark.slapd  # a slapd of its own, with StartTLS


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory):
    handle = devldap.start(str(tmp_path_factory.mktemp("tls") / "ldap"), devldap.free_port(),
                           tls=True)
    try:
        yield handle
    finally:
        devldap.stop(handle.dir)


def test_start_tls_with_the_right_ca_works(tls_slapd):
    config = load_config(tls_slapd.config_path)
    assert config.ldap.start_tls and config.ldap.ca_file.endswith("ca.pem")
    with ServiceDirectory(config.ldap) as directory:
        assert directory.read_state("alice").username == "alice"


# ldap3 drops the SSL wrapper of a refused StartTLS without closing it (the socket under it
# is closed by unbind); the ResourceWarning for that object is ldap3's, not a leak of ours.
LDAP3_DROPS_ITS_TLS_WRAPPER = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@LDAP3_DROPS_ITS_TLS_WRAPPER
def test_a_certificate_from_an_unknown_ca_is_refused(tls_slapd, tmp_path):
    config = load_config(tls_slapd.config_path)
    for ca_file in ("", "/etc/ssl/certs/ca-certificates.crt"):  # system CAs don't know it
        ldap = dataclasses.replace(config.ldap, ca_file=ca_file)
        with ServiceDirectory(ldap) as directory:
            with pytest.raises(DirectoryUnavailable, match=r": StartTLS: .*certificate verify "
                                                           r"failed"):
                directory.read_state("alice")


@LDAP3_DROPS_ITS_TLS_WRAPPER
def test_a_certificate_for_another_name_is_refused(tls_slapd):
    """The certificate names only IP 127.0.0.1; "localhost" reaches the same slapd."""
    config = load_config(tls_slapd.config_path)
    port = tls_slapd.port
    ldap = dataclasses.replace(config.ldap, uris=(f"ldap://localhost:{port}",))
    with ServiceDirectory(ldap) as directory:
        with pytest.raises(DirectoryUnavailable, match="doesn't match any name"):
            directory.read_state("bob")
    gc.collect()  # collect ldap3's wrapper here, under this test's filter


def test_doctor_says_the_directory_is_reached_with_start_tls(tls_slapd):
    done = campus_mfa(tls_slapd.config_path, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok   {tls_slapd.uri}: StartTLS; bind as {devldap.SERVICE_DN}\n" in done.stdout
