"""The admin command against the real slapd, run as a separate process like a helpdesk would."""
import re
import time
from pathlib import Path

import pytest

from devtools import devldap
from devtools.commands import campus_mfa
from policy.config import load_config
from policy.directory.enrollment import EnrollmentDirectory
from policy.errors import EntryError
from policy.rules.totp import TotpParams, new_secret, to_base32


def cli(slapd, *args, stdin=None, config=None):
    return campus_mfa(config or slapd.config_path, *args, stdin=stdin)


def test_grant_status_import_unlock_reset_revoke(slapd, fresh_user):
    uid, _ = fresh_user()
    out = cli(slapd, "status", uid)
    assert out.returncode == 0, out.stderr
    assert "Multifactor Authentication role: no" in out.stdout
    assert "2-step verification: Off" in out.stdout

    assert cli(slapd, "grant-role", uid).returncode == 0
    assert "Multifactor Authentication role: yes" in cli(slapd, "status", uid).stdout

    secret = to_base32(new_secret())
    imported = cli(slapd, "import", uid, "--secret", "-", stdin=secret + "\n")
    assert imported.returncode == 0, imported.stderr
    assert secret not in imported.stdout + imported.stderr
    status = cli(slapd, "status", uid).stdout
    assert "2-step verification: On" in status and "consecutive failures: 0 of 10" in status
    again = cli(slapd, "import", uid, "--secret", secret)
    assert again.returncode == 1 and "already has a token" in again.stderr

    assert cli(slapd, "unlock", uid).returncode == 0
    assert cli(slapd, "reset", uid).returncode == 0
    assert "2-step verification: Off" in cli(slapd, "status", uid).stdout
    off = cli(slapd, "reset", uid)
    assert off.returncode == 1 and "already Off" in off.stderr

    assert cli(slapd, "revoke-role", uid).returncode == 0
    assert "Multifactor Authentication role: no" in cli(slapd, "status", uid).stdout


def test_check_prints_the_decision_word_first(slapd, fresh_user, tmp_path):
    uid, _ = fresh_user()
    out = cli(slapd, "check", uid, "--from", "127.0.0.1")
    assert out.stdout.startswith("exempt: campus source 127.0.0.1 matched 127.0.0.0/8")
    out = cli(slapd, "check", uid, "--from", "203.0.113.7")
    assert out.stdout.startswith("exempt: off-campus source 203.0.113.7; no token")
    cli(slapd, "import", uid, "--secret", to_base32(new_secret()))
    out = cli(slapd, "check", uid, "--from", "::ffff:203.0.113.7", "--service", "sshd")
    assert out.stdout.startswith("code-required: off-campus source 203.0.113.7")
    # No source address: a real login would take its session's; check has none, and the
    # service name changes nothing (policy.local_services made su exempt here).
    out = cli(slapd, "check", uid, "--from", "", "--service", "su")
    assert out.stdout.startswith("code-required: off-campus source none (no calling "
                                 "process); 2-step verification is on")
    out = cli(slapd, "check", "no-such-user", "--from", "203.0.113.7")
    assert out.stdout.startswith("denied: ") and "no directory entry" in out.stdout


def test_check_with_the_directory_down_is_the_pam_decision(slapd, tmp_path):
    text = Path(slapd.config_path).read_text()
    port = slapd.port
    dead = tmp_path / "dead.toml"
    dead.write_text(text.replace(f":{port}", ":1"))
    campus = cli(slapd, "check", "alice", "--from", "127.0.0.9", config=str(dead))
    assert campus.stdout.startswith("exempt: campus source")
    off = cli(slapd, "check", "alice", "--from", "203.0.113.7", config=str(dead))
    assert off.stdout.startswith("denied: off-campus source 203.0.113.7; directory error")


def test_errors_are_one_line_with_documented_exit_codes(slapd, tmp_path):
    missing = cli(slapd, "status", "alice", config=str(tmp_path / "none.toml"))
    assert missing.returncode == 3
    assert missing.stderr.strip().splitlines() == [
        f"campus-mfa: configuration error: {tmp_path / 'none.toml'}: cannot read: "
        "No such file or directory"]
    unknown = cli(slapd, "status", "nobody")
    assert unknown.returncode == 1 and "no directory entry" in unknown.stderr
    bad = cli(slapd, "import", "bob", "--secret", "not base32!")
    assert bad.returncode == 1 and "--secret: the secret is not valid base32" in bad.stderr
    usage = cli(slapd, "frobnicate")
    assert usage.returncode == 2
    text = Path(slapd.config_path).read_text()
    port = slapd.port
    dead = tmp_path / "dead.toml"
    dead.write_text(text.replace(f":{port}", ":1"))
    down = cli(slapd, "status", "alice", config=str(dead))
    assert down.returncode == 4 and down.stderr.startswith("campus-mfa: directory error:")


