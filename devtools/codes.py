"""TOTP codes the tests and the benchmark type, computed with policy's own rules (pyotp):
the code of now, and a well-formed code that is wrong. Where an implementation
independent of ours matters, type devtools.oathtool's codes instead."""
from __future__ import annotations

import time

from policy.rules.totp import TotpParams, code_at_step, time_step


def code_now(secret: bytes, params: TotpParams = TotpParams()) -> str:
    """The code of the current time step."""
    return code_at_step(secret, time_step(time.time(), params.period), params)


def wrong_code(secret: bytes, params: TotpParams = TotpParams(), spread: int = 3) -> str:
    """A well-formed code that matches no step within ``spread`` steps of now, so that no
    window up to that wide accepts it."""
    now = time_step(time.time(), params.period)
    near = {code_at_step(secret, step, params) for step in range(now - spread, now + spread + 1)}
    return next(code for code in (f"{n:0{params.digits}d}" for n in range(10 ** params.digits))
                if code not in near)
