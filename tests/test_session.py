"""Where a login without PAM_RHOST comes from (policy/session.py): utmp records as glibc's
pututline writes them (to a file in tmp_path), tied or not to real processes in /proc, and
logind's session files.

logind does not run on this machine (no systemd as PID 1), so its part is tested against
cgroup and session files laid out in tmp_path the way systemd writes them; a real-part test
is impossible here. On a machine without logind the real path is utmp, which the tests in
test_pam_login.py, test_pam_stack.py, test_authd.py and test_ssh_e2e.py (real sshd, su and
sudo) drive through /var/run/utmp.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy.origin import MAX_RECORDS, RECORD, USER_PROCESS, read_utmp, session_source, utmp_source
from support.utmp import DEAD_PROCESS, LOGIN_PROCESS, put_record

NOBODY = 65534


@pytest.fixture
def utmp(tmp_path: Path) -> str:
    path = tmp_path / "utmp"
    path.write_bytes(b"")
    return str(path)


@pytest.fixture
def child() -> Iterator[int]:
    """A process whose parent is this (root) test: the login, for the records below."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def nobodys() -> Iterator[int]:
    """A process that runs as nobody (real uid), as a user's own process would."""
    # Popen returns once the child has exec'd, so its uids are already nobody's.
    proc = subprocess.Popen(["sleep", "60"], user=NOBODY, group=NOBODY, extra_groups=[])
    yield proc.pid
    proc.kill()
    proc.wait()


# -- the file format -----------------------------------------------------------------------

def test_records_written_by_glibc_read_back(utmp):
    before = time.time()
    put_record(USER_PROCESS, 4242, "/dev/pts/7", "2001:db8:ff::2", path=utmp)
    put_record(LOGIN_PROCESS, 77, "tty1", path=utmp)
    put_record(DEAD_PROCESS, 4242, "pts/7", path=utmp)  # the same slot: ut_id "ts/7"
    records = read_utmp(utmp)
    assert os.path.getsize(utmp) == 2 * RECORD.size == 768
    assert [(r.type, r.pid, r.line, r.host) for r in records] == [
        (DEAD_PROCESS, 4242, "pts/7", ""), (LOGIN_PROCESS, 77, "tty1", "")]
    assert all(before - 1 <= r.time <= time.time() + 1 for r in records)


def test_a_partial_record_at_the_end_is_ignored_and_the_read_is_bounded(utmp):
    put_record(USER_PROCESS, 1, "pts/1", "192.0.2.9", path=utmp)
    one = Path(utmp).read_bytes()
    Path(utmp).write_bytes(one * (MAX_RECORDS + 10) + one[:100])
    records = read_utmp(utmp)
    assert len(records) == MAX_RECORDS
    assert {(r.line, r.host) for r in records} == {("pts/1", "192.0.2.9")}


# -- utmp: which record counts --------------------------------------------------------------

HOSTS = [  # (ut_host, address, local, str(source))
    ("198.51.100.2", "198.51.100.2", False, "198.51.100.2"),
    ("2001:db8:ff::2", "2001:db8:ff::2", False, "2001:db8:ff::2"),
    ("::ffff:192.0.2.2", "192.0.2.2", False, "192.0.2.2"),
    ("", None, True, "local"),
    ("gw.example.edu", None, False, "'gw.example.edu'"),   # UseDNS yes: never campus
    (":0", None, False, "':0'"),
]


@pytest.mark.parametrize("host, address, local, shown", HOSTS)
def test_a_record_of_a_root_ancestor_gives_its_host(utmp, child, host, address, local, shown):
    """The shape of sshd's record: USER_PROCESS for a root process the login descends
    from (here this test, the parent of ``child``)."""
    put_record(USER_PROCESS, os.getpid(), "pts/5", host, path=utmp)
    source = utmp_source("/dev/pts/5", child, utmp)
    assert source.address == (ipaddress.ip_address(address) if address else None)
    assert (source.local, str(source), source.via) == (local, shown,
                                                       "utmp record of pts/5"
                                                       + (": no remote host" if local else ""))


