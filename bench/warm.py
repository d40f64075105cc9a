"""Section 4: warm verifications/s in this process over one reused connection, and what
one LDAP search and one modify cost over one reused connection with ldap3 (what policy/
uses) and with python-ldap (a C binding to libldap), to explain the ceiling.

Every verification is a real accept: each call uses the next time step (its ``now``
advances one period per call), so the replay guard and the compare-and-swap writes run."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import ldap3

from policy.directory.entries import TOKEN_ATTRS, gentime
from policy.directory.service import ServiceDirectory
from policy.rules.totp import code_at_step, matching_step, time_step
from policy.rules.verify import verify_code
from policy.secret_file import read_secret_file

from .fixture import PARAMS, Fixture, User
from .pamrun import proc_cpu_ms

WARM_VERIFICATIONS = 3000
LDAP_OPS = 1000                 # per operation and client in the per-operation breakdown
LDAP_BLOCKS = 5                 # ... in blocks, the clients alternating
WARM_VERIFY = "verify_code (count-attempt CAS modify + HMAC window + success CAS modify)"
WARM_READ_VERIFY = "read_token + verify_code (2 searches + 2 modifies)"
WARM_HMAC = "matching_step alone (HMAC window, no directory)"


@dataclass(frozen=True)
class Warm:
    rate: float          # calls per second
    cpu_ms: float        # this process's CPU per call
    slapd_cpu_ms: float  # slapd's CPU per call


def warm_verifications(fx: Fixture, user: User) -> dict[str, Warm]:
    """verify_code alone, read_token + verify_code, and the HMAC window alone, each
    WARM_VERIFICATIONS times; wall rate, this process's and slapd's CPU per call."""
    fx.reset(user)
    base = time.time()
    nows = [base + PARAMS.period * (k + 1) for k in range(2 * WARM_VERIFICATIONS)]
    codes = [code_at_step(user.secret, time_step(now, PARAMS.period), PARAMS) for now in nows]
    totp = fx.config.totp
    out = {}

    def timed(name: str, loop: Callable[[], None]) -> None:
        slapd, cpu, wall = proc_cpu_ms(fx.ldap.pid), time.process_time(), time.perf_counter()
        loop()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[name] = Warm(WARM_VERIFICATIONS / wall, cpu / WARM_VERIFICATIONS * 1000,
                         (proc_cpu_ms(fx.ldap.pid) - slapd) / WARM_VERIFICATIONS)

    with ServiceDirectory(fx.config.ldap) as directory:
        token = directory.read_token(user.token_dn)   # connect and bind once

        def verify_only() -> None:
            nonlocal token
            for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
                if not verify_code(directory, token, code, now, totp).accepted:
                    raise RuntimeError("warm verification refused")
                token = replace(token, last_step=time_step(now, PARAMS.period))

        def read_and_verify() -> None:
            for now, code in zip(nows[WARM_VERIFICATIONS:], codes[WARM_VERIFICATIONS:]):
                fresh = directory.read_token(user.token_dn)
                if not verify_code(directory, fresh, code, now, totp).accepted:
                    raise RuntimeError("warm verification refused")
        timed(WARM_VERIFY, verify_only)
        timed(WARM_READ_VERIFY, read_and_verify)

    def hmac_only() -> None:
        for now, code in zip(nows[:WARM_VERIFICATIONS], codes):
            matching_step(user.secret, code, PARAMS, now)
    timed(WARM_HMAC, hmac_only)
    fx.reset(user)
    return out


@dataclass
class OpCost:
    """One LDAP operation, over one reused connection, LDAP_OPS times."""
    client: str
    op: str
    count: int = 0
    wall: float = 0.0        # seconds, all counted operations
    cpu: float = 0.0         # this process's CPU seconds (user + system)
    slapd_cpu: float = 0.0   # slapd's CPU seconds meanwhile

    def per_op_ms(self, what: str) -> float:
        return getattr(self, what) / self.count * 1000


def ldap_op_costs(fx: Fixture, user: User, other: User) -> list[OpCost]:
    """A base search of the token entry (what read_token does, twice) and a compare-and-
    swap modify shaped like record_success (delete the last step, add the next, two
    replaces), as the service DN over one connection, with ldap3 (the connection
    policy.directory opens) and with python-ldap (libldap), in alternating blocks; in the
    same blocks, policy's verify_code over that ldap3 connection, on ``other``'s token (the
    modifies above change ``user``'s last step), so that the two compare under the same
    load."""
    import ldap   # python-ldap: a measurement only, policy/ uses ldap3

    cfg = fx.config.ldap
    dn = user.token_dn
    fx.reset(user)
    fx.reset(other)
    directory = ServiceDirectory(cfg)
    l3 = directory.conn                                   # open + bind, as in production
    token = directory.read_token(other.token_dn)
    clock = [time.time()]
    pl = ldap.initialize(cfg.uris[0])
    pl.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    pl.set_option(ldap.OPT_NETWORK_TIMEOUT, cfg.timeout)
    pl.set_option(ldap.OPT_TIMEOUT, cfg.timeout)
    pl.simple_bind_s(cfg.bind_dn, read_secret_file(cfg.bind_password_file, "bind"))
    step = [0]

    def next_step() -> tuple[str, str, str]:
        step[0] += 1
        return str(step[0] - 1), str(step[0]), gentime(time.time())

    def l3_search() -> None:
        l3.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=TOKEN_ATTRS)
        if len(l3.response) != 1:
            raise RuntimeError("ldap3 search found no token")

    def l3_modify() -> None:
        old, new, when = next_step()
        l3.modify(dn, {"oathTOTPLastTimeStep": [(ldap3.MODIFY_DELETE, [old]),
                                                (ldap3.MODIFY_ADD, [new])],
                       "oathFailureCount": [(ldap3.MODIFY_REPLACE, ["0"])],
                       "oathLastLogin": [(ldap3.MODIFY_REPLACE, [when])]})

    def pl_search() -> None:
        if len(pl.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", TOKEN_ATTRS)) != 1:
            raise RuntimeError("python-ldap search found no token")

    def pl_modify() -> None:
        old, new, when = (v.encode() for v in next_step())
        pl.modify_s(dn, [(ldap.MOD_DELETE, "oathTOTPLastTimeStep", [old]),
                         (ldap.MOD_ADD, "oathTOTPLastTimeStep", [new]),
                         (ldap.MOD_REPLACE, "oathFailureCount", [b"0"]),
                         (ldap.MOD_REPLACE, "oathLastLogin", [when])])

    def policy_verify() -> None:
        nonlocal token
        clock[0] += PARAMS.period                         # the next step: a real accept
        step_now = time_step(clock[0], PARAMS.period)
        code = code_at_step(other.secret, step_now, PARAMS)
        if not verify_code(directory, token, code, clock[0], fx.config.totp).accepted:
            raise RuntimeError("verify_code refused in the per-operation blocks")
        token = replace(token, last_step=step_now)

    costs = [(OpCost("policy (ldap3)", "verify_code"), policy_verify),
             (OpCost("ldap3", "search"), l3_search),
             (OpCost("python-ldap", "search"), pl_search),
             (OpCost("ldap3", "modify"), l3_modify),
             (OpCost("python-ldap", "modify"), pl_modify)]
    try:
        for _, run in costs:      # warm both connections and code paths
            for _ in range(20):
                run()
        per_block = LDAP_OPS // LDAP_BLOCKS
        for block in range(LDAP_BLOCKS):
            for cost, run in (reversed(costs) if block % 2 else costs):
                slapd0, cpu0, wall0 = proc_cpu_ms(fx.ldap.pid), time.process_time(), \
                    time.perf_counter()
                for _ in range(per_block):
                    run()
                cost.wall += time.perf_counter() - wall0
                cost.cpu += time.process_time() - cpu0
                cost.slapd_cpu += (proc_cpu_ms(fx.ldap.pid) - slapd0) / 1000
                cost.count += per_block
    finally:
        pl.unbind_s()
        directory.close()
        fx.reset(user)
        fx.reset(other)
    return [cost for cost, _ in costs]


@dataclass(frozen=True)
class Ceilings:
    """What the measured per-operation costs allow one connection, one call at a time: a
    verification is ``searches`` searches + ``modifies`` modifies + the HMAC window."""
    ops: list[OpCost]
    hmac_ms: float

    def cost(self, client: str, op: str) -> OpCost:
        return next(o for o in self.ops if (o.client, o.op) == (client, op))

    def ms(self, client: str, searches: int, modifies: int, what: str = "wall") -> float:
        return (searches * self.cost(client, "search").per_op_ms(what)
                + modifies * self.cost(client, "modify").per_op_ms(what) + self.hmac_ms)

    def serial(self, client: str) -> float:
        """Accepting verifications per second: two modifies and the HMAC window."""
        return 1000 / self.ms(client, 0, 2)
