"""Source normalisation and the decision, as tables (SECURITY.md 12-16). Where a login
without PAM_RHOST comes from (its session) is tests/test_session.py's; here such a source
is given."""
import ipaddress

import pytest

from policy.config import PolicyConfig
from policy.rules.decision import CODE_REQUIRED, DENIED, EXEMPT, decide, decide_by_source
from policy.rules.network import Source, normalize_source
from policy.rules.state import Token, Unreadable, UserState
from policy.rules.totp import TotpParams

POLICY = PolicyConfig(campus_networks=("192.0.2.0/24", "2001:db8:c0::/48"))


@pytest.mark.parametrize("rhost,address", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:c0::7", "2001:db8:c0::7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),          # mapped -> IPv4
    ("::FFFF:198.51.100.7", "198.51.100.7"),
    ("2001:db8:c0::7%eth0", "2001:db8:c0::7"),   # zone id stripped
    ("fe80::1%2", "fe80::1"),
    ("campus-gw.example.edu", None),            # hostname: never resolved
    ("UNKNOWN", None),
    ("192.0.2.007", None),                      # leading zeros
    ("0300.0.2.7", None),
    ("192.0.2.7 ", None),                       # trailing space
    (" 192.0.2.7", None),
    ("192.0.2", None),
    ("192.0.2.7%eth0", None),
    ("192.0.2.7/24", None),
    ("\x00192.0.2.7", None),
    ("x" * 5000, None),
    ("", None),                                 # empty: unknown, whatever the service
    (None, None),
])
def test_normalize_source(rhost, address):
    source = normalize_source(rhost)
    expected = ipaddress.ip_address(address) if address else None
    assert source.address == expected
    assert source.local is False  # only a session (policy/session.py) can make a login local
    assert source.via == ""


def test_an_empty_source_is_never_local():
    """What ``policy.local_services`` used to do: an empty PAM_RHOST of login, su, sudo was
    exempt. An empty source is off campus now; only the session's own record can make a
    login local (policy/session.py, test_session.py)."""
    for rhost in ("", None):
        source = normalize_source(rhost)
        assert (source.local, source.address, str(source)) == (False, None, "none")
        decision = decide(source, ENROLLED, POLICY)
        assert (decision.outcome, decision.reason) == (
            CODE_REQUIRED, "off-campus source none; 2-step verification is on")


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


# Sources of logins without PAM_RHOST, as policy/session.py makes them.
CONSOLE = Source("", local=True, via="utmp record of tty1: no remote host")
SESSION_CAMPUS = Source("192.0.2.2", ipaddress.ip_address("192.0.2.2"),
                        via="utmp record of pts/3")
SESSION_OFF = Source("198.51.100.2", ipaddress.ip_address("198.51.100.2"),
                     via="logind session 7")
NO_SESSION = Source("", via="no tty")


@pytest.mark.parametrize("source,state,config,outcome,reason", [
    # source decides: the state is never consulted (None would raise otherwise)
    ("192.0.2.7", None, POLICY, EXEMPT, "campus source 192.0.2.7 matched 192.0.2.0/24"),
    ("::ffff:192.0.2.7", None, POLICY, EXEMPT, "campus source 192.0.2.7 matched 192.0.2.0/24"),
    ("2001:db8:c0:1::5", None, POLICY, EXEMPT,
     "campus source 2001:db8:c0:1::5 matched 2001:db8:c0::/48"),
    (CONSOLE, None, POLICY, EXEMPT, "local login (utmp record of tty1: no remote host)"),
    (SESSION_CAMPUS, None, POLICY, EXEMPT,
     "campus source 192.0.2.2 (utmp record of pts/3) matched 192.0.2.0/24"),
    # off campus
    (OFF, ENROLLED, POLICY, CODE_REQUIRED, "off-campus source 203.0.113.9; 2-step verification is on"),
    ("::ffff:203.0.113.9", ENROLLED, POLICY, CODE_REQUIRED,
     "off-campus source 203.0.113.9; 2-step verification is on"),
    ("", ENROLLED, POLICY, CODE_REQUIRED, "off-campus source none; 2-step verification is on"),
    (SESSION_OFF, ENROLLED, POLICY, CODE_REQUIRED,
     "off-campus source 198.51.100.2 (logind session 7); 2-step verification is on"),
    (NO_SESSION, ENROLLED, POLICY, CODE_REQUIRED,
     "off-campus source none (no tty); 2-step verification is on"),
    (NO_SESSION, NOT_ENROLLED, POLICY, EXEMPT,
     "off-campus source none (no tty); no token (2-step verification is off, opt-in)"),
    ("gw.example.edu", ENROLLED, POLICY, CODE_REQUIRED,
     "off-campus source 'gw.example.edu'; 2-step verification is on"),
    (OFF, NOT_ENROLLED, POLICY, EXEMPT, "no token (2-step verification is off, opt-in)"),
    (OFF, NOT_ENROLLED, policy(enforcement="required"), DENIED,
     "no token and enforcement = required"),
    (OFF, NOT_ENROLLED, policy(required_groups=("CN=Staff,ou=groups,dc=example,dc=edu",)),
     DENIED, "member of required group"),
    (OFF, NOT_ENROLLED, policy(required_groups=("cn=admins,ou=groups,dc=example,dc=edu",)),
     EXEMPT, "opt-in"),
    (OFF, ENROLLED, policy(enforcement="required"), CODE_REQUIRED, "verification is on"),
    (OFF, DOWN, POLICY, DENIED, "directory error (DirectoryUnavailable: timed out)"),
    (OFF, DOWN, policy(on_directory_error="allow"), EXEMPT,
     "directory unreachable (DirectoryUnavailable: timed out) and on_directory_error = allow"),
    # "allow" is for an outage only: an ambiguous or malformed entry is always refused.
    (OFF, AMBIGUOUS, policy(on_directory_error="allow"), DENIED, "more than one"),
    (OFF, MALFORMED, policy(on_directory_error="allow"), DENIED, "exactly one value"),
    (OFF, UNKNOWN, POLICY, DENIED, "no directory entry for the user"),
    (OFF, UNKNOWN, policy(on_directory_error="allow"), DENIED, "no directory entry"),
])
def test_decision_table(source, state, config, outcome, reason):
    if not isinstance(source, Source):
        source = normalize_source(source)
    decision = decide(source, state, config)
    assert decision.outcome == outcome
    assert reason in decision.reason
    assert decision.directory_error == (
        state in (DOWN, AMBIGUOUS, MALFORMED) and outcome == DENIED)


def test_off_campus_without_state_is_a_programming_error():
    source = normalize_source(OFF)
    assert decide_by_source(source, POLICY) is None
    with pytest.raises(ValueError, match="an off-campus decision needs the user's state"):
        decide(source, None, POLICY)