def test_a_console_record_carries_the_logins_own_pid(utmp):
    """agetty's LOGIN_PROCESS record, for the pid that becomes login: the caller itself."""
    put_record(LOGIN_PROCESS, os.getpid(), "tty1", path=utmp)
    source = utmp_source("tty1", os.getpid(), utmp)
    assert (source.local, source.via) == (True, "utmp record of tty1: no remote host")


UNTIED = "no utmp record of pts/5 tied to the caller"


def test_a_record_of_a_process_that_is_no_ancestor_is_not_believed(utmp, child):
    put_record(USER_PROCESS, child, "pts/5", "192.0.2.2", path=utmp)
    source = utmp_source("pts/5", os.getpid(), utmp)  # child is not this test's ancestor
    assert (source.address, source.local, source.via) == (None, False, UNTIED)


def test_a_record_of_a_process_that_does_not_run_as_root_is_not_believed(utmp, nobodys):
    """What libutempter writes for a user: the pid of the user's own process."""
    put_record(USER_PROCESS, nobodys, "pts/5", "", path=utmp)
    source = utmp_source("pts/5", nobodys, utmp)
    assert (source.address, source.local, source.via) == (None, False, UNTIED)


def test_a_record_older_than_its_process_is_not_believed(utmp, child):
    """A stale record whose pid a newer process got."""
    put_record(USER_PROCESS, child, "pts/5", "", path=utmp, age=60)
    source = utmp_source("pts/5", child, utmp)
    assert (source.local, source.via) == (False, UNTIED)


def test_only_live_records_of_the_same_terminal_count(utmp, child):
    put_record(USER_PROCESS, os.getpid(), "pts/6", "192.0.2.2", path=utmp)  # another tty
    assert utmp_source("pts/5", child, utmp).via == UNTIED
    put_record(DEAD_PROCESS, os.getpid(), "pts/5", "", path=utmp)           # a logout
    assert utmp_source("pts/5", child, utmp).via == UNTIED
    put_record(USER_PROCESS, os.getpid(), "pts/5", "192.0.2.2", path=utmp)
    assert str(utmp_source("pts/5", child, utmp)) == "192.0.2.2"


@pytest.mark.parametrize("tty, pid, via", [
    (None, 1, "no tty"),
    ("", 1, "no tty"),
    ("/dev/", 1, "no tty"),
    ("pts/5", None, "no calling process"),
])
def test_without_a_tty_or_a_caller_the_source_is_unknown(utmp, tty, pid, via):
    source = session_source(tty, pid, utmp=utmp)
    assert (source.address, source.local, str(source), source.via) == (None, False, "none", via)


def test_anything_unreadable_is_an_unknown_source(tmp_path, utmp, child):
    missing = str(tmp_path / "no-utmp")
    assert session_source("pts/5", child, utmp=missing).via == (
        f"{missing}: No such file or directory")
    put_record(USER_PROCESS, os.getpid(), "pts/5", "", path=utmp)
    gone = 2 ** 22 + 1  # above pid_max: no such process
    assert session_source("pts/5", gone, utmp=utmp).via == (
        f"/proc/{gone}/cgroup: No such file or directory")
    fake = tmp_path / "proc"
    (fake / str(child)).mkdir(parents=True)
    (fake / str(child) / "cgroup").write_text("garbage without colons\n")
    assert session_source("pts/5", child, utmp=utmp, proc=str(fake)).via == (
        "session unreadable (ValueError)")


# -- logind ---------------------------------------------------------------------------------

def logind(tmp_path: Path, cgroup: str, session: str | None = None,
           fields: str | None = None) -> tuple[str, str]:
    """A /proc/4242/cgroup and /run/systemd/sessions/SESSION laid out in tmp_path."""
    proc, sessions = tmp_path / "proc", tmp_path / "sessions"
    (proc / "4242").mkdir(parents=True)
    sessions.mkdir()
    (proc / "4242" / "cgroup").write_text(cgroup)
    if session is not None:
        (sessions / session).write_text("# This is private data. Do not parse.\nUID=1000\n"
                                        "USER=alice\nACTIVE=1\nSTATE=active\n" + fields)
    return str(proc), str(sessions)