def test_doctor_passes_on_the_fixture_and_reports_problems(slapd, fresh_user, tmp_path):
    uid, password = fresh_user()
    out = cli(slapd, "doctor", "--test-user", uid, stdin=password + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
    for expected in ("OATH-LDAP schema present", "anonymous sees 0 entries under ou=tokens",
                     f"{uid} sees 0 entries under ou=tokens", "campus networks: 127.0.0.0/8, ::1/128"):
        assert expected in out.stdout
    wrong = cli(slapd, "doctor", "--test-user", uid, stdin="wrong\n")
    assert wrong.returncode == 1
    assert "FAIL search ou=tokens,dc=example,dc=edu as uid=" in wrong.stdout
    overlapping = tmp_path / "overlap.toml"
    overlapping.write_text(Path(slapd.config_path).read_text().replace(
        '"127.0.0.0/8"', '"127.0.0.0/8", "127.0.0.0/16"'))
    out = cli(slapd, "doctor", config=str(overlapping))
    assert out.returncode == 1
    assert "FAIL campus networks: 127.0.0.0/8, ::1/128 (entries overlap" in out.stdout


def test_purge_pending_deletes_only_old_unconfirmed_tokens(slapd, fresh_user):
    uid, _ = fresh_user()
    config = load_config(slapd.config_path)
    old = time.time() - 3 * 86400
    with EnrollmentDirectory(config.ldap) as writer:
        abandoned = writer.create_pending_token(new_secret(), TotpParams(), 10, old)
        recent = writer.create_pending_token(new_secret(), TotpParams(), 10, time.time())
        linked = writer.create_pending_token(new_secret(), TotpParams(), 10, old)
        writer.link_token(writer.read_state(uid), linked, 0)
    out = cli(slapd, "purge-pending", "--older-than", "48")
    assert out.returncode == 0, out.stderr
    deleted = re.fullmatch(r"(\d+) unconfirmed token\(s\) deleted\n", out.stdout)
    assert deleted and int(deleted.group(1)) >= 1  # other tests may leave old ones too
    with EnrollmentDirectory(config.ldap) as writer:
        with pytest.raises(EntryError, match="does not exist"):
            writer.read_token(abandoned)
        assert writer.read_token(recent).dn == recent
        assert writer.read_token(linked).dn == linked
        assert writer.read_state(uid).token.dn == linked


def test_doctor_names_the_transport_checks_every_group_and_warns_of_wide_campus_sets(
        slapd, tmp_path):
    text = Path(slapd.config_path).read_text()
    port = slapd.port
    out = cli(slapd, "doctor")
    assert out.returncode == 0, out.stdout
    assert (f"ok   ldap://127.0.0.1:{port}: plain LDAP on loopback; bind as "
            f"{devldap.SERVICE_DN}\n") in out.stdout
    assert "ok   group cn=mfa-users,ou=groups,dc=example,dc=edu exists\n" in out.stdout

    local = tmp_path / "ldapi.toml"
    local.write_text(text.replace(f'uris = ["ldap://127.0.0.1:{port}"]',
                                  f'uris = ["{slapd.ldapi_uri}"]'))
    out = cli(slapd, "doctor", config=str(local))
    assert out.returncode == 0, out.stdout
    assert f"ok   {slapd.ldapi_uri}: ldapi (local socket); bind as {devldap.SERVICE_DN}\n" \
        in out.stdout

    missing = "cn=Staf, ou=Groups, dc=example, dc=edu"  # a typo of the admin's
    wide = tmp_path / "wide.toml"
    wide.write_text(text.replace('[policy]\n', f'[policy]\nrequired_groups = ["{missing}"]\n')
                    .replace('"127.0.0.0/8", "::1/128"', '"127.0.0.0/8", "10.0.0.0/7", "::/16"'))
    out = cli(slapd, "doctor", config=str(wide))
    assert out.returncode == 1, out.stdout
    assert (f"FAIL group {missing}: compare {missing}: noSuchObject (32)") in out.stdout
    assert ("WARN campus networks hold 50,331,648 IPv4 addresses, more than a /8: is every one "
            "of them really on campus?\n") in out.stdout
    assert "WARN campus network ::/16 is wider than a /32" in out.stdout


def test_doctor_warns_about_a_key_of_an_earlier_version(slapd, tmp_path):
    old = tmp_path / "old.toml"
    old.write_text(Path(slapd.config_path).read_text().replace(
        "[policy]\n", '[policy]\nlocal_services = ["login", "su"]\n'))
    out = cli(slapd, "doctor", config=str(old))
    assert out.returncode == 0, out.stdout
    assert "WARN policy.local_services is ignored since 0.2: a login without a source " \
           "address" in out.stdout
