"""The shipped slapd ACL (policy/ldap/acl.ldif), proven against a real slapd."""
from __future__ import annotations

import secrets
import threading

import ldap3
import pytest
from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE

from devtools import devldap

SUCCESS = 0
NO_SUCH_ATTRIBUTE = 16
NO_SUCH_OBJECT = 32
INSUFFICIENT_ACCESS = 50
HMAC_SHA1 = "1.2.840.113549.2.7"


def connect(slapd: devldap.DevLdap, dn: str | None = None,
            password: str | None = None) -> ldap3.Connection:
    """A bound connection (anonymous without a DN); results are read from conn.result."""
    server = ldap3.Server(slapd.uri, get_info=ldap3.NONE, connect_timeout=3)
    conn = ldap3.Connection(server, dn, password, receive_timeout=5)
    assert conn.bind(), conn.result
    return conn


def service(slapd: devldap.DevLdap) -> ldap3.Connection:
    return connect(slapd, devldap.SERVICE_DN, slapd.secret("ldap.secret"))


def enroll(slapd: devldap.DevLdap) -> ldap3.Connection:
    return connect(slapd, devldap.ENROLL_DN, slapd.secret("ldap-write.secret"))


def admin(slapd: devldap.DevLdap) -> ldap3.Connection:
    return connect(slapd, slapd.admin_dn, slapd.admin_password)


def user_dn(uid: str) -> str:
    return f"uid={uid},{devldap.PEOPLE_DN}"


def code(conn: ldap3.Connection) -> int:
    return conn.result["result"]


def make_token(conn: ldap3.Connection, last_step: str = "5") -> tuple[str, str, bytes]:
    """Create a params entry and a token entry the way policy/directory.py will."""
    ident = secrets.token_hex(16)
    params_dn = f"cn=totp-{ident},{devldap.TOKENS_DN}"
    token_dn = f"cn={ident},{devldap.TOKENS_DN}"
    secret = secrets.token_bytes(20)
    assert conn.add(params_dn, ["device", "oathTOTPParams"], {
        "oathOTPLength": "6", "oathHMACAlgorithm": HMAC_SHA1,
        "oathTOTPTimeStepPeriod": "30", "oathTOTPTimeStepWindow": "1",
        "oathThrottleLimit": "10"}), conn.result
    assert conn.add(token_dn, ["device", "oathTOTPToken"], {
        "oathSecret": secret, "oathSecretTime": "20240101000000Z",
        "oathTOTPParams": params_dn, "oathTOTPLastTimeStep": last_step,
        "oathFailureCount": "0", "oathLastFailure": "20240101000000Z",
        "oathLastLogin": "20240101000000Z", "oathTokenIdentifier": ident}), conn.result
    return token_dn, params_dn, secret


def link(conn: ldap3.Connection, uid: str, token_dn: str) -> None:
    assert conn.modify(user_dn(uid), {"objectClass": [(MODIFY_ADD, ["oathTOTPUser"])],
                                      "oathTOTPToken": [(MODIFY_ADD, [token_dn])]}), conn.result


def stored(slapd: devldap.DevLdap, dn: str, attr: str) -> list:
    """The values of ``attr`` as the rootdn sees them ([] when absent)."""
    conn = admin(slapd)
    assert conn.search(dn, "(objectClass=*)", BASE, attributes=[attr]), conn.result
    values = conn.response[0]["raw_attributes"].get(attr, [])
    conn.unbind()
    return sorted(v.decode() if attr != "oathSecret" else v for v in values)


@pytest.fixture
def token(slapd: devldap.DevLdap) -> tuple[str, str, bytes]:
    conn = enroll(slapd)
    made = make_token(conn)
    conn.unbind()
    return made


@pytest.fixture
def enrolled(slapd, fresh_user, token) -> tuple[str, str, str]:
    """A user linked to a token: (uid, password, token_dn)."""
    uid, password = fresh_user()
    conn = enroll(slapd)
    link(conn, uid, token[0])
    conn.unbind()
    return uid, password, token[0]


def test_user_cannot_read_or_search_tokens(slapd, enrolled):
    uid, password, token_dn = enrolled
    conn = connect(slapd, user_dn(uid), password)
    assert not conn.search(token_dn, "(objectClass=*)", BASE, attributes=["oathSecret"])
    assert code(conn) == NO_SUCH_OBJECT and conn.entries == []
    assert not conn.search(devldap.TOKENS_DN, "(objectClass=*)", SUBTREE, attributes=["*"])
    assert code(conn) == NO_SUCH_OBJECT and conn.entries == []
    # Searching from the top for secrets finds nothing, and does not even reveal ou=tokens.
    assert not conn.search(slapd.base_dn, "(|(oathSecret=*)(ou=tokens))", SUBTREE)
    assert code(conn) == SUCCESS and conn.entries == []
    assert not conn.compare(token_dn, "oathTOTPLastTimeStep", "5")
    assert code(conn) == NO_SUCH_OBJECT
    # Yet the user sees which token they are linked to (self read), and nothing else of it.
    assert conn.search(user_dn(uid), "(objectClass=*)", BASE, attributes=["oathTOTPToken"])
    assert conn.response[0]["raw_attributes"]["oathTOTPToken"] == [token_dn.encode()]
    conn.unbind()


