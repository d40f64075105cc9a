"""Source normalisation and the decision, as tables (SECURITY.md 12-16)."""
import ipaddress

import pytest

from policy.config import PolicyConfig
from policy.decision import CODE_REQUIRED, DENIED, EXEMPT, decide, decide_by_source
from policy.network import normalize_source
from policy.state import Token, Unreadable, UserState
from policy.totp import TotpParams

POLICY = PolicyConfig(campus_networks=("192.0.2.0/24", "2001:db8:c0::/48"))
LOCAL = POLICY.local_services


@pytest.mark.parametrize("rhost,service,address,local", [
    ("192.0.2.7", "sshd", "192.0.2.7", False),
    ("2001:db8:c0::7", "sshd", "2001:db8:c0::7", False),
    ("::ffff:192.0.2.7", "sshd", "192.0.2.7", False),          # mapped -> IPv4
    ("::FFFF:198.51.100.7", "sshd", "198.51.100.7", False),
    ("2001:db8:c0::7%eth0", "sshd", "2001:db8:c0::7", False),   # zone id stripped
    ("fe80::1%2", "sshd", "fe80::1", False),
    ("campus-gw.example.edu", "sshd", None, False),            # hostname: never resolved
    ("UNKNOWN", "sshd", None, False),
    ("192.0.2.007", "sshd", None, False),                      # leading zeros
    ("0300.0.2.7", "sshd", None, False),
    ("192.0.2.7 ", "sshd", None, False),                       # trailing space
    (" 192.0.2.7", "sshd", None, False),
    ("192.0.2", "sshd", None, False),
    ("192.0.2.7%eth0", "sshd", None, False),
    ("192.0.2.7/24", "sshd", None, False),
    ("\x00192.0.2.7", "sshd", None, False),
    ("x" * 5000, "sshd", None, False),
    ("", "login", None, True),                                 # empty: local service
    (None, "sudo", None, True),
    ("", "sshd", None, False),                                 # empty: not a local service
    ("", "nextcloud", None, False),
])
def test_normalize_source(rhost, service, address, local):
    source = normalize_source(rhost, service, LOCAL)
    expected = ipaddress.ip_address(address) if address else None
    assert source.address == expected
    assert source.local is local


TOKEN = Token(dn="cn=t,ou=tokens,dc=example,dc=edu", secret=b"k" * 20, params=TotpParams(),
              max_failures=10, last_step=0, failures=0, last_failure=None)
ENROLLED = UserState("alice", "uid=alice,ou=people,dc=example,dc=edu", TOKEN)
# Memberships as the directory answered them for the groups the policy names.
NOT_ENROLLED = UserState("bob", "uid=bob,ou=people,dc=example,dc=edu", None,
                         {"CN=Staff,ou=groups,dc=example,dc=edu": True,
                          "cn=admins,ou=groups,dc=example,dc=edu": False})
DOWN = Unreadable("DirectoryUnavailable: timed out", unreachable=True)
AMBIGUOUS = Unreadable("more than one directory entry matches the user name")
MALFORMED = Unreadable("entry cn=t,ou=tokens,dc=example,dc=edu: oathSecret must have exactly "
                       "one value")
UNKNOWN = Unreadable("no directory entry for the user", user_unknown=True)
OFF = "203.0.113.9"


def policy(**changes):
    return PolicyConfig(**{**POLICY.__dict__, **changes})


@pytest.mark.parametrize("rhost,service,state,config,outcome,reason", [
    # source decides: the state is never consulted (None would raise otherwise)
    ("192.0.2.7", "sshd", None, POLICY, EXEMPT, "campus source 192.0.2.7 matched 192.0.2.0/24"),
    ("::ffff:192.0.2.7", "sshd", None, POLICY, EXEMPT, "matched 192.0.2.0/24"),
    ("2001:db8:c0:1::5", "sshd", None, POLICY, EXEMPT, "matched 2001:db8:c0::/48"),
    ("", "su", None, POLICY, EXEMPT, "local login"),
    # off campus
    (OFF, "sshd", ENROLLED, POLICY, CODE_REQUIRED, "2-step verification is on"),
    ("::ffff:203.0.113.9", "sshd", ENROLLED, POLICY, CODE_REQUIRED, "off-campus source 203.0.113.9"),
    ("", "sshd", ENROLLED, POLICY, CODE_REQUIRED, "off-campus source none"),
    ("gw.example.edu", "sshd", ENROLLED, POLICY, CODE_REQUIRED, "'gw.example.edu'"),
    (OFF, "sshd", NOT_ENROLLED, POLICY, EXEMPT, "no token (2-step verification is off, opt-in)"),
    (OFF, "sshd", NOT_ENROLLED, policy(enforcement="required"), DENIED,
     "no token and enforcement = required"),
    (OFF, "sshd", NOT_ENROLLED, policy(required_groups=("CN=Staff,ou=groups,dc=example,dc=edu",)),
     DENIED, "member of required group"),
    (OFF, "sshd", NOT_ENROLLED, policy(required_groups=("cn=admins,ou=groups,dc=example,dc=edu",)),
     EXEMPT, "opt-in"),
    (OFF, "sshd", ENROLLED, policy(enforcement="required"), CODE_REQUIRED, "verification is on"),
    (OFF, "sshd", DOWN, POLICY, DENIED, "directory error (DirectoryUnavailable: timed out)"),
    (OFF, "sshd", DOWN, policy(on_directory_error="allow"), EXEMPT,
     "directory unreachable (DirectoryUnavailable: timed out) and on_directory_error = allow"),
    # "allow" is for an outage only: an ambiguous or malformed entry is always refused.
    (OFF, "sshd", AMBIGUOUS, policy(on_directory_error="allow"), DENIED, "more than one"),
    (OFF, "sshd", MALFORMED, policy(on_directory_error="allow"), DENIED, "exactly one value"),
    (OFF, "sshd", UNKNOWN, POLICY, DENIED, "no directory entry for the user"),
    (OFF, "sshd", UNKNOWN, policy(on_directory_error="allow"), DENIED, "no directory entry"),
])
def test_decision_table(rhost, service, state, config, outcome, reason):
    decision = decide(normalize_source(rhost, service, LOCAL), state, config)
    assert decision.outcome == outcome
    assert reason in decision.reason
    assert decision.directory_error == (
        state in (DOWN, AMBIGUOUS, MALFORMED) and outcome == DENIED)


def test_off_campus_without_state_is_a_programming_error():
    source = normalize_source(OFF, "sshd", LOCAL)
    assert decide_by_source(source, POLICY) is None
    with pytest.raises(ValueError, match="needs the user's state"):
        decide(source, None, POLICY)
