"""bench/out/report.md, bench/out/logins.png and bench/out/gate.png: the targets and
whether they are met, the run's own checks, the machine, then each measured section
(report_sections.py, gate_report.py)."""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import gate_report
from . import report_sections as sections
from .authd_cost import TARGET_MS, Batch, InProcess
from .concurrency import CONCURRENCY, Level
from .enrollment_site import Page
from .fixture import COMPILED, PY
from .gate import Gate
from .logins import AUTHD_CAMPUS, AUTHD_OFF, IN_CAMPUS, IN_OFF, ROUNDS, RSS_RUNS, WARMUP, \
    Variant, WholeProcess
from .warm import WARM_HMAC, WARM_VERIFY, Ceilings, OpCost, Warm

PACKAGES = ("libpam-python", "python3-ldap3", "python3-ldap", "python3-pyotp", "slapd",
            "pamtester", "libpam-google-authenticator", "libpam-oath", "gunicorn",
            "python3-flask", "wrk", "nginx")


@dataclass
class Results:
    """Everything run.py measured, in the order it measured it."""
    authd_pid: int
    whole: WholeProcess
    authd_cost: list[Batch]              # the authd's CPU over batches of logins
    login_in_process: InProcess          # the same login in the bench's process
    imports: dict[str, tuple[float, list]]
    profile: str
    levels: list[Level]
    warm: dict[str, Warm]
    ops: list[OpCost]
    ldap_imports: dict[str, float]
    authd_end: dict[str, int]            # the authd's /proc status at the end
    web: list[Page]
    gate: Gate
    authd_exit: int
    authd_stderr: list[str]              # what it printed besides its ready line
    bytecode: tuple[int, list[str], list[str]]   # modules; stale after compiling; at the end
    seconds: float
    load: tuple[float, float]            # 1-minute load average at the start and the end
    busy: str


def summary(r: Results) -> list[str]:
    """The table of targets from the issue, what was measured, and whether it is met."""
    by_name, floor = r.whole.by_name(), r.whole.floor_ms()

    def ratio(name: str) -> float:
        return by_name[name].median_ms() / floor

    ceil = Ceilings(r.ops, 1000 / r.warm[WARM_HMAC].rate)
    verify_rate = r.warm[WARM_VERIFY].rate
    pv_ms = ceil.cost("policy (ldap3)", "verify_code").per_op_ms("wall")
    n_top = max(CONCURRENCY)
    top = {lv.mode: lv for lv in r.levels if lv.n == n_top}

    def right(lv: Level) -> str:
        return (f"{lv.right}/{lv.logins} right ({lv.wrong_verdicts} wrong exit statuses, "
                f"{lv.audit_mismatch} audit mismatches)")
    h_campus, h_off = ratio(AUTHD_CAMPUS), ratio(AUTHD_OFF)
    campus, back, spaced = r.authd_cost
    return [
        "# campus-mfa benchmark\n",
        "| target (issue) | measured | |", "|---|---|---|",
        f"| campus path <= 1.2x the empty pam_python module | **{h_campus:.2f}x** via the "
        f"authd (in-process, authd=off: {ratio(IN_CAMPUS):.2f}x) | {sections.verdict(h_campus <= 1.2)} |",
        f"| off-campus path, correct code (LDAP read, verify, CAS write) <= 2x | "
        f"**{h_off:.2f}x** via the authd (in-process, authd=off: {ratio(IN_OFF):.2f}x) | "
        f"{sections.verdict(h_off <= 2.0)} |",
        f"| every verdict right at N = {n_top} parallel logins | via the authd "
        f"{right(top['via authd'])}; in-process {right(top['in-process'])} | "
        f"{sections.verdict(all(lv.all_right() for lv in top.values()))} |",
        f"| >= 2,000 warm verifications/s, one process, one reused connection | "
        f"**{verify_rate:,.0f}/s** with ldap3 ({1000 / pv_ms:,.0f}/s interleaved with the "
        f"per-operation costs, where 2 modifies + HMAC give a ceiling of "
        f"{ceil.serial('ldap3'):,.0f}/s with ldap3 and {ceil.serial('python-ldap'):,.0f}/s "
        f"with python-ldap; section 4) | {sections.verdict(verify_rate >= 2000)} |",
        f"| the authd's CPU per off-campus login <= {TARGET_MS:.0f} ms (issue 14) | "
        f"**{back.per_login_ms():.2f} ms** over {back.logins} logins back to back, "
        f"{spaced.per_login_ms():.2f} ms over {spaced.logins} spaced out; a campus login "
        f"{campus.per_login_ms():.2f} ms (section 1) | "
        f"{sections.verdict(max(back.per_login_ms(), spaced.per_login_ms()) <= TARGET_MS)} |",
        *gate_report.summary_rows(r.gate), "",
        f"Not in the via-authd ratios: the authd's own CPU above, and its memory, "
        f"{sections.mb(r.authd_end['VmHWM'])} MB peak RSS resident "
        f"for all logins (section 1). The in-process ratios are what a login costs "
        f"when no authd runs (authd=off, or no socket).\n"]