SSH_SESSION = "REMOTE=1\nTYPE=tty\nCLASS=user\nTTY=pts/0\nSERVICE=sshd\nLEADER=999\n"
SESSIONS = [  # (id, session file fields, address, local, via)
    ("ssh-off-campus", SSH_SESSION + "REMOTE_HOST=198.51.100.7\n", "198.51.100.7", False,
     "logind session 5"),
    ("ssh-campus-v6", SSH_SESSION + "REMOTE_HOST=2001:db8:c0::7\n", "2001:db8:c0::7", False,
     "logind session 5"),
    ("ssh-hostname", SSH_SESSION + "REMOTE_HOST=gw.example.edu\n", None, False,
     "logind session 5"),
    ("remote-without-host", SSH_SESSION, None, False,
     "logind session 5: remote without a host"),
    ("console", "REMOTE=0\nTYPE=tty\nTTY=tty1\nSEAT=seat0\nSERVICE=login\n", None, True,
     "logind session 5: no remote host"),
    ("graphical", "REMOTE=0\nTYPE=wayland\nSEAT=seat0\nSERVICE=gdm-password\n", None, True,
     "logind session 5: no remote host"),
    ("no-tty-no-seat", "REMOTE=0\nTYPE=unspecified\nCLASS=background\nSERVICE=cron\n", None,
     False, "logind session 5: no remote host, but no tty or seat either"),
    ("no-remote-field", "TYPE=tty\nTTY=tty2\n", None, False,
     "logind session 5: remote without a host"),
]


@pytest.mark.parametrize("fields, address, local, via", [s[1:] for s in SESSIONS],
                         ids=[s[0] for s in SESSIONS])
def test_a_logind_session_gives_its_remote_host(tmp_path, utmp, fields, address, local, via):
    proc, sessions = logind(tmp_path, "0::/user.slice/user-1000.slice/session-5.scope\n",
                            "5", fields)
    source = session_source("pts/0", 4242, utmp=utmp, proc=proc, sessions=sessions)
    assert source.address == (ipaddress.ip_address(address) if address else None)
    assert (source.local, source.via) == (local, via)


def test_cgroup_v1_names_the_session_in_the_systemd_hierarchy(tmp_path, utmp):
    proc, sessions = logind(
        tmp_path, "12:memory:/user.slice\n1:name=systemd:/user.slice/user-0.slice/"
                  "session-c2.scope\n0::/\n", "c2", "REMOTE=1\nREMOTE_HOST=192.0.2.7\n")
    source = session_source(None, 4242, utmp=utmp, proc=proc, sessions=sessions)
    assert (str(source), source.via) == ("192.0.2.7", "logind session c2")


@pytest.mark.parametrize("cgroup", [
    "0::/system.slice/getty@tty1.service\n",         # login before its session exists
    "0::/system.slice/apache2.service\n",            # a web application
    # A user may create cgroups under their own user@.service, named as they like:
    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/session-5.scope\n",
    "0::/user.slice/user-1000.slice/session-5.scope/nested\n",
    "0::/\n",
])
def test_outside_a_logind_session_the_terminal_decides(tmp_path, utmp, cgroup):
    proc, sessions = logind(tmp_path, cgroup, "5", SSH_SESSION + "REMOTE_HOST=192.0.2.7\n")
    source = session_source(None, 4242, utmp=utmp, proc=proc, sessions=sessions)
    assert (source.address, source.local, source.via) == (None, False, "no tty")


def test_a_session_whose_file_is_missing_is_an_unknown_source(tmp_path, utmp):
    proc, sessions = logind(tmp_path, "0::/user.slice/user-1000.slice/session-9.scope\n")
    source = session_source("pts/0", 4242, utmp=utmp, proc=proc, sessions=sessions)
    assert (source.address, source.local) == (None, False)
    assert source.via == f"{sessions}/9: No such file or directory"
