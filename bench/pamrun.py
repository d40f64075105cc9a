"""Running pamtester the way the bench times it, and what processes cost: wall time per
process with a watchdog instead of subprocess's polling timeout, CPU from getrusage and
/proc/PID/stat, peak RSS from /usr/bin/time, memory and threads from /proc/PID/status."""
from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

from devtools.pamtester import clean_env, pamtester_args

PAMTESTER_TIMEOUT = 60          # one pamtester process; a hung one counts as a wrong verdict
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- what processes cost ------------------------------------------------------------------

def proc_cpu_ms(pid: int) -> float:
    """User + system CPU of a process so far, all its threads, ended ones included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def children_cpu_ms() -> float:
    """User + system CPU of this process's children that have ended and been waited for
    (the pamtester processes; getrusage, not tick-rounded)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (KB) and Threads of a running process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def tree_cpu_ms(pid: int) -> float:
    """CPU of a process and of its descendants running now (nginx or gunicorn: the
    master and its workers), as proc_cpu_ms counts it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass   # ended meanwhile
    tree, total = [pid], 0.0
    while tree:
        current = tree.pop()
        tree += [child for child, parent in parents.items() if parent == current]
        try:
            total += proc_cpu_ms(current)
        except OSError:
            pass
    return total


def tcp_established() -> list[tuple[int, int, str, str]]:
    """The established TCP connections of this network namespace, each end once: (local
    port, remote port, remote address:port as /proc/net writes it, socket inode)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "01":
                    found.append((int(fields[1].rsplit(":", 1)[1], 16),
                                  int(fields[2].rsplit(":", 1)[1], 16), fields[2], fields[9]))
    return found


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue   # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def cpu_times() -> list[int]:
    """The machine's CPU time so far (/proc/stat ``cpu`` line, in ticks)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def machine_load(start: list[int], end: list[int]) -> str:
    """How busy the CPUs were between two cpu_times(): everyone, this bench included."""
    delta = [b - a for a, b in zip(start, end)]
    total = sum(delta[:8]) or 1       # user nice system idle iowait irq softirq steal
    busy = total - delta[3] - delta[4]
    return f"CPUs busy {100 * busy / total:.0f}% of the run, steal {100 * delta[7] / total:.0f}%"


# -- running pamtester --------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    start: float
    seconds: float
    ok: bool


class Watchdog:
    """Kills a pamtester that runs longer than PAMTESTER_TIMEOUT (it then counts as a wrong
    verdict). Not subprocess's own timeout: with one, Popen.wait polls and sleeps up to
    50 ms between polls, which would round every measured time up to those steps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: dict[subprocess.Popen, float] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def watch(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs[proc] = time.monotonic() + PAMTESTER_TIMEOUT

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.pop(proc, None)

    def _run(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            with self.lock:
                late = [p for p, deadline in self.procs.items() if deadline < now]
            for proc in late:
                proc.kill()


WATCHDOG = Watchdog()


def run_to_end(args: list[str], stdin: str) -> int:
    """Run one process to its end (bounded by the watchdog), in the small environment the
    tests give pamtester too; its exit status."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=clean_env())
    WATCHDOG.watch(proc)
    try:
        proc.communicate(stdin.encode())   # no timeout: waitpid blocks, no polling
    finally:
        WATCHDOG.done(proc)
    return proc.returncode


def pamtester(service: str, user: str, rhost: str, stdin: str = "") -> Run:
    """One timed pamtester process: when it started, its wall time, whether it exited 0."""
    start = time.perf_counter()
    status = run_to_end(pamtester_args(service, user, rhost), stdin)
    return Run(start, time.perf_counter() - start, status == 0)


def pamtester_peak_rss(service: str, user: str, rhost: str, stdin: str = "") -> int:
    """Peak RSS (KB) of one pamtester process, from /usr/bin/time (wait4 here would report
    this process's own peak, which a forked child inherits)."""
    with tempfile.NamedTemporaryFile("r") as out:
        run_to_end(["/usr/bin/time", "-f", "%M", "-o", out.name,
                    *pamtester_args(service, user, rhost)], stdin)
        return int(out.read().split()[-1])


def login_when_asked(service: str, user: str, rhost: str, answer: Callable[[], str]) -> Run:
    """pamtester, typing ``answer()`` only once the prompt is shown, as a person would:
    a code computed before a slow prompt could be out of the window when it is checked."""
    start = time.perf_counter()
    proc = subprocess.Popen(pamtester_args(service, user, rhost), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    WATCHDOG.watch(proc)
    shown = b""
    while not shown.endswith(b": "):
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        shown += chunk
    try:
        proc.stdin.write(answer().encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.stderr.read()
    proc.stderr.close()
    ok = proc.wait() == 0
    WATCHDOG.done(proc)
    return Run(start, time.perf_counter() - start, ok)
