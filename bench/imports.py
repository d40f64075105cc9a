"""Section 2: where the time goes. ``-X importtime`` and cProfile of bench/login_once.py
(one login in a fresh process, in-process or the module's side of a via-authd one), and
what importing one module costs in a fresh interpreter."""
from __future__ import annotations

import re
import statistics
import subprocess

from .fixture import OFF, PY, ROOT, Fixture, User

IMPORT_RUNS = 7
LOGIN_ONCE = str(ROOT / "bench" / "login_once.py")
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")
MARK = "bench: imports start here\n"   # login_once.py prints it before the login


def import_times(fx: Fixture, user: User, rhost: str,
                 authd: str | None = None) -> tuple[float, list[tuple[str, int, float, float]]]:
    """Median over runs: total import time after the mark, and the heaviest imports
    (name, depth, cumulative ms, self ms). ``authd``: the module's side of a login that
    the authd at that socket runs."""
    via = ["--authd", authd] if authd else []
    totals, per_module = [], {}
    for _ in range(IMPORT_RUNS):
        done = subprocess.run([PY, "-I", "-X", "importtime", LOGIN_ONCE, *via,
                               fx.config_path, user.uid, rhost, fx.fresh_code(user)],
                              capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"login_once failed:\n{done.stderr[-2000:]}")
        total = 0
        for line in done.stderr.split(MARK, 1)[1].splitlines():
            m = IMPORT_LINE.match(line)
            if not m:
                continue
            self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
            total += self_us
            per_module.setdefault((name, indent // 2), []).append((cum_us, self_us))
        totals.append(total / 1000)
    rows = [(name, depth, statistics.median(c for c, _ in v) / 1000,
             statistics.median(s for _, s in v) / 1000)
            for (name, depth), v in per_module.items()]
    rows.sort(key=lambda r: -r[2])
    return statistics.median(totals), rows


def profile(fx: Fixture, user: User) -> str:
    """cProfile of one in-process off-campus login, the top of it, paths shortened."""
    done = subprocess.run([PY, "-I", LOGIN_ONCE, "--profile", fx.config_path, user.uid, OFF,
                           fx.fresh_code(user)],
                          capture_output=True, text=True, check=True, timeout=60)
    text = done.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(text) if "function calls" in line)
    noise = ("<frozen importlib", "builtins.exec", "List reduced")
    kept = [line.rstrip().replace(str(ROOT) + "/", "")
            .replace("/usr/lib/python3/dist-packages/", "").replace("/usr/lib/python3.11/", "")
            for line in text[start:] if not any(n in line for n in noise)]
    return "\n".join(kept[:30])


def import_ms(name: str) -> float:
    """What ``import name`` costs in a fresh interpreter (cumulative, median of runs)."""
    times = []
    for _ in range(IMPORT_RUNS):
        done = subprocess.run([PY, "-I", "-X", "importtime", "-c", f"import {name}"],
                              capture_output=True, text=True, check=True, timeout=60)
        for line in done.stderr.splitlines():
            m = IMPORT_LINE.match(line)
            if m and m[4] == name and not m[3]:
                times.append(int(m[2]) / 1000)
    return statistics.median(times)
