"""The directory layer against the real slapd: lookup, escaping, state, enrollment,
compare-and-swap counters, errors, and verify_code on top of them."""
import threading
import time

import ldap3
import pytest

from devtools import devldap
from policy.config import load_config, parse_config
from policy.directory.enrollment import EnrollmentDirectory
from policy.directory.service import ServiceDirectory
from policy.errors import DirectoryError, DirectoryUnavailable, EntryError, UserNotFound
from policy.rules.totp import TotpParams, code_at_step, new_secret
from policy.rules.verify import FREE_FAILURES, verify_code


@pytest.fixture
def config(slapd):
    return load_config(slapd.config_path)


@pytest.fixture
def enrolled(config, fresh_user):
    """A user with a linked token; returns (uid, secret)."""
    uid, _ = fresh_user()
    secret = new_secret()
    with EnrollmentDirectory(config.ldap) as writer:
        dn = writer.create_pending_token(secret, TotpParams(), 10, time.time())
        writer.link_token(writer.read_state(uid), dn, 0)
    return uid, secret


def admin(slapd):
    conn = ldap3.Connection(ldap3.Server(slapd.uri, get_info=ldap3.NONE), slapd.admin_dn,
                            slapd.admin_password, auto_bind=True)
    return conn


def test_demo_users_start_without_role_or_token(config):
    with ServiceDirectory(config.ldap) as directory:
        for name in ("alice", "bob"):
            state = directory.read_state(name, (config.ldap.role_group,))
            assert state.dn == f"uid={name},ou=people,dc=example,dc=edu"
            assert state.token is None
            assert not state.in_group(config.ldap.role_group)


@pytest.mark.parametrize("hostile", [
    "alice*", "*", "*)(uid=*", "alice)(uid=bob", " alice", "alice ", "al ice", "alice\x00",
    "alice\n", "x" * 257, "", "\\2a", "a\u200bb"])
def test_hostile_usernames_never_load_anyone(config, hostile):
    with ServiceDirectory(config.ldap) as directory:
        with pytest.raises(UserNotFound, match="^(not an acceptable user name|no directory "
                                               "entry for the user)$"):
            directory.read_state(hostile)


def test_ambiguous_user_filter_is_an_error_not_a_user(slapd, config, tmp_path):
    broad = parse_config({**_raw(config), "ldap": {**_raw(config)["ldap"],
                          "user_filter": "(|(uid={username})(uid=bob))"}}, "x")
    with ServiceDirectory(broad.ldap) as directory:
        with pytest.raises(EntryError, match="more than one"):
            directory.read_state("alice")


def test_pending_token_changes_nothing_until_linked(config, fresh_user):
    uid, _ = fresh_user()
    secret = new_secret()
    with EnrollmentDirectory(config.ldap) as writer:
        dn = writer.create_pending_token(secret, TotpParams("SHA256", 8, 60, 2), 7, 1000.0)
        assert writer.read_state(uid).token is None
        token = writer.read_token(dn)
        assert (token.secret, token.params, token.max_failures) == \
            (secret, TotpParams("SHA256", 8, 60, 2), 7)
        assert (token.last_step, token.failures, token.last_failure) == (0, 0, None)
        writer.link_token(writer.read_state(uid), dn, 1234)
    with ServiceDirectory(config.ldap) as reader:
        state = reader.read_state(uid)
    assert state.token.dn == dn and state.token.last_step == 1234


def test_replacing_a_token_deletes_the_old_one_and_disable_unlinks(config, enrolled):
    uid, _ = enrolled
    with EnrollmentDirectory(config.ldap) as writer:
        old = writer.read_state(uid).token
        new = writer.create_pending_token(new_secret(), TotpParams(), 10, time.time())
        writer.link_token(writer.read_state(uid), new, 5)
        assert writer.read_state(uid).token.dn == new
        with pytest.raises(EntryError, match="does not exist"):
            writer.read_token(old.dn)
        writer.unlink_token(writer.read_state(uid))
        assert writer.read_state(uid).token is None
        with pytest.raises(EntryError, match="does not exist"):
            writer.read_token(new)


def test_role_membership(config, fresh_user):
    uid, _ = fresh_user()
    with EnrollmentDirectory(config.ldap) as writer:
        dn = writer.read_state(uid).dn
        writer.set_role(dn, True)
        writer.set_role(dn, True)  # twice is fine
        assert writer.read_state(uid, (config.ldap.role_group,)).in_group(config.ldap.role_group)
        writer.set_role(dn, False)
        writer.set_role(dn, False)
        assert not writer.read_state(uid, (config.ldap.role_group,)).in_group(
            config.ldap.role_group)


