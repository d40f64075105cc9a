"""The report's measured sections (1 to 5) in markdown, each from what its module measured."""
from __future__ import annotations

import os
import statistics

from .authd_cost import IN_PROCESS, SPACING, TARGET_MS, Batch, InProcess
from .concurrency import WRONG_EVERY, Level
from .enrollment_site import WRK, Page
from .imports import IMPORT_RUNS
from .logins import AUTHD_CAMPUS, AUTHD_OFF, IN_CAMPUS, IN_OFF, PYTHON_FLOOR, ROUNDS, \
    RSS_RUNS, WholeProcess
from .warm import LDAP_BLOCKS, LDAP_OPS, WARM_HMAC, WARM_READ_VERIFY, WARM_VERIFICATIONS, \
    Ceilings, OpCost, Warm


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def logins(whole: WholeProcess, authd_pid: int, authd_end: dict[str, int],
           via_authd_logins: int, n_top: int) -> list[str]:
    floor = whole.floor_ms()
    out = ["## 1. One login, whole pamtester process\n",
           "| variant | median ms | p25-p75 ms | x empty pam_python | CPU ms (pamtester) | "
           "authd CPU ms | peak RSS MB (pamtester) | verdicts right |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in whole.variants:
        q1, q3 = v.quartiles_ms()
        authd_cpu = f"{statistics.mean(v.authd_cpu_ms):.1f}" if v.via_authd else "-"
        out.append(f"| {v.name} | {v.median_ms():.1f} | {q1:.1f}-{q3:.1f} | "
                   f"{v.median_ms() / floor:.2f} | {statistics.median(v.cpu_ms):.1f} | "
                   f"{authd_cpu} | {mb(statistics.median(v.rss_kb))} | "
                   f"{sum(x.ok for x in v.runs)}/{len(v.runs)} |")
    h1, h3 = whole.authd_after, authd_end
    out.append(f"\nTargets: campus <= 1.2x, off campus <= 2x the empty pam_python module. "
               f"The chart is bench/out/logins.png. CPU ms (pamtester): "
               f"user + system time of each timed pamtester process (getrusage of this "
               f"process's children), median. Authd CPU ms: the authd process's user + "
               f"system time during each timed via-authd login (/proc/PID/stat, which counts "
               f"in 10 ms units), mean of {ROUNDS}; it is not in the pamtester columns. Peak "
               f"RSS: median of {RSS_RUNS} more runs under /usr/bin/time.\n")
    out.append(f"**The authd's own memory** (pid {authd_pid}; the via-authd pamtester "
               f"RSS above does not include ldap3 or the parsed configuration, this process "
               f"holds them once for all logins): after section 1 ({via_authd_logins} "
               f"via-authd logins, one at a time) VmRSS {mb(h1['VmRSS'])} MB, VmHWM (peak) "
               f"{mb(h1['VmHWM'])} MB, {h1['Threads']} threads; at the end of the run, after "
               f"section 3's N = {n_top} parallel logins, VmRSS {mb(h3['VmRSS'])} MB, VmHWM "
               f"{mb(h3['VmHWM'])} MB, {h3['Threads']} threads. The empty pam_python "
               f"pamtester peaks at "
               f"{mb(statistics.median(whole.by_name()[PYTHON_FLOOR].rss_kb))} MB.\n")
    return out


def authd_cost(batches: list[Batch], inproc: InProcess, ops: list[OpCost]) -> list[str]:
    """The authd's CPU per login over whole batches (issue 14's target), and where an
    off-campus login's CPU goes."""
    out = ["### The authd's CPU per login, over batches of logins\n",
           "| logins, via the authd | n | right | authd CPU ms per login | resolution ms | "
           "login ms (pamtester, mean) | authd's connections to slapd before/after |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {b.name} | {b.logins} | {b.right}/{b.logins} | **{b.per_login_ms():.2f}** | "
            f"{b.resolution_ms():.2f} | {1000 * b.wall_s / b.logins:.1f} | "
            f"{b.conns[0]}/{b.conns[1]} |" for b in batches]
    return out + [f"\nAfter section 1 (the authd started long before, its pool filled), "
                  f"one pamtester after the other; the authd's user + system time "
                  f"(/proc/PID/stat) before and after each batch, divided by its logins; "
                  f"/proc counts in 10 ms units, hence the resolution. An off-campus login "
                  f"borrows a bound connection from the pool (policy/directory/pool.py): "
                  f"back to back it was used a moment ago; {SPACING:.1f} s apart it sat "
                  f"idle, as on a quiet server (a login reads before it writes: a dead "
                  f"connection would show on the read, which is tried once more on a fresh "
                  f"one). Target (issue 14): at most {TARGET_MS:.0f} ms per off-campus "
                  f"login.\n"] + where_login_cpu_goes(batches, inproc, ops)


def where_login_cpu_goes(batches: list[Batch], inproc: InProcess, ops: list[OpCost]
                         ) -> list[str]:
    """The in-process login's CPU and LDAP operations, priced with section 4's ldap3."""
    cost = {o.op: o.per_op_ms("cpu") for o in ops if o.client == "ldap3"}
    made = ", ".join(f"{n:g} {m}" for m, n in inproc.ops.items() if n)
    priced = sum(n * cost[m] for m, n in inproc.ops.items() if m in cost)
    unpriced = [m for m, n in inproc.ops.items() if n and m not in cost]
    return [f"**Where an off-campus login's CPU goes.** The same login in the bench's own "
            f"process (policy.login.login with a pool, the code typed by a script; "
            f"{IN_PROCESS} logins, thread_time): {inproc.cpu_ms:.2f} ms of CPU each. Per "
            f"login it makes {made} LDAP operations (counted at ldap3's Connection). "
            f"ldap3's own CPU per search and per modify in section 4 "
            f"({cost.get('search', 0):.3f} and {cost.get('modify', 0):.3f} ms) puts "
            f"{priced:.2f} ms of it in encoding and decoding those operations"
            + (f" (not priced: {', '.join(unpriced)})" if unpriced else "") +
            f"; the rest is policy/'s own work (the decision, the HMAC window, the audit "
            f"line). The authd adds what a campus login through it costs, "
            f"{batches[0].per_login_ms():.2f} ms (it makes no LDAP operation): the socket, "
            f"a thread, the frames, the decision and the audit line.\n"]


def imports(whole: WholeProcess, times: dict[str, tuple[float, list]], profile: str
            ) -> list[str]:
    by_name, floor = whole.by_name(), whole.floor_ms()
    out = ["## 2. Where the time goes\n"]
    for label, name in (("in-process, campus path", IN_CAMPUS),
                        ("in-process, off-campus path", IN_OFF)):
        out.append(f"- {label}: {by_name[name].median_ms() - floor:.0f} ms over the empty "
                   f"module, of which {times[label][0]:.0f} ms are imports (below)")
    module_side = times["via authd, module side"][0]
    for label, name in (("via authd, campus path", AUTHD_CAMPUS),
                        ("via authd, off-campus path", AUTHD_OFF)):
        v = by_name[name]
        out.append(f"- {label}: {v.median_ms() - floor:.1f} ms over the empty module; the "
                   f"module side imports {module_side:.1f} ms (below), the rest is the "
                   f"socket round trips and the authd's work, which took "
                   f"{statistics.mean(v.authd_cpu_ms):.1f} ms of the authd's CPU per login")
    out.append("")
    for label, (total, rows) in times.items():
        out.append(f"`-X importtime`, {label}: {total:.1f} ms of imports after interpreter "
                   f"start (median of {IMPORT_RUNS}). Heaviest (cumulative):\n")
        out += ["| import | depth | cumulative ms | self ms |", "|---|---:|---:|---:|"]
        out += [f"| {n} | {d} | {c:.1f} | {s:.1f} |" for n, d, c, s in rows[:12]]
        out.append("")
    return out + ["cProfile of one in-process off-campus authentication in a fresh process "
                  "(bench/login_once.py: module load + config + policy.login.login):\n",
                  "```", profile, "```\n"]


def concurrency(levels: list[Level]) -> list[str]:
    out = ["## 3. Parallel off-campus logins (one pamtester and one user each, one slapd)\n",
           f"Each N via the authd and in-process (authd=off), one right after the other. "
           f"One login in {WRONG_EVERY} types a wrong code; a verdict is right when "
           "pamtester's exit status and the login's audit line match the code typed, and "
           "the audit line came from the authd's pid (via the authd) or from another "
           "(in-process). Via the authd the audit lines are written by the authd, to the "
           "config's audit socket the bench listens on.\n",
           "| mode | N | logins | logins/s | p50 ms | p95 ms | p99 ms | CPU ms per login: "
           "pamtester + authd | wrong verdicts | audit mismatches | audit lines from the "
           "authd |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {lv.mode} | {lv.n} | {lv.logins} | {lv.logins / lv.seconds:.0f} | "
            f"{lv.pct(50):.0f} | {lv.pct(95):.0f} | {lv.pct(99):.0f} | "
            f"{lv.pamtester_cpu_ms:.0f} + {lv.authd_cpu_ms:.0f} | {lv.wrong_verdicts} | "
            f"{lv.audit_mismatch} | {lv.from_authd} |" for lv in levels]
    out.append(f"\nCPU per login: the pamtester processes' user + system time (getrusage of "
               f"this process's children) and the authd's (/proc/PID/stat) over each level, "
               f"divided by its logins; the machine has {os.cpu_count()} CPUs.")
    for lv in levels:
        out += [f"- {lv.mode}, N = {lv.n}, ended wrongly {count}x: {why}"
                for why, count in sorted(lv.why_wrong.items())]
    return out


def warm(rates: dict[str, Warm], ops: list[OpCost], ldap_imports: dict[str, float],
         verify_rate: float) -> list[str]:
    out = ["\n## 4. Warm verifications in one process, one reused connection\n",
           "| what | per second | ms per call | CPU ms per call (this process) | "
           "slapd CPU ms per call |", "|---|---:|---:|---:|---:|"]
    out += [f"| {k} | {w.rate:,.0f} | {1000 / w.rate:.3f} | {w.cpu_ms:.3f} | "
            f"{w.slapd_cpu_ms:.3f} |" for k, w in rates.items()]
    out += [f"\n### What one LDAP operation costs (one reused connection, service DN, "
            f"{LDAP_OPS} each, in {LDAP_BLOCKS} blocks alternating the clients)\n",
            "policy (ldap3) verify_code: the whole accepting call as in the table above, in "
            "the same alternating blocks (on another bench user's token), so that it compares "
            "with the operations under the same load. "
            "search: a base search of the token entry with read_token's attributes; modify: "
            "a compare-and-swap shaped like record_success (delete the last step and add the "
            "next, replace the failure count and the last login). ldap3 over the connection "
            "policy.directory opens; python-ldap (Debian's python3-ldap, a C binding to "
            "libldap) over `ldap.initialize` + `simple_bind_s` to the same slapd. "
            "A measurement only: policy/ uses ldap3.\n",
            "| client | operation | wall ms/op | ops/s, one at a time | client CPU ms/op | "
            "slapd CPU ms/op |", "|---|---|---:|---:|---:|---:|"]
    out += [f"| {o.client} | {o.op} | {o.per_op_ms('wall'):.3f} | "
            f"{1000 / o.per_op_ms('wall'):,.0f} | {o.per_op_ms('cpu'):.3f} | "
            f"{o.per_op_ms('slapd_cpu'):.3f} |" for o in ops]
    return out + ["", f"Importing each in a fresh interpreter (`-X importtime`, median of "
                  f"{IMPORT_RUNS}): ldap3 {ldap_imports['ldap3']:.0f} ms, python-ldap "
                  f"(`import ldap`) {ldap_imports['ldap']:.0f} ms.\n"] \
        + ceilings(rates, ops, verify_rate)


def ceilings(rates: dict[str, Warm], ops: list[OpCost], verify_rate: float) -> list[str]:
    """Why the warm rate is what it is: the operations per verification and their costs."""
    hmac_ms = 1000 / rates[WARM_HMAC].rate
    c = Ceilings(ops, hmac_ms)
    l3m, plm = c.cost("ldap3", "modify"), c.cost("python-ldap", "modify")
    l3s, pls = c.cost("ldap3", "search"), c.cost("python-ldap", "search")
    pv = c.cost("policy (ldap3)", "verify_code")
    measured_ms = pv.per_op_ms("wall")
    overhead = measured_ms - c.ms("ldap3", 0, 2)
    overhead_cpu = pv.per_op_ms("cpu") - c.ms("ldap3", 0, 2, "cpu")
    cpus = os.cpu_count() or 1

    def cpu_bound(client: str) -> float:
        return cpus * 1000 / (c.ms(client, 0, 2, "cpu") + c.ms(client, 0, 2, "slapd_cpu")
                              - hmac_ms)
    slapd_modify = l3m.per_op_ms("slapd_cpu") + plm.per_op_ms("slapd_cpu")
    return [
        "**Operations per verification.** A verify_code call that accepts makes two LDAP "
        "operations, both modifies: `count_attempt` (a compare-and-swap on "
        "oathFailureCount, before the code is looked at) and `record_success` (a "
        "compare-and-swap on oathTOTPLastTimeStep that also clears the counter); it "
        "searches nothing, since the token was read before (policy/rules/verify.py, "
        "policy/directory/service.py). A lost compare-and-swap adds a read_token and "
        "another modify per retry. A whole off-campus login adds its reads before that "
        "(section 1 counts them); a wrong code costs one modify, then a re-read of the "
        "token.\n",
        f"**The ceiling that follows**, one connection, one call at a time: 2 x modify + "
        f"the HMAC window ({hmac_ms:.3f} ms, matching_step above):\n",
        f"- ldap3: 2 x {l3m.per_op_ms('wall'):.3f} + {hmac_ms:.3f} = "
        f"{c.ms('ldap3', 0, 2):.3f} ms, at most **{c.serial('ldap3'):,.0f}/s**. "
        f"verify_code in the same blocks: {measured_ms:.3f} ms "
        f"({1000 / measured_ms:,.0f}/s; {verify_rate:,.0f}/s in the run of "
        f"{WARM_VERIFICATIONS} above); "
        + (f"the difference, {overhead:.3f} ms ({overhead_cpu:.3f} ms of CPU), is "
           "policy's own Python around the two calls (Connection.call and "
           "compare_and_swap, their exception handling, the Verdict)." if overhead > 0 else
           f"the difference, {overhead:.3f} ms, is within the noise: policy's own Python "
           f"around the two calls costs little ({overhead_cpu:.3f} ms of CPU)."),
        f"- python-ldap: 2 x {plm.per_op_ms('wall'):.3f} + {hmac_ms:.3f} = "
        f"{c.ms('python-ldap', 0, 2):.3f} ms, at most **{c.serial('python-ldap'):,.0f}/s**, "
        f"{c.serial('python-ldap') / c.serial('ldap3'):.1f}x ldap3's ceiling.",
        f"- with a fresh read_token first (2 searches + 2 modifies): ldap3 "
        f"{1000 / c.ms('ldap3', 2, 2):,.0f}/s, python-ldap "
        f"{1000 / c.ms('python-ldap', 2, 2):,.0f}/s (measured with ldap3: "
        f"{rates[WARM_READ_VERIFY].rate:,.0f}/s).",
        f"- where a modify's wall time goes: ldap3 spends {l3m.per_op_ms('cpu'):.3f} ms "
        f"of client CPU per modify ({l3s.per_op_ms('cpu'):.3f} per search), python-ldap "
        f"{plm.per_op_ms('cpu'):.3f} ({pls.per_op_ms('cpu'):.3f}); slapd spends about "
        f"{slapd_modify / 2:.3f} ms of CPU per modify whichever client sends it, and the rest "
        "is the loopback round trip and scheduling. A C binding removes most of the "
        "client's share, not slapd's.",
        f"- with many connections in parallel the bound is CPU, not latency: this "
        f"machine has {cpus} CPUs and a verification costs client + slapd CPU, so at "
        f"most about {cpu_bound('ldap3'):,.0f}/s with ldap3 and "
        f"{cpu_bound('python-ldap'):,.0f}/s with python-ldap, if nothing else ran; "
        f"slapd's two modifies alone would allow about {cpus * 1000 / slapd_modify:,.0f}"
        f"/s with a client that cost nothing.",
        ""]


def site(pages: list[Page]) -> list[str]:
    return ["## 5. Enrollment site (gunicorn -w 2, wrk " + " ".join(WRK) + ")\n",
            "| page | requests/s | p50 ms | p99 ms | requests | non-2xx/3xx |",
            "|---|---:|---:|---:|---:|---:|"] + [
        f"| {p.name} | {p.rps:.0f} | {p.p50:.1f} | {p.p99:.1f} | {p.requests} | {p.non2xx} |"
        for p in pages]
