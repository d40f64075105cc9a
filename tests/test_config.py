"""Configuration: a good file loads; every bad one names the file, the key and the problem."""
import os
import re
from pathlib import Path

import pytest

from policy.config import load_config
from policy.errors import ConfigError
from policy.secret_file import read_secret_file

SHIPPED = Path(__file__).resolve().parent.parent / "packaging" / "campus-mfa.toml"

GOOD = """
[ldap]
uris = ["ldap://127.0.0.1:3890", "ldaps://replica.example.edu"]
base_dn = "dc=example,dc=edu"
user_base = "ou=people,dc=example,dc=edu"
user_filter = "(&(objectClass=inetOrgPerson)(uid={username}))"
token_base = "ou=tokens,dc=example,dc=edu"
role_group = "cn=mfa-users,ou=groups,dc=example,dc=edu"
bind_dn = "cn=campus-mfa,ou=services,dc=example,dc=edu"
bind_password_file = "/etc/campus-mfa/ldap.secret"
start_tls = false
ca_file = ""
timeout = 3

[policy]
campus_networks = ["192.0.2.0/24", "2001:db8:c0::/48"]
enforcement = "opt-in"
required_groups = []
on_directory_error = "deny"

[totp]
issuer = "Example University"
digits = 6
period = 30
algorithm = "SHA1"
window = 1
max_failures = 10
"""


def write(tmp_path, text):
    path = tmp_path / "campus-mfa.toml"
    path.write_text(text)
    return str(path)