def checks(r: Results) -> list[str]:
    """The run's own checks: every verdict right, every audit line from the right process,
    an authd that said nothing more and exited 0."""
    out = []
    sec1_wrong = sum(len(v.runs) - sum(x.ok for x in v.runs) for v in r.whole.variants)
    out.append(f"section 1: {'every' if not sec1_wrong else f'{sec1_wrong} NOT'} login "
               f"ended as expected")
    expected = WARMUP + ROUNDS + RSS_RUNS
    served_right = True
    for name, (lines, from_authd) in r.whole.served.items():
        want = lines if name.startswith("campus-mfa via authd") else 0
        if lines != expected or from_authd != want:
            served_right = False
            out.append(f"**{name}: {lines} audit lines for {expected} logins, {from_authd} "
                       f"from the authd (expected {want})**")
    if served_right:
        out.append(f"the authd (pid {r.authd_pid}) wrote the audit line of every "
                   f"via-authd login and of no in-process one ({expected} each)")
    out.append("section 3: every verdict right at every N, both ways"
               if all(lv.all_right() for lv in r.levels)
               else "**section 3: some verdicts wrong (below)**")
    out.append("the authd printed nothing besides its ready line" if not r.authd_stderr
               else f"**the authd printed {len(r.authd_stderr)} more lines (end of "
                    f"the report)**")
    wrong_batch = sum(b.logins - b.right for b in r.authd_cost)
    out.append(f"the authd's batches: {'every' if not wrong_batch else f'{wrong_batch} NOT'} "
               f"login ended as expected")
    refused = sum(n for run in r.gate.runs for status, n in run.statuses.items()
                  if status not in (200, 499))
    out.append(f"section 6: the gate let the session through and sent a client without it "
               f"to sign in; {'no' if not refused else f'**{refused}**'} request logged by "
               f"nginx with a status other than 200 (or 499, open when wrk stopped)")
    out.append(f"the authd exited with status {r.authd_exit} on SIGTERM")
    return ["Checks: " + "; ".join(out) + ".\n"]


def versions() -> str:
    def deb(pkg: str) -> str:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                              capture_output=True, text=True, check=False, timeout=30)
        return done.stdout or "?"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.machine())
    return (f"- machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}\n"
            f"- Python {platform.python_version()} ({PY}); "
            + ", ".join(f"{p} {deb(p)}" for p in PACKAGES) + "\n")


def machine(r: Results) -> list[str]:
    """The machine, the packages, how busy it was, the bytecode and the authd."""
    n_mod, stale_start, stale_end = r.bytecode
    return [
        versions(),
        f"- {ROUNDS} interleaved rounds (+{WARMUP} warm-up), whole run {r.seconds:.0f} s; "
        f"1-minute load average {r.load[0]:.1f} at the start, {r.load[1]:.1f} at the "
        f"end; {r.busy} (other work on the machine slows everything, the ratios least)",
        "- Bytecode: before measuring, the bench byte-compiled "
        f"{', '.join(c + '/' for c in COMPILED)} "
        f"(`{PY} -m compileall -q`, PYTHONDONTWRITEBYTECODE unset for that call), as "
        "dh_python3 does for the installed package; pam_python never writes .pyc files, "
        "so a fresh clone would compile every module from source on every login. "
        f"{n_mod} modules; without an up-to-date .pyc after compiling: "
        f"{', '.join(stale_start) or 'none'}; at the end of the run: "
        f"{', '.join(stale_end) or 'none'}. (pam_python reads the module file named on "
        "the PAM line, pam_module/pam_campus_mfa.py and bench/empty_module.py, from "
        "source every time, installed or not; both are small.)",
        f"- Authd: `{PY} -m policy.authd --socket <work dir>/authd.sock` (devtools.authd), "
        f"started for the run (pid {r.authd_pid}); the via-authd variants use the PAM option "
        "`authd=<that socket>`, the in-process ones `authd=off`.\n"]


def report(r: Results) -> str:
    """The whole report.md."""
    via_authd_logins = 2 * (WARMUP + ROUNDS + RSS_RUNS)
    out = summary(r) + checks(r) + machine(r)
    out += sections.logins(r.whole, r.authd_pid, r.authd_end, via_authd_logins,
                           max(CONCURRENCY))
    out += sections.authd_cost(r.authd_cost, r.login_in_process, r.ops)
    out += sections.imports(r.whole, r.imports, r.profile)
    out += sections.concurrency(r.levels)
    out += sections.warm(r.warm, r.ops, r.ldap_imports, r.warm[WARM_VERIFY].rate)
    out += sections.site(r.web)
    out += gate_report.section(r.gate)
    if r.authd_stderr:
        out += ["\n## The authd's other output\n", "```", *r.authd_stderr[-60:], "```"]
    return "\n".join(out) + "\n"


def chart(variants: list[Variant], floor: float, path: Path) -> None:
    """A box plot of every variant's login times, with the 1.2x and 2x target lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.boxplot([[r.seconds * 1000 for r in v.runs] for v in variants], vert=False,
               labels=[f"{v.name}  ({v.median_ms() / floor:.2f}x)" for v in variants],
               showfliers=False)
    for factor, style in ((1.2, ":"), (2.0, "--")):
        ax.axvline(floor * factor, color="grey", linestyle=style,
                   label=f"{factor}x empty pam_python")
    ax.invert_yaxis()
    ax.set_xlabel("ms per pamtester process (whole process, one authentication)")
    ax.set_title(f"One login, {ROUNDS} interleaved rounds (median x empty pam_python)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
