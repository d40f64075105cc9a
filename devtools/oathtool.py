"""TOTP codes from oathtool, an implementation independent of ours (pyotp): what the tests
and the benchmark type where a person would read their phone."""
from __future__ import annotations

import subprocess


def oathtool(secret_b32: str, at: float | None = None, *, digits: int = 6,
             period: int = 30) -> str:
    """The code oathtool computes for ``at`` (default now)."""
    args = ["oathtool", "--totp", "-b", f"--digits={digits}", f"--time-step-size={period}s"]
    if at is not None:
        args += ["-N", f"@{int(at)}"]
    done = subprocess.run([*args, secret_b32], capture_output=True, text=True, check=True,
                          timeout=10)
    return done.stdout.strip()