def test_service_dn_cannot_enroll(config, fresh_user):
    """ServiceDirectory has no writes; the ACL refuses them to the service DN too."""
    class WritesAsTheServiceDN(EnrollmentDirectory):
        credentials = ServiceDirectory.credentials

    with WritesAsTheServiceDN(config.ldap) as directory:
        with pytest.raises(DirectoryError, match="insufficientAccessRights"):
            directory.create_pending_token(new_secret(), TotpParams(), 10, time.time())


def test_success_is_compare_and_swap_exactly_one_of_twenty(config, enrolled):
    uid, _ = enrolled
    with ServiceDirectory(config.ldap) as reader:
        token = reader.read_state(uid).token
    wins = []

    def attempt():
        with ServiceDirectory(config.ldap) as directory:
            wins.append(directory.record_success(token, 99, time.time()))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 19 + [True]
    with ServiceDirectory(config.ldap) as reader:
        assert reader.read_state(uid).token.last_step == 99


def test_parallel_guesses_cannot_outrun_the_backoff_and_unlock_clears(config, enrolled):
    """20 wrong codes at once on 20 connections: each code checked has won its own
    increment of the shared counter first, so exactly FREE_FAILURES are checked (and
    counted); the back-off refuses the rest unchecked."""
    uid, _ = enrolled
    with ServiceDirectory(config.ldap) as reader:
        token = reader.read_state(uid).token
    now = float(int(time.time()))  # one instant for all: the back-off is then exact
    barrier = threading.Barrier(20)
    verdicts = []

    def guess():
        with ServiceDirectory(config.ldap) as directory:
            directory.conn  # connect before the race starts
            barrier.wait()
            verdicts.append(verify_code(directory, token, "000000", now, config.totp).outcome)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(verdicts) == ["backoff"] * (20 - FREE_FAILURES) + ["mismatch"] * FREE_FAILURES
    with ServiceDirectory(config.ldap) as reader:
        after = reader.read_state(uid).token
        assert after.failures == FREE_FAILURES and after.last_failure == int(now)
    with EnrollmentDirectory(config.ldap) as writer:
        writer.reset_failures(after.dn)
        assert (writer.read_token(after.dn).failures,
                writer.read_token(after.dn).last_failure) == (0, None)