def test_user_cannot_change_own_token_link_or_classes(slapd, fresh_user, enrolled):
    uid, password, token_dn = enrolled
    conn = enroll(slapd)
    other_token = make_token(conn)[0]
    conn.unbind()
    conn = connect(slapd, user_dn(uid), password)
    assert not conn.modify(user_dn(uid), {"oathTOTPToken": [(MODIFY_REPLACE, [other_token])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.modify(user_dn(uid), {"oathTOTPToken": [(MODIFY_DELETE, [])],
                                          "objectClass": [(MODIFY_DELETE, ["oathTOTPUser"])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    conn.unbind()
    assert stored(slapd, user_dn(uid), "oathTOTPToken") == [token_dn]
    assert stored(slapd, user_dn(uid), "objectClass") == ["inetOrgPerson", "oathTOTPUser"]

    # A user without a token cannot attach one to themselves either.
    uid2, password2 = fresh_user()
    conn = connect(slapd, user_dn(uid2), password2)
    assert not conn.modify(user_dn(uid2), {"objectClass": [(MODIFY_ADD, ["oathTOTPUser"])],
                                           "oathTOTPToken": [(MODIFY_ADD, [other_token])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.modify(user_dn(uid2), {"objectClass": [(MODIFY_ADD, ["posixAccount"])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    # The role group is not self-service either.
    assert not conn.modify(devldap.ROLE_GROUP_DN, {"member": [(MODIFY_ADD, [user_dn(uid2)])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    conn.unbind()
    assert stored(slapd, user_dn(uid2), "objectClass") == ["inetOrgPerson"]
    assert stored(slapd, user_dn(uid2), "oathTOTPToken") == []


def test_other_users_cannot_see_a_token_link(slapd, fresh_user, enrolled):
    uid, _, _ = enrolled
    other, other_password = fresh_user()
    conn = connect(slapd, user_dn(other), other_password)
    assert conn.search(user_dn(uid), "(objectClass=*)", BASE, attributes=["oathTOTPToken"])
    assert conn.response[0]["raw_attributes"].get("oathTOTPToken", []) == []
    assert not conn.search(devldap.PEOPLE_DN, "(oathTOTPToken=*)", SUBTREE)
    assert code(conn) == SUCCESS and conn.entries == []
    conn.unbind()


def test_anonymous_reads_nothing_under_tokens(slapd, token):
    conn = connect(slapd)
    assert not conn.search(devldap.TOKENS_DN, "(objectClass=*)", SUBTREE, attributes=["*"])
    assert code(conn) == NO_SUCH_OBJECT and conn.entries == []
    assert not conn.search(token[0], "(objectClass=*)", BASE, attributes=["*"])
    assert code(conn) == NO_SUCH_OBJECT and conn.entries == []
    assert not conn.search(slapd.base_dn, "(oathSecret=*)", SUBTREE)
    assert code(conn) == SUCCESS and conn.entries == []
    conn.unbind()


def test_nobody_but_the_rootdn_reads_service_passwords(slapd):
    for conn in (connect(slapd), service(slapd), enroll(slapd)):
        assert conn.search(devldap.SERVICE_DN, "(objectClass=*)", BASE,
                           attributes=["userPassword"]), conn.result
        assert [e["dn"] for e in conn.response] == [devldap.SERVICE_DN]
        assert conn.response[0]["raw_attributes"].get("userPassword", []) == []
        conn.unbind()


def test_service_reads_secret_and_updates_counters(slapd, token):
    token_dn, _, secret = token
    conn = service(slapd)
    assert conn.search(token_dn, "(objectClass=*)", BASE, attributes=["oathSecret"])
    assert conn.response[0]["raw_attributes"]["oathSecret"] == [secret]
    assert conn.search(devldap.TOKENS_DN, "(oathTokenIdentifier=*)", SUBTREE)
    assert token_dn in [e["dn"] for e in conn.response]
    changes = {"oathTOTPLastTimeStep": "9", "oathFailureCount": "3",
               "oathLastFailure": "20250101000000Z", "oathLastLogin": "20250102000000Z"}
    for attr, value in changes.items():
        assert conn.modify(token_dn, {attr: [(MODIFY_REPLACE, [value])]}), conn.result
        assert stored(slapd, token_dn, attr) == [value]
    conn.unbind()


def test_service_cannot_change_anything_else(slapd, fresh_user, enrolled, token):
    uid, _, token_dn = enrolled
    conn = service(slapd)
    assert not conn.modify(token_dn, {"oathSecret": [(MODIFY_REPLACE, [b"x" * 20])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.modify(token_dn, {"oathTOTPParams": [(MODIFY_REPLACE, [token[1]])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    ident = secrets.token_hex(16)
    assert not conn.add(f"cn={ident},{devldap.TOKENS_DN}", ["device", "oathTOTPToken"],
                        {"oathSecret": b"y" * 20})
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.delete(token_dn)
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.modify(user_dn(uid), {"oathTOTPToken": [(MODIFY_REPLACE, [token[0]])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    other, _ = fresh_user()
    assert not conn.modify(user_dn(other), {"objectClass": [(MODIFY_ADD, ["oathTOTPUser"])],
                                            "oathTOTPToken": [(MODIFY_ADD, [token_dn])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    assert not conn.modify(devldap.ROLE_GROUP_DN, {"member": [(MODIFY_ADD, [user_dn(other)])]})
    assert code(conn) == INSUFFICIENT_ACCESS
    conn.unbind()
    assert len(stored(slapd, token_dn, "oathSecret")) == 1
    assert stored(slapd, token_dn, "oathSecret") != [b"x" * 20]
    assert stored(slapd, user_dn(uid), "oathTOTPToken") == [token_dn]
    assert stored(slapd, devldap.ROLE_GROUP_DN, "member") == [devldap.ENROLL_DN]


def test_enrollment_creates_links_and_deletes_tokens(slapd, fresh_user):
    uid, _ = fresh_user()
    conn = enroll(slapd)
    token_dn, params_dn, secret = make_token(conn)
    assert stored(slapd, token_dn, "oathSecret") == [secret]
    assert stored(slapd, token_dn, "oathTOTPParams") == [params_dn]
    link(conn, uid, token_dn)
    assert stored(slapd, user_dn(uid), "oathTOTPToken") == [token_dn]
    assert stored(slapd, user_dn(uid), "objectClass") == ["inetOrgPerson", "oathTOTPUser"]
    # The enrollment DN finds users and reads their link, as the site must.
    assert conn.search(devldap.PEOPLE_DN, f"(&(objectClass=inetOrgPerson)(uid={uid}))",
                       SUBTREE, attributes=["uid", "cn", "oathTOTPToken"])
    assert [e["dn"] for e in conn.response] == [user_dn(uid)]
    assert conn.response[0]["raw_attributes"]["oathTOTPToken"] == [token_dn.encode()]
    # Unlink (2-step verification Off) and delete the token and its params.
    assert conn.modify(user_dn(uid), {"oathTOTPToken": [(MODIFY_DELETE, [])],
                                      "objectClass": [(MODIFY_DELETE, ["oathTOTPUser"])]}), \
        conn.result
    assert conn.delete(token_dn), conn.result
    assert conn.delete(params_dn), conn.result
    conn.unbind()
    assert stored(slapd, user_dn(uid), "objectClass") == ["inetOrgPerson"]
    check = admin(slapd)
    assert not check.search(token_dn, "(objectClass=*)", BASE)
    assert code(check) == NO_SUCH_OBJECT
    check.unbind()


def test_enrollment_manages_role_group(slapd, fresh_user):
    uid, _ = fresh_user()
    conn = enroll(slapd)
    assert conn.modify(devldap.ROLE_GROUP_DN, {"member": [(MODIFY_ADD, [user_dn(uid)])]}), \
        conn.result
    assert stored(slapd, devldap.ROLE_GROUP_DN, "member") == sorted(
        [devldap.ENROLL_DN, user_dn(uid)])
    svc = service(slapd)
    assert svc.search(devldap.ROLE_GROUP_DN, f"(member={user_dn(uid)})", BASE)
    assert [e["dn"] for e in svc.response] == [devldap.ROLE_GROUP_DN]
    svc.unbind()
    assert conn.modify(devldap.ROLE_GROUP_DN, {"member": [(MODIFY_DELETE, [user_dn(uid)])]}), \
        conn.result
    conn.unbind()
    assert stored(slapd, devldap.ROLE_GROUP_DN, "member") == [devldap.ENROLL_DN]


def cas(conn: ldap3.Connection, dn: str, old: str, new: str) -> int:
    """Compare-and-swap of the replay guard; returns the LDAP result code."""
    conn.modify(dn, {"oathTOTPLastTimeStep": [(MODIFY_DELETE, [old]), (MODIFY_ADD, [new])]})
    return code(conn)


def test_compare_and_swap_fails_on_stale_value(slapd, token):
    token_dn = token[0]
    conn = service(slapd)
    assert cas(conn, token_dn, "5", "6") == SUCCESS
    assert stored(slapd, token_dn, "oathTOTPLastTimeStep") == ["6"]
    assert cas(conn, token_dn, "5", "7") == NO_SUCH_ATTRIBUTE
    assert stored(slapd, token_dn, "oathTOTPLastTimeStep") == ["6"]
    conn.unbind()


def test_compare_and_swap_race_has_one_winner(slapd, token):
    token_dn = token[0]
    conns = [service(slapd) for _ in range(20)]
    barrier = threading.Barrier(len(conns))
    results: list[int] = [-1] * len(conns)

    def attempt(i: int) -> None:
        barrier.wait()
        results[i] = cas(conns[i], token_dn, "5", str(6 + i))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for conn in conns:
        conn.unbind()
    assert sorted(results) == [SUCCESS] + [NO_SUCH_ATTRIBUTE] * 19
    winner = results.index(SUCCESS)
    assert stored(slapd, token_dn, "oathTOTPLastTimeStep") == [str(6 + winner)]