def test_the_documented_example_loads(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.ldap.uris == ("ldap://127.0.0.1:3890", "ldaps://replica.example.edu")
    assert config.ldap.timeout == 3
    assert config.policy.campus_networks == ("192.0.2.0/24", "2001:db8:c0::/48")
    assert config.totp.max_failures == 10
    assert config.web.first_factor == "ldap" and config.web.cookie_secure is True
    assert config.web.session_dir == "/var/lib/campus-mfa-enroll/sessions"
    with pytest.raises(AttributeError, match="cannot assign to field 'enforcement'"):
        config.policy.enforcement = "required"  # frozen


def test_the_shipped_config_fails_closed_until_campus_networks_are_set(tmp_path):
    with pytest.raises(ConfigError, match=r"policy\.campus_networks must list at least one"):
        load_config(str(SHIPPED))
    text = SHIPPED.read_text()
    assert text.count("campus_networks = []") == 1
    edited = write(tmp_path, text.replace("campus_networks = []",
                                          'campus_networks = ["192.0.2.0/24"]'))
    assert load_config(edited).policy.campus_networks == ("192.0.2.0/24",)


@pytest.mark.parametrize("old,new,message", [
    ('timeout = 3', 'timeout = 3\ntimout = 4', r"unknown key ldap\.timout"),
    ('[totp]', '[totpp]\n[totp]', r"unknown section \[totpp\]"),
    ('bind_dn = "cn=campus-mfa,ou=services,dc=example,dc=edu"\n', '',
     r"missing key ldap\.bind_dn"),
    ('timeout = 3', 'timeout = "3"', r"ldap\.timeout must be an integer, got '3'"),
    ('timeout = 3', 'timeout = 0', r"ldap\.timeout must be between 1 and 60 seconds, got 0"),
    ('timeout = 3', 'timeout = 1.5', r"ldap\.timeout must be an integer"),
    ('start_tls = false', 'start_tls = "no"', r"ldap\.start_tls must be true or false"),
    ('uris = ["ldap://127.0.0.1:3890", "ldaps://replica.example.edu"]',
     'uris = ["ldap://127.0.0.1:3890/"]', r"ldap\.uris must hold .* trailing slash"),
    ('uris = ["ldap://127.0.0.1:3890", "ldaps://replica.example.edu"]', 'uris = []',
     r"ldap\.uris must name at least one server"),
    ('uris = ["ldap://127.0.0.1:3890", "ldaps://replica.example.edu"]',
     'uris = "ldap://x"', r"ldap\.uris must be a list of strings"),
    ('uid={username}', 'uid=%s', r"ldap\.user_filter must contain \{username\}"),
    ('"192.0.2.0/24", ', '"192.0.2.0/33", ', r"policy\.campus_networks has an invalid network '192\.0\.2\.0/33'"),
    ('"192.0.2.0/24", ', '"192.0.2.1/24", ', r"invalid network '192\.0\.2\.1/24'"),
    ('"192.0.2.0/24", ', '"campus", ', r"invalid network 'campus'"),
    ('"192.0.2.0/24", ', '"0.0.0.0/0", ', r"policy\.campus_networks must not contain 0\.0\.0\.0/0"),
    ('"192.0.2.0/24", ', '"::/0", ', r"must not contain ::/0"),
    ('campus_networks = ["192.0.2.0/24", "2001:db8:c0::/48"]', 'campus_networks = []',
     r"policy\.campus_networks must list at least one network"),
    ('enforcement = "opt-in"', 'enforcement = "always"', r"policy\.enforcement must be"),
    ('on_directory_error = "deny"', 'on_directory_error = "open"',
     r"policy\.on_directory_error must be"),
    ('digits = 6', 'digits = 4', r"totp\.digits must be 6, 7 or 8"),
    ('digits = 6', 'digits = true', r"totp\.digits must be an integer"),
    ('period = 30', 'period = 5', r"totp\.period must be between"),
    ('algorithm = "SHA1"', 'algorithm = "MD5"', r"totp\.algorithm must be one of"),
    ('window = 1', 'window = 20', r"totp\.window must be between"),
    ('max_failures = 10', 'max_failures = 1000', r"totp\.max_failures must be between 1 and 100"),
    ('issuer = "Example University"', 'issuer = "A:B"', r"totp\.issuer"),
    ('[totp]', '[web]\nfirst_factor = "kerberos"\n[totp]', r"web\.first_factor must be"),
    ('[totp]', '[web]\ncookie_secure = 1\n[totp]', r"web\.cookie_secure must be true or false"),
    ('[totp]', '[web]\nsession_dir = "sessions"\n[totp]',
     r"web\.session_dir must be an absolute path, got 'sessions'"),
    ('[totp]', '[web]\nsession_dir = 7\n[totp]', r"web\.session_dir must be a string"),
    ('[totp]', 'ldap = 1\n[totp]', r"\[ldap\] must be a table|unknown|cannot"),
])
def test_bad_values_name_file_and_key(tmp_path, old, new, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path)
    assert str(raised.value).startswith(path + ":")


def test_local_services_is_ignored_and_the_config_says_why(tmp_path):
    """A file written for the old rule (an empty PAM_RHOST of these services was exempt;
    dpkg keeps an edited conffile on upgrade) loads without it: the old key only ever
    loosened the policy, and refusing the file would refuse every login after an upgrade.
    ``campus-mfa doctor`` prints the reason (test_cli.py)."""
    path = write(tmp_path, GOOD.replace(
        'on_directory_error = "deny"\n',
        'on_directory_error = "deny"\nlocal_services = ["login", "su", "su-l", "sudo"]\n'))
    config = load_config(path)
    assert not hasattr(config.policy, "local_services")
    assert config.ignored == (("policy.local_services", (
        "is ignored since 0.2: a login without a source address (su, sudo, a console) takes "
        "the source of the session it was started from, and a service name never makes a "
        "login local (docs/pam.md, \"su and sudo\"); delete the key")),)
    assert load_config(write(tmp_path, GOOD)).ignored == ()
    assert "local_services" not in SHIPPED.read_text()
    typo = write(tmp_path, GOOD.replace('on_directory_error = "deny"\n',
                                        'on_directory_error = "deny"\nlocal_service = []\n'))
    with pytest.raises(ConfigError, match=r"unknown key policy\.local_service$"):
        load_config(typo)


def test_missing_section_missing_file_and_bad_syntax(tmp_path):
    path = write(tmp_path, GOOD.split("[policy]")[0])
    with pytest.raises(ConfigError, match=r"missing section \[policy\]"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nonexistent\.toml: cannot read: No such file"):
        load_config(str(tmp_path / "nonexistent.toml"))
    broken = write(tmp_path, GOOD.replace("window = 1", "window = = 1"))
    with pytest.raises(ConfigError, match=r"campus-mfa\.toml: not valid TOML: .*line \d+"):
        load_config(broken)


# -- the transport to the directory (SECURITY.md 17) --------------------------------------

def test_start_tls_is_the_default(tmp_path):
    config = load_config(write(tmp_path, GOOD.replace("start_tls = false\n", "")))
    assert config.ldap.start_tls is True and config.ldap.allow_plaintext is False


@pytest.mark.parametrize("uri, start_tls, allowed", [
    ("ldap://ldap.example.edu", "false", False),          # a name: could be anywhere
    ("ldap://198.51.100.4:389", "false", False),
    ("ldap://localhost:389", "false", False),             # names are never trusted
    ("ldap://127.0.0.1:3890", "false", True),             # loopback literals only
    ("ldap://127.8.9.10", "false", True),
    ("ldap://[::1]:3890", "false", True),
    ("ldap://[::ffff:198.51.100.4]:389", "false", False),
    ("ldap://ldap.example.edu", "true", True),            # StartTLS
    ("ldaps://ldap.example.edu", "false", True),
    ("ldapi://%2Frun%2Fslapd%2Fldapi", "false", True),   # a local socket
])
def test_plain_ldap_only_to_loopback(tmp_path, uri, start_tls, allowed):
    text = GOOD.replace('uris = ["ldap://127.0.0.1:3890", "ldaps://replica.example.edu"]',
                        f'uris = ["{uri}"]').replace("start_tls = false",
                                                     f"start_tls = {start_tls}")
    path = write(tmp_path, text)
    if allowed:
        assert load_config(path).ldap.uris == (uri,)
    else:
        with pytest.raises(ConfigError, match=rf"^{path}: ldap\.uris has {re.escape(uri)}: "
                                              r"plain LDAP .* ldap\.allow_plaintext = true"):
            load_config(path)
        opted_out = write(tmp_path, text.replace("start_tls", "allow_plaintext = true\nstart_tls"))
        assert load_config(opted_out).ldap.allow_plaintext is True


@pytest.mark.parametrize("networks, version", [
    ('"0.0.0.0/1", "128.0.0.0/1"', 4),
    ('"::/1", "8000::/1", "192.0.2.0/24"', 6),
])
def test_campus_networks_that_together_cover_everything_are_refused(tmp_path, networks, version):
    path = write(tmp_path, GOOD.replace('"192.0.2.0/24", "2001:db8:c0::/48"', networks))
    with pytest.raises(ConfigError, match=rf"policy\.campus_networks together cover every "
                                          rf"IPv{version} address"):
        load_config(path)


# -- secret files (bind passwords, the site's key) ----------------------------------------

def secret_file(tmp_path, mode=0o600, text="s3cret-value\n"):
    path = tmp_path / "ldap.secret"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_a_private_secret_file_is_read(tmp_path, mode):
    assert read_secret_file(str(secret_file(tmp_path, mode)), "ldap.bind_password_file") \
        == "s3cret-value"


@pytest.mark.parametrize("mode, problem", [
    (0o644, r"is readable by others \(mode 0644\)"),
    (0o604, r"is readable by others \(mode 0604\)"),
    (0o660, r"is writable by its group or others \(mode 0660\)"),
    (0o602, r"is writable by its group or others \(mode 0602\)"),
])
def test_a_secret_file_others_can_read_or_write_is_refused(tmp_path, mode, problem):
    path = secret_file(tmp_path, mode)
    with pytest.raises(ConfigError, match=rf"^ldap\.bind_password_file = '{path}': {problem}"):
        read_secret_file(str(path), "ldap.bind_password_file")


def test_a_secret_file_owned_by_another_user_a_link_or_not_a_file_is_refused(tmp_path):
    path = secret_file(tmp_path)
    os.chown(path, 65534, 65534)  # nobody
    with pytest.raises(ConfigError, match=r"is owned by uid 65534, not by root or by the user "
                                          r"reading it \(uid 0\)"):
        read_secret_file(str(path), "key")
    os.chown(path, 0, 0)
    link = tmp_path / "link.secret"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match=r"is a symbolic link; name the file itself"):
        read_secret_file(str(link), "key")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match=r"is not a regular file"):
        read_secret_file(str(fifo), "key")  # returns at once: never blocks on the FIFO
    with pytest.raises(ConfigError, match=r"is not a regular file"):
        read_secret_file(str(tmp_path), "key")
    with pytest.raises(ConfigError, match=r"the file is empty"):
        read_secret_file(str(secret_file(tmp_path, text="\n")), "key")
    with pytest.raises(ConfigError, match=r"cannot read: No such file or directory"):
        read_secret_file(str(tmp_path / "missing"), "key")
