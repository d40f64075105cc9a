"""The resident authd (policy/authd.py) and its frames (policy/wire.py): who may talk to
it, what happens when it is missing, stale, edited under or killed mid-login, and what a
hostile frame does to it. The login story itself runs through it in test_pam_login.py and
test_pam_stack.py (every test there runs in-process and through the authd)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import textwrap
import time

import pytest

from devtools.authd import AuthdProcess
from devtools.pamtester import AUTH_ERR, CODE_PROMPT, SUCCESS, pamtester_args
from devtools.syslog import audit_pid
from policy.authd.wire import MAX_FRAME, WireError, pack, unpack
from policy.directory.pool import SIZE as POOL_SIZE
from policy.messages import UNAVAILABLE_MESSAGE
from support.pamlab import CAMPUS_ADDRESS, CAMPUS_V4, MODULE, OFF_CAMPUS, PYTHON, ROOT
from support.utmp import LOGIN_PROCESS, record

NOBODY = 65534


def wait_until_idle(authd: AuthdProcess, timeout: float = 15) -> None:
    """Until the authd has accepted every pending connection and every handler thread has
    ended: what it does with a request is done by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{authd.pid}/status", encoding="ascii") as status:
            threads = int(next(line for line in status if line.startswith("Threads:"))
                          .split()[1])
        pending = subprocess.run(["ss", "-xlnH", "src", authd.path], capture_output=True,
                                 text=True, check=True).stdout.split()
        if threads == 1 and pending and pending[2] == "0":  # Recv-Q of a listener: backlog
            return
        time.sleep(0.02)
    raise AssertionError(f"authd {authd.pid} still busy after {timeout} s")


def stack(config: str, authd: str, options: str = "") -> str:
    return (f"auth required pam_python.so {MODULE} config={config} authd={authd} {options}\n"
            "account required pam_permit.so\n")