def test_verify_code_accepts_once_then_refuses_replay_and_older(config, enrolled):
    uid, secret = enrolled
    now = time.time()
    step = int(now // 30)
    with ServiceDirectory(config.ldap) as directory:
        token = directory.read_state(uid).token
        code = code_at_step(secret, step, token.params)
        assert verify_code(directory, token, code, now, config.totp).outcome == "accepted"
        token = directory.read_token(token.dn)
        assert token.last_step == step and token.failures == 0
        assert verify_code(directory, token, code, now, config.totp).outcome == "replayed"
        older = code_at_step(secret, step - 1, token.params)  # inside the window, but older
        assert verify_code(directory, directory.read_token(token.dn), older, now,
                           config.totp).outcome \
            == "replayed"
        assert directory.read_token(token.dn).failures == 2


def test_verify_code_backoff_then_lock(config, enrolled):
    uid, secret = enrolled
    now = time.time()
    with ServiceDirectory(config.ldap) as directory:
        token = directory.read_state(uid).token
        for _ in range(FREE_FAILURES):
            token = directory.read_token(token.dn)
            assert verify_code(directory, token, "000000x", now, config.totp).outcome == "mismatch"
        token = directory.read_token(token.dn)
        verdict = verify_code(directory, token, code_at_step(secret, int(now // 30), token.params),
                              token.last_failure, config.totp)
        assert verdict.outcome == "backoff" and verdict.retry_at == token.last_failure + 1
        assert directory.read_token(token.dn).failures == FREE_FAILURES  # not even counted
        later = now + 10_000
        for _ in range(token.max_failures - FREE_FAILURES):
            token = directory.read_token(token.dn)
            assert verify_code(directory, token, "999999", later, config.totp).outcome == "mismatch"
            later += 10_000
        token = directory.read_token(token.dn)
        good = code_at_step(secret, int(later // 30), token.params)
        assert verify_code(directory, token, good, later, config.totp).outcome == "locked"


def test_malformed_token_entries_are_errors(slapd, config, enrolled):
    uid, _ = enrolled
    with ServiceDirectory(config.ldap) as reader:
        dn = reader.read_state(uid).token.dn
    conn = admin(slapd)
    for changes, message in (
            ({"oathTOTPLastTimeStep": [(ldap3.MODIFY_REPLACE, ["-5"])]}, "not a non-negative"),
            ({"oathSecret": [(ldap3.MODIFY_REPLACE, [b"short"])]}, "shorter than 128 bits"),
            ({"oathSecret": [(ldap3.MODIFY_DELETE, [])]}, "oathSecret must have exactly one")):
        assert conn.modify(dn, changes), conn.result
        with ServiceDirectory(config.ldap) as reader:
            with pytest.raises(EntryError, match=message):
                reader.read_state(uid)
    conn.unbind()


def test_token_link_outside_token_base_is_refused(slapd, config, fresh_user):
    uid, _ = fresh_user()
    conn = admin(slapd)
    assert conn.modify(f"uid={uid},ou=people,dc=example,dc=edu", {
        "objectClass": [(ldap3.MODIFY_ADD, ["oathTOTPUser"])],
        "oathTOTPToken": [(ldap3.MODIFY_ADD, ["uid=bob,ou=people,dc=example,dc=edu"])]})
    conn.unbind()
    with ServiceDirectory(config.ldap) as reader:
        with pytest.raises(EntryError, match="not under ou=tokens"):
            reader.read_state(uid)


def test_an_unreachable_directory_is_unavailable_after_trying_each_server(config):
    port = devldap.free_port()
    dead = parse_config({**_raw(config), "ldap": {**_raw(config)["ldap"], "timeout": 1,
                         "uris": [f"ldap://127.0.0.1:{port}", f"ldap://127.0.0.2:{port}"]}}, "x")
    with ServiceDirectory(dead.ldap) as directory:
        with pytest.raises(DirectoryUnavailable, match=(
                rf"^no server answered: ldap://127\.0\.0\.1:{port}: connect: .*Connection "
                rf"refused; ldap://127\.0\.0\.2:{port}: connect: .*Connection refused$")):
            directory.read_state("alice")


def test_failover_to_the_second_server(config):
    port = devldap.free_port()
    raw = _raw(config)
    pool = parse_config({**raw, "ldap": {**raw["ldap"],
                         "uris": [f"ldap://127.0.0.1:{port}"] + list(raw["ldap"]["uris"])}}, "x")
    with ServiceDirectory(pool.ldap) as directory:
        assert directory.read_state("alice").username == "alice"


def test_wrong_service_password_is_an_error_not_an_outage_and_says_no_password(config,
                                                                               tmp_path):
    """A server that answers "invalid credentials" is reachable: not DirectoryUnavailable,
    so on_directory_error = "allow" does not let logins through on it."""
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    raw = _raw(config)
    bad = parse_config({**raw, "ldap": {**raw["ldap"], "bind_password_file": str(wrong)}}, "x")
    with ServiceDirectory(bad.ldap) as directory:
        with pytest.raises(DirectoryError, match="refused: invalid credentials") as raised:
            directory.read_state("alice")
    assert not isinstance(raised.value, DirectoryUnavailable)
    assert "invalid credentials" in str(raised.value)
    assert "not-the-password" not in str(raised.value)


def test_check_password(config, fresh_user):
    uid, password = fresh_user()
    with ServiceDirectory(config.ldap) as directory:
        assert directory.check_password(uid, password) is True
        assert directory.check_password(uid, password + "x") is False
        assert directory.check_password(uid, "") is False
        assert directory.check_password("nobody-" + uid, password) is False


def _raw(config):
    """The config as TOML-shaped dicts, to derive variants in tests."""
    import dataclasses
    out = {}
    for section in ("ldap", "policy", "totp", "audit", "web"):
        values = dataclasses.asdict(getattr(config, section))
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out


@pytest.mark.slapd  # a slapd of its own
def test_a_search_the_server_cuts_short_is_an_error_never_a_short_answer(tmp_path):
    """slapd's size limit for the service DN (olcLimits) ends a search early with
    sizeLimitExceeded, which ldap3 does not raise. Two entries match the filter; the server
    returns one: that one must not be taken for "the" user."""
    handle = devldap.start(str(tmp_path / "ldap"), devldap.free_port())
    try:
        devldap.apply_ldif(handle, f"""\
dn: olcDatabase={{1}}mdb,cn=config
changetype: modify
add: olcLimits
olcLimits: dn.exact="{devldap.SERVICE_DN}" size=1
""")
        for uid in ("twin-a", "twin-b"):
            conn = devldap.admin_connection(handle)
            assert conn.add(f"uid={uid},{devldap.PEOPLE_DN}", ["inetOrgPerson"],
                            {"uid": uid, "cn": "twin", "sn": "twin", "userPassword": "x"})
            conn.unbind()
        raw = _raw(load_config(handle.config_path))
        by_cn = parse_config({**raw, "ldap": {
            **raw["ldap"], "user_filter": "(&(objectClass=inetOrgPerson)(cn={username}))"}}, "x")
        with ServiceDirectory(by_cn.ldap) as directory:
            with pytest.raises(DirectoryError, match=r"the server stopped the search early "
                                                     r"\(sizeLimitExceeded\) after 1 entries") \
                    as raised:
                directory.read_state("twin")
        assert raised.value.code == 4 and not isinstance(raised.value, DirectoryUnavailable)
        with ServiceDirectory(load_config(handle.config_path).ldap) as directory:
            assert directory.read_state("twin-a").username == "twin-a"  # one match: fine
    finally:
        devldap.stop(handle.dir)


def test_group_membership_is_compared_by_the_server_in_any_spelling(config, fresh_user):
    uid, _ = fresh_user()
    spellings = (config.ldap.role_group, config.ldap.role_group.upper(),
                 ", ".join(config.ldap.role_group.split(",")))
    with EnrollmentDirectory(config.ldap) as writer:
        writer.set_role(writer.find_user(uid)[0], True)
        state = writer.read_state(uid, spellings)
    assert [state.in_group(dn) for dn in spellings] == [True, True, True]
    # A group nobody asked about is a bug, not "no".
    with pytest.raises(KeyError, match=r"^'cn=other,ou=groups,dc=example,dc=edu'$"):
        state.in_group("cn=other,ou=groups,dc=example,dc=edu")
    with ServiceDirectory(config.ldap) as reader:
        with pytest.raises(DirectoryError, match=r"compare cn=gone,ou=groups,dc=example,dc=edu: "
                                                 r"noSuchObject") as raised:
            reader.read_state(uid, ("cn=gone,ou=groups,dc=example,dc=edu",))
    assert raised.value.code == 32
    with EnrollmentDirectory(config.ldap) as writer:
        writer.set_role(writer.find_user(uid)[0], False)  # the role group as it was


def test_ldapi_needs_no_start_tls(slapd):
    """The default start_tls = true applies to ldap:// only; ldapi:// is a local socket."""
    raw = _raw(load_config(slapd.config_path))
    local = parse_config({**raw, "ldap": {**raw["ldap"], "uris": [slapd.ldapi_uri],
                                          "start_tls": True}}, "x")
    with ServiceDirectory(local.ldap) as directory:
        assert directory.read_state("alice").dn == f"uid=alice,{devldap.PEOPLE_DN}"


def test_start_tls_is_attempted_by_default(slapd):
    """Without a start_tls key the module asks for StartTLS: this slapd offers none, so
    the connection is refused instead of going on in the clear."""
    raw = _raw(load_config(slapd.config_path))
    del raw["ldap"]["start_tls"]
    default = parse_config(raw, "x")
    assert default.ldap.start_tls is True
    with ServiceDirectory(default.ldap) as directory:
        with pytest.raises(DirectoryUnavailable, match=r": StartTLS: protocolError \(2\): "
                                                       r"unsupported extended operation"):
            directory.read_state("alice")


def test_the_stricter_of_the_config_and_the_token_counts(config, enrolled):
    """The token was made with window 1 and a lock-out at 10; an admin who lowers
    totp.window or totp.max_failures gets the lower values for existing tokens too."""
    import dataclasses

    uid, secret = enrolled
    strict = dataclasses.replace(config.totp, window=0, max_failures=3)
    now = time.time()
    with ServiceDirectory(config.ldap) as directory:
        token = directory.read_state(uid).token
        assert (token.params.window, token.max_failures) == (1, 10)
        previous = code_at_step(secret, int(now // 30) - 1, token.params)
        assert verify_code(directory, token, previous, now, strict).outcome == "mismatch"
        assert verify_code(directory, directory.read_token(token.dn), previous, now,
                           config.totp).outcome == "accepted"
        later = now
        for _ in range(3):
            later += 10_000  # past any back-off
            wrong = next(c for c in ("000000", "111111", "222222") if c != code_at_step(
                secret, int(later // 30), token.params))
            assert verify_code(directory, directory.read_token(token.dn), wrong, later,
                               strict).outcome == "mismatch"
        later += 10_000
        good = code_at_step(secret, int(later // 30), token.params)
        assert verify_code(directory, directory.read_token(token.dn), good, later,
                           strict).outcome == "locked"
        assert verify_code(directory, directory.read_token(token.dn), good, later,
                           config.totp).outcome == "accepted"
