"""The network lab of the tests that need more than loopback (the site behind nginx, sshd):
a server and two client network namespaces, joined by veth pairs, with documentation
addresses. Nothing is added to the root namespace.

    campus client ns            server ns                         off-campus client ns
    192.0.2.2/24       <-veth-> 192.0.2.1/24      198.51.100.1/24 <-veth-> 198.51.100.2/24
    2001:db8:c0::2/64           2001:db8:c0::1/64 2001:db8:ff::1/64        2001:db8:ff::2/64

The off-campus client also reaches the server's campus-side addresses (192.0.2.1,
2001:db8:c0::1) through host routes via the server side of its own link, so both clients
can connect to one address and be told apart by theirs.

A thread enters a namespace with ``entered(netns)``; everything it starts there and every
socket it opens stays in that namespace for its whole life. Names (namespaces, interfaces,
work directories under /tmp, the PAM services and accounts of the ssh lab) carry the PID of
the test process, ``cmt<PID>``, so parallel runs never collide and ``remove_stale`` can
clean up after a run that was killed.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.commands import run

PID = os.getpid()
PREFIX = f"cmt{PID}"
STALE = re.compile(r"^cmt(\d+)")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

# (side, family) -> address: the server's on each link, and each client's.
SERVER = {("campus", "v4"): "192.0.2.1", ("campus", "v6"): "2001:db8:c0::1",
          ("off", "v4"): "198.51.100.1", ("off", "v6"): "2001:db8:ff::1"}
CLIENT = {("campus", "v4"): "192.0.2.2", ("campus", "v6"): "2001:db8:c0::2",
          ("off", "v4"): "198.51.100.2", ("off", "v6"): "2001:db8:ff::2"}
CAMPUS_NETWORKS = ("192.0.2.0/24", "2001:db8:c0::/48")
_LINKS = {"campus": ("192.0.2", "2001:db8:c0::"), "off": ("198.51.100", "2001:db8:ff::")}


@dataclass(frozen=True)
class Lab:
    """The three namespaces' names; ``clients`` maps "campus" / "off" to one."""

    server: str
    clients: dict[str, str]


@contextmanager
def lab(tag: str = "") -> Iterator[Lab]:
    """The namespaces and links of the picture above; removed afterwards. Labs with
    different ``tag`` letters are apart (each server has the same addresses)."""
    remove_stale()
    names = {"server": f"{PREFIX}{tag}s", "campus": f"{PREFIX}{tag}c",
             "off": f"{PREFIX}{tag}o"}
    made: list[str] = []
    try:
        for name in names.values():
            run("ip", "netns", "add", name)
            made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        server = names["server"]
        for side, (v4, v6) in _LINKS.items():
            client = names[side]
            here, there = f"{PREFIX}{tag}{side[0]}0", f"{PREFIX}{tag}{side[0]}1"
            run("ip", "link", "add", here, "netns", server, "type", "veth",
                "peer", "name", there, "netns", client)
            for ns, dev, host in ((server, here, "1"), (client, there, "2")):
                run("ip", "-n", ns, "addr", "add", f"{v4}.{host}/24", "dev", dev)
                run("ip", "-n", ns, "-6", "addr", "add", f"{v6}{host}/64", "dev", dev, "nodad")
                run("ip", "-n", ns, "link", "set", dev, "up")
        off = names["off"]
        run("ip", "-n", off, "route", "add", f"{SERVER['campus', 'v4']}/32",
            "via", SERVER["off", "v4"])
        run("ip", "-n", off, "-6", "route", "add", f"{SERVER['campus', 'v6']}/128",
            "via", SERVER["off", "v6"])
        yield Lab(server=server, clients={"campus": names["campus"], "off": off})
    finally:
        for name in reversed(made):
            _kill_all_in(name)  # a leftover of a failed test, never one that ended cleanly
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the with-block with the calling thread in ``netns``, then switch it back.
    Processes started and sockets opened inside stay in ``netns`` for their whole life."""
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target, netns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved, "back to the namespace the thread came from")
    finally:
        os.close(saved)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {what}")


def work_dir(tag: str) -> Path:
    """A directory under /tmp (not pytest's 0700 tree: nginx's workers run as www-data and
    sshd checks the modes up to /), named for remove_stale."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{tag}-"))
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(name: str) -> bool:
    """Whether ``name`` was made by a run whose process has ended."""
    match = STALE.match(name)
    return match is not None and not alive(int(match.group(1)))


def remove_stale() -> None:
    """What a killed earlier run left behind, found by its dead PID: the processes still
    running in its namespaces (nginx, chromium, sshd) or started on its work directories (a
    backend such as gunicorn), the namespaces and the work directories."""
    work = re.compile(re.escape(tempfile.gettempdir()) + r"/(cmt\d+)-")
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        match = work.search(cmdline)
        if proc.name.isdigit() and match and stale(match.group(1)):
            _kill(int(proc.name))
    for name in run("ip", "netns", "list").split():
        if stale(name):
            _kill_all_in(name)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    for path in Path(tempfile.gettempdir()).glob("cmt*-*"):
        if stale(path.name):
            shutil.rmtree(path, ignore_errors=True)


def _kill_all_in(netns: str) -> None:
    for pid in run("ip", "netns", "pids", netns).split():
        _kill(int(pid))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