def exchange(path: str, data: bytes, *, close_write: bool = True) -> bytes:
    """Send raw bytes to the authd as root; everything it answers until it hangs up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


# -- frames ----------------------------------------------------------------------------------

def reader(data: bytes):
    view = memoryview(data)
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = bytes(view[position:position + min(n, 3)])  # short reads, as sockets give
        position += len(chunk)
        return chunk
    return read


@pytest.mark.parametrize("fields", [
    ("login", "/etc/x.toml", "alice", "sshd", None, "/dev/pts/3", "3", "0"),
    ("answer", None), ("answer", ""), ("error", "line one\nline two"),
    ("ask", "Verification code: ", "6"), ("x", "ünïcödé ✓", "\udcff surrogate-escaped byte")])
def test_frames_carry_text_and_none_unchanged(fields):
    assert unpack(reader(pack(*fields))) == list(fields)


def test_two_frames_in_one_stream_stay_apart():
    read = reader(pack("error", "a") + pack("outcome", "success"))
    assert unpack(read) == ["error", "a"]
    assert unpack(read) == ["outcome", "success"]


@pytest.mark.parametrize("data, problem", [
    (b"", "closed"), (b"\x00\x00", "closed"), (b"\x00\x00\x00\x05sab", "closed"),
    ((MAX_FRAME + 1).to_bytes(4, "big") + b"s" * 10, "too long"),
    (b"\x00\x00\x00\x00", "bad field"), (b"\x00\x00\x00\x03xab", "bad field"),
    (b"\x00\x00\x00\x04sa\x00q", "bad field")])
def test_bad_frames_are_refused(data, problem):
    with pytest.raises(WireError, match=problem):
        unpack(reader(data))


def test_a_nul_or_an_oversized_field_is_never_sent():
    with pytest.raises(WireError, match="^a field holds a NUL$"):
        pack("login", "a\0b")
    with pytest.raises(WireError, match="^frame too long$"):
        pack("error", "x" * MAX_FRAME)


# -- the socket and who may use it -----------------------------------------------------------

def test_socket_is_roots_alone_and_a_non_root_peer_gets_no_answer(authd, pam):
    mode = os.stat(authd.path)
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == 0
    # Open the way for nobody (as a mistaken chmod would), and ask as nobody.
    os.chmod(authd.dir, 0o711)
    os.chmod(authd.path, 0o666)
    try:
        request = pack("login", pam.config(), "nobody", "sshd", CAMPUS_ADDRESS, None, "3", "0")
        script = textwrap.dedent(f"""\
            import os, socket, sys
            os.setgid({NOBODY}); os.setuid({NOBODY})
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect({authd.path!r})
            try:
                s.sendall({request!r})
                sys.stdout.write(repr(s.recv(4096)))
            except (BrokenPipeError, ConnectionResetError):  # hung up before or after reading
                sys.stdout.write("hung up")
            """)
        done = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True,
                              timeout=30, check=True)
        assert done.stdout in ("b''", "hung up")  # hung up without a word
    finally:
        os.chmod(authd.path, 0o600)
        os.chmod(authd.dir, 0o700)
    assert pam.syslog.lines == []
    # Root is still answered.
    assert exchange(authd.path, request) == pack("ack") + pack("outcome", "success")


def test_module_never_talks_to_a_socket_that_root_does_not_serve(pam):
    """Someone else's listener at the authd path: the module works alone, sends nothing."""
    sock_dir = tempfile.mkdtemp(prefix="cmfa-fake-", dir="/tmp")  # nobody must reach it
    os.chown(sock_dir, NOBODY, 0)
    path = os.path.join(sock_dir, "authd.sock")
    script = textwrap.dedent(f"""\
        import os, socket, sys
        os.setgid({NOBODY}); os.setuid({NOBODY})
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind({path!r}); os.chmod({path!r}, 0o666); s.listen(5)
        print("ready", flush=True)
        conn, _ = s.accept()
        conn.settimeout(10)
        received = b""
        try:
            while chunk := conn.recv(4096):
                received += chunk
        except OSError:
            pass
        print(len(received), flush=True)
        """)
    fake = subprocess.Popen([PYTHON, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline() == "ready\n"
        service = pam.service(stack=stack(pam.config(), path))
        run = pam.run(service, "anyone", CAMPUS_ADDRESS)
        assert run.verdict == SUCCESS
        assert fake.stdout.readline() == "0\n"  # connected, checked, not one byte sent
    finally:
        fake.kill()
        fake.wait()
        fake.stdout.close()
        shutil.rmtree(sock_dir)
    assert pam.audit()[0]["outcome"] == "success"


def test_without_an_authd_the_module_works_alone(pam, authd, tmp_path):
    user = pam.enrolled()
    service = pam.service(stack=stack(pam.config(), str(tmp_path / "no-authd.sock")))
    run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
    assert run.verdict == SUCCESS and run.prompts == 1
    line = pam.syslog.wait_for(1)[0]
    assert audit_pid(line) not in (None, authd.pid)


# -- lifecycle -------------------------------------------------------------------------------

def test_a_stale_socket_is_replaced_and_anything_else_is_left_alone(tmp_path):
    path = "/tmp/cmfa-stale-test.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a killed authd leaves
    replacement = AuthdProcess(path)  # raises unless it says it listens there
    try:
        assert exchange(path, pack("outcome", "x")) == b""  # and it is the one answering
    finally:
        assert replacement.stop() == 0
    assert not os.path.exists(path)
    ordinary = tmp_path / "not-a-socket"
    ordinary.write_text("keep me")
    done = subprocess.run([PYTHON, "-m", "policy.authd", "--socket", str(ordinary)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"{ordinary} exists and is not a socket" in done.stderr
    assert ordinary.read_text() == "keep me"


def test_a_second_authd_leaves_a_live_one_alone(authd, pam):
    done = subprocess.run([PYTHON, "-m", "policy.authd", "--socket", authd.path], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"another authd answers on {authd.path}" in done.stderr
    service = pam.service(stack=stack(pam.config(), authd.path))
    assert pam.run(service, "anyone", CAMPUS_ADDRESS).verdict == SUCCESS
    assert audit_pid(pam.syslog.wait_for(1)[0]) == authd.pid  # the first one still answers


def test_sigterm_stops_the_authd_and_removes_its_socket():
    own = AuthdProcess()
    assert os.path.exists(own.path)
    path = own.path
    assert own.stop() == 0
    assert not os.path.exists(path)


def test_a_stopped_authd_delays_a_login_by_seconds_then_the_module_works_alone(pam):
    own = AuthdProcess()
    try:
        service = pam.service(stack=stack(pam.config(), own.path))
        own.proc.send_signal(signal.SIGSTOP)  # alive, listening, never answering
        run = pam.run(service, "anyone", CAMPUS_ADDRESS)
        assert run.verdict == SUCCESS and run.stderr == ""
        assert 4.5 < run.elapsed < 20  # the module's ACK_TIMEOUT (5 s), then its own work
        assert audit_pid(pam.syslog.wait_for(1)[0]) not in (None, own.pid)
        own.proc.send_signal(signal.SIGCONT)
        wait_until_idle(own)  # it reads the abandoned request, and must not act on it
        assert len(pam.syslog.lines) == 1
        assert pam.run(service, "anyone", CAMPUS_ADDRESS).verdict == SUCCESS
        assert audit_pid(pam.syslog.wait_for(2)[1]) == own.pid  # and it serves again
    finally:
        own.proc.send_signal(signal.SIGCONT)
        assert own.stop() == 0


def test_a_config_edit_counts_from_the_next_login(pam, authd):
    user = pam.enrolled()
    config = pam.config()
    service = pam.service(stack=stack(config, authd.path))
    assert pam.run(service, user.uid, CAMPUS_ADDRESS).prompts == 0
    with open(config, encoding="utf-8") as source:
        text = source.read()
    assert text.count(f'"{CAMPUS_V4}"') == 1
    with open(config, "w", encoding="utf-8") as out:  # 192.0.2.0/24 is campus no more
        out.write(text.replace(f'"{CAMPUS_V4}"', '"203.0.113.0/24"'))
    run = pam.run(service, user.uid, CAMPUS_ADDRESS, [user.code()])
    assert run.verdict == SUCCESS and run.prompts == 1
    assert [audit_pid(line) for line in pam.syslog.wait_for(2)] == [authd.pid, authd.pid]


def test_a_config_error_is_met_by_the_module_itself(pam, authd):
    config = pam.config()
    with open(config, "a", encoding="utf-8") as out:
        out.write("[policy]\nbogus = 1\n")  # a duplicate table: not TOML
    service = pam.service(stack=stack(config, authd.path, f"syslog_socket={pam.syslog.path}"))
    run = pam.run(service, "anyone", CAMPUS_ADDRESS)
    assert run.verdict == AUTH_ERR
    assert run.stderr == UNAVAILABLE_MESSAGE + "\n" + AUTH_ERR + "\n"
    # The authd said "retry"; the module read the file itself and wrote the line to the
    # option's socket (the config's being unreadable), as it does without an authd.
    lines = pam.syslog.wait_for(1)
    assert len(lines) == 1 and audit_pid(lines[0]) not in (None, authd.pid)
    assert pam.audit()[0]["reason"].startswith(f"configuration error: {config}: ")


def test_a_secret_file_error_is_met_by_the_module_itself(pam):
    """The config parses, but the bind password file it names may not be used: the
    authd says "retry" before anything reached the user, reports no internal error, and
    the module writes the line that names the file."""
    user = pam.enrolled()
    loose = pam.tmp_path / "loose.secret"
    loose.write_text(pam.slapd.secret("ldap.secret") + "\n")
    loose.chmod(0o644)
    own = AuthdProcess()
    try:
        service = pam.service(stack=stack(pam.config(ldap={"bind_password_file": str(loose)}),
                                          own.path))
        run = pam.run(service, user.uid, OFF_CAMPUS, [user.code()])
        assert run.verdict == AUTH_ERR and run.prompts == 0
        line = pam.syslog.wait_for(1)[0]
        assert audit_pid(line) not in (None, own.pid)
        assert pam.audit()[0]["reason"] == (
            f"configuration error: ldap.bind_password_file = '{loose}': is readable by "
            "others (mode 0644); chmod 0640 or 0600")
    finally:
        assert own.stop() == 0
    assert own.reports == []


def test_an_authd_killed_mid_conversation_fails_the_login_closed(pam):
    """The module never loaded the config (the authd did the work), so its line goes to
    syslog_socket=, as for any login the module refuses on its own."""
    user = pam.enrolled()
    own = AuthdProcess()
    try:
        service = pam.service(stack=stack(pam.config(), own.path,
                                          f"syslog_socket={pam.syslog.path}"))
        proc = subprocess.Popen(pamtester_args(service, user.uid, OFF_CAMPUS),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        shown = b""
        while not shown.endswith(CODE_PROMPT.encode()):
            chunk = proc.stderr.read1(4096)
            assert chunk, shown
            shown += chunk
        own.proc.kill()
        own.proc.wait()
        code = user.code()
        pam.secret_values.add(code)
        out, err = proc.communicate(code.encode() + b"\n", timeout=30)
    finally:
        own.stop()
    assert proc.returncode > 0  # refused, not killed by SIGPIPE
    assert err.decode() == UNAVAILABLE_MESSAGE + "\n" + AUTH_ERR + "\n"
    line = pam.audit()[0]
    assert line["outcome"] == "failure"
    assert re.fullmatch(r"authd: (WireError|BrokenPipeError) mid-conversation",
                        line["reason"])
    assert audit_pid(pam.syslog.lines[0]) not in (None, own.pid)  # written by the module itself
    assert pam.token(user.token_dn)["last_step"] == 0  # the code was never used


def test_an_exception_in_a_login_is_reported_by_type_and_place_only(pam, monkeypatch,
                                                                      capsys):
    """In-process authd (so that login can be made to raise): no message, no value."""
    import threading

    import policy.authd.server

    def exploding_login(config, user, rhost, service, conversation, **kwargs):
        raise KeyError("secret JBSWY3DPEHPK3PXP and code 246810")

    monkeypatch.setattr(policy.authd.server, "login", exploding_login)
    sock_dir = tempfile.mkdtemp(prefix="cmfa-authd-", dir="/tmp")
    server = policy.authd.server.Server(os.path.join(sock_dir, "authd.sock"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request = pack("login", pam.config(), "alice", "sshd", CAMPUS_ADDRESS, None, "3", "0")
        assert exchange(server.path, request) == pack("ack")  # then it hung up
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        shutil.rmtree(sock_dir)
    err = capsys.readouterr().err
    assert re.fullmatch(r"campus-mfa-authd: internal error: KeyError at tests/test_authd\.py:"
                        r"\d+ <- policy/authd/server\.py:\d+ <- socketserver\.py:\d+ .*\n",
                        err), err
    assert "JBSWY3DP" not in err and "246810" not in err


# -- hostile frames --------------------------------------------------------------------------

HOSTILE = [
    b"GET / HTTP/1.0\r\n\r\n",
    b"\xff\xff\xff\xff" + b"s" * 64,
    (MAX_FRAME + 1).to_bytes(4, "big"),
    b"\x00\x00\x00\x10",                                    # a length, then nothing
    pack("login"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "3"),   # a field short
    pack("login", "/etc/x.toml", "u", "sshd", None, "3", "0"),    # the format without TTY
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "3", "0", "extra"),
    pack("login", "relative.toml", "u", "sshd", None, None, "3", "0"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "0", "0"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "11", "0"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "\u0663", "0"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, "3", "yes"),
    pack("login", "/etc/x.toml", "u", "sshd", None, None, None, "0"),
    pack("login", None, "u", "sshd", None, None, "3", "0"),
    pack("login", "/etc/x.toml", None, "sshd", None, None, "3", "0"),
    pack("outcome", "success"),
    pack("answer", "123456"),
]


def test_hostile_frames_get_no_answer_and_the_authd_keeps_serving(pam, authd):
    for data in HOSTILE:
        assert exchange(authd.path, data) == b"", data
    # A frame that stops half-way, with the connection left open: the authd waits for
    # the rest (bounded by its idle timeout) and serves others meanwhile.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
        held.connect(authd.path)
        held.sendall(b"\x00\x00\x01\x00s")
        service = pam.service(stack=stack(pam.config(), authd.path))
        run = pam.run(service, "anyone", CAMPUS_ADDRESS)
        assert run.verdict == SUCCESS
    assert audit_pid(pam.syslog.wait_for(1)[0]) == authd.pid
    assert authd.proc.poll() is None


def test_a_wrong_reply_to_a_prompt_ends_the_login_without_a_verdict(pam, authd):
    user = pam.enrolled()
    request = pack("login", pam.config(), user.uid, "sshd", OFF_CAMPUS, None, "3", "0")
    answer = exchange(authd.path, request + pack("outcome", "success"))
    assert answer == pack("ack") + pack("ask", CODE_PROMPT, "6")  # asked, then hung up on
    wait_until_idle(authd)  # the login has ended in the authd
    assert pam.token(user.token_dn)["failures"] == 0


def directory_connections(port: int) -> int:
    """Established TCP connections to the slapd listening on ``port`` (its side of them)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                count += state == "01" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def test_logins_left_at_the_prompt_hold_no_directory_connection(pam, authd):
    """A person may take minutes to type a code (authd waits up to 300 s): 100 logins
    left at "Verification code: " must not hold 100 of slapd's connections, and a login
    that comes meanwhile still gets through."""
    user = pam.enrolled()
    port = pam.slapd.port
    service = pam.service(stack=stack(pam.config(), authd.path))
    before = directory_connections(port)
    waiting = [subprocess.Popen(pamtester_args(service, user.uid, OFF_CAMPUS),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for _ in range(100)]
    try:
        for process in waiting:  # each has read the user's state and shows the prompt
            assert process.stderr.read(len(CODE_PROMPT)) == CODE_PROMPT.encode()
        # No more than the pool keeps idle for the next logins (policy/directory/pool.py).
        assert directory_connections(port) <= before + POOL_SIZE
        code = user.code()
        late = pam.run(service, user.uid, OFF_CAMPUS, [code])
        assert late.verdict == SUCCESS
    finally:
        for process in waiting:
            process.stdin.close()  # end of input at the prompt: no code entered
        statuses = [process.wait(timeout=60) for process in waiting]
        for process in waiting:
            process.stderr.close()
    assert statuses == [1] * 100  # pamtester: authentication failure
    lines = pam.audit(101)
    assert len(lines) == 101
    assert sorted(line["outcome"] for line in lines) == ["failure"] * 100 + ["success"]
    assert sum(line["reason"].endswith("; no code entered") for line in lines) == 100


# -- a login without RHOST: the session of the peer ------------------------------------------

def test_a_login_without_rhost_takes_the_session_of_the_peer(pam, authd, utmp):
    """The authd ties the terminal's utmp record to the process at the other end of the
    socket (SO_PEERCRED): here this test, which writes a console record for its own pid
    and one for a root process that is not its ancestor. The request names no pid."""
    user = pam.enrolled()
    config = pam.config()
    stranger = subprocess.Popen(["sleep", "60"])
    own, other = f"cmfa{os.getpid()}a", f"cmfa{os.getpid()}b"  # terminal names (ut_line)
    try:
        with record(LOGIN_PROCESS, os.getpid(), own), record(LOGIN_PROCESS, stranger.pid, other):
            local = exchange(authd.path, pack("login", config, user.uid, "su", "", own, "3", "0"))
            foreign = exchange(authd.path,
                               pack("login", config, user.uid, "su", None, other, "3", "0"))
    finally:
        stranger.kill()
        stranger.wait()
    assert local == pack("ack") + pack("outcome", "success")
    assert foreign == pack("ack") + pack("ask", CODE_PROMPT, "6")  # then hung up on
    lines = pam.audit()
    assert audit_pid(pam.syslog.lines[0]) == authd.pid
    assert lines[0] == {"user": user.uid, "service": "su", "source": "local",
                        "outcome": "success",
                        "reason": f"local login (utmp record of {own}: no remote host)"}
