"""Section 6 of bench/out/report.md (the web gate's hot path), its rows in the table of
targets, and bench/out/gate.png."""
from __future__ import annotations

import statistics
from pathlib import Path

from .gate import GATE_ROUNDS, GATE_WRK, SITES, Gate
from .gate_stack import GUNICORN_FLAGS, SMALL_BODY
from .report_sections import verdict

RATIO_TARGET = 0.5
P99_TARGET_MS = 10.0
SLAPD_TARGET_MS = 1.0        # slapd's CPU per 1,000 gated requests: none of it theirs


def no_ldap(g: Gate) -> tuple[bool, str]:
    requests, slapd_ms, new = g.slapd()
    per_1000 = slapd_ms * 1000 / requests
    return (per_1000 < SLAPD_TARGET_MS and new == 0,
            f"slapd's CPU during the {requests:,} gated requests: {slapd_ms:.0f} ms "
            f"({per_1000:.2f} ms per 1,000; /proc counts in 10 ms units); connections to "
            f"slapd established during them: {new}")


def p99s(g: Gate, site: str) -> list[float]:
    return [r.page.p99 for r in g.of(site)]


def summary_rows(g: Gate) -> list[str]:
    """The gate's rows in the table of targets."""
    ratio, p99 = g.ratio(), g.median("gated", "p99")
    ok, slapd = no_ldap(g)
    return [
        f"| the gate's /auth through nginx >= {RATIO_TARGET}x a bare Flask /auth behind the "
        f"same auth_request (issue 13) | **{ratio:.2f}x** (median of {GATE_ROUNDS} rounds; "
        f"gated {g.median('gated', 'rps'):,.0f}/s, bare {g.median('bare', 'rps'):,.0f}/s, "
        f"ungated {g.median('ungated', 'rps'):,.0f}/s; from the CPU per request "
        f"{g.cpu_ratio():.2f}x; section 6) | "
        f"{verdict(ratio >= RATIO_TARGET)} |",
        f"| the gated file's p99 <= {P99_TARGET_MS:.0f} ms | **{p99:.1f} ms** (median of the "
        f"rounds' p99; {min(p99s(g, 'gated')):.1f}-{max(p99s(g, 'gated')):.1f}) | "
        f"{verdict(p99 <= P99_TARGET_MS)} |",
        f"| no LDAP traffic per gated request | {slapd} | {verdict(ok)} |"]


def section(g: Gate) -> list[str]:
    out = ["\n## 6. The web gate's hot path: /auth through nginx (issue 13)\n",
           f"One nginx (Debian's, `worker_processes auto`, the workers as www-data), three "
           f"sites serving the same {len(SMALL_BODY)}-byte file: without a gate; behind the "
           f"shipped snippet `campus-mfa-gate.conf` asking a bare Flask `/auth` that only "
           f"answers 200 with Remote-User (bench/bare_auth.py: the ceiling of this stack); "
           f"behind the same snippet asking the portal's `/auth`. The snippet is used as "
           f"shipped but for the socket and `Host 127.0.0.1`. Both apps run under "
           f"`gunicorn {' '.join(GUNICORN_FLAGS)}` (sync workers: two processes for two "
           f"CPUs; the shipped unit runs `--workers 1 --threads 4`) on a unix socket, no "
           f"access log. The portal: the bench's slapd, `web.trusted_proxies = 1`, files "
           f"as the session store, `web.recheck_seconds = {g.recheck_seconds}`. wrk "
           f"{' '.join(GATE_WRK)}, the same Cookie header on all three; {GATE_ROUNDS} rounds "
           f"in a shuffled order. Before each gated run the bench signs in through the "
           f"portal's form from 127.0.0.1 (campus: the password is enough), so every run "
           f"ended at most {max(r.after_sign_in for r in g.of('gated')):.1f} s after "
           f"its sign-in, within web.recheck_seconds: no re-read of the user was due, "
           f"and what slapd did is what the requests cost it.\n",
           "Checked first: " + "; ".join(g.checks) + ".\n",
           "| site | requests/s | p50 ms | p99 ms | requests | statuses nginx logged | "
           "CPU ms per request: nginx + gunicorn + wrk |", "|---|---:|---:|---:|---:|---|---:|"]
    for site, label in SITES.items():
        runs = g.of(site)
        statuses: dict[int, int] = {}
        for r in runs:
            for status, count in r.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        logged = ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items()))
        cpu = [g.cpu_per_request(site, part) for part in ("nginx", "app", "wrk")]
        out.append(f"| {label} | {g.median(site, 'rps'):,.0f} | {g.median(site, 'p50'):.2f} "
                   f"| {g.median(site, 'p99'):.2f} | {sum(r.page.requests for r in runs):,} "
                   f"| {logged} | {cpu[0]:.3f} + {cpu[1]:.3f} + {cpu[2]:.3f} "
                   f"= {sum(cpu):.3f} |")
    out.append(f"\nMedians of the {GATE_ROUNDS} rounds. Statuses: 499 is a request still "
               f"open when wrk stopped. CPU: /proc/PID/stat of nginx's and gunicorn's "
               f"processes (master and workers) and getrusage of wrk, over all rounds, "
               f"divided by the requests; the machine has 2 CPUs, so the CPU per request "
               f"bounds the rate: by it, the gated file would be served at "
               f"{g.cpu_ratio():.2f}x the bare handler's rate with nothing else running. "
               f"Round by round, requests/s:\n")
    out += ["| round | " + " | ".join(SITES) + " | gated / bare |",
            "|---:|" + "---:|" * (len(SITES) + 1)]
    by_site = {site: g.of(site) for site in SITES}
    for i, ratio in enumerate(g.ratios()):
        out.append(f"| {i + 1} | " + " | ".join(f"{by_site[s][i].page.rps:,.0f}"
                                                 for s in SITES) + f" | {ratio:.2f} |")
    ok, slapd = no_ldap(g)
    out.append(f"\nNo LDAP traffic per request: {slapd}; established connections to slapd "
               f"before and after each gated run: "
               f"{', '.join(f'{a}/{b}' for a, b in (r.slapd_conns for r in g.of('gated')))} "
               f"(the bench's admin connection and the authd's pool, idle meanwhile). "
               f"Target: under {SLAPD_TARGET_MS:.0f} ms per 1,000 requests and no new "
               f"connection: {verdict(ok)}.\n")
    if g.app is not None:
        out += app_cost(g)
    return out


def app_cost(g: Gate) -> list[str]:
    app = g.app
    assert app is not None
    gunicorn = g.cpu_per_request("bare", "app") - app.bare_ms
    return [f"**Where the portal's /auth spends its CPU.** Each WSGI app called in this "
            f"process, no gunicorn, no nginx (bench/gate_profile.py): the portal's /auth "
            f"{app.real_ms:.3f} ms of CPU per call, the bare one {app.bare_ms:.3f} ms. "
            f"Under gunicorn the bare app cost {g.cpu_per_request('bare', 'app'):.3f} ms "
            f"per request above, so gunicorn's own part is about {gunicorn:.2f} ms, the same "
            f"for both. The portal's call, by part (cProfile shares applied to its "
            f"unprofiled time):\n",
            "| part | ms per call |", "|---|---:|"] + [
        f"| {what} | {ms:.3f} |" for what, ms in app.parts] + [""]


def chart(g: Gate, path: Path) -> None:
    """Requests/s of the three sites (every round, and the median), with the target at
    half the bare handler's rate; and the latency percentiles with the 10 ms line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(SITES)
    labels = ["no gate", "gate, bare /auth", "gate, portal's /auth"]
    fig, (rate, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for y, site in enumerate(names):
        rates = [r.page.rps for r in g.of(site)]
        rate.barh(y, statistics.median(rates), left=100, color="#8fb3d9")
        rate.plot(rates, [y] * len(rates), "k.", markersize=5)
        rate.text(max(rates) * 1.15, y, f"{statistics.median(rates):,.0f}/s", va="center")
    rate.axvline(RATIO_TARGET * g.median("bare", "rps"), color="grey", linestyle="--",
                 label=f"target: {RATIO_TARGET}x the bare /auth")
    rate.set_xscale("log")
    rate.set_xlim(100, g.median("ungated", "rps") * 6)
    rate.set_yticks(range(len(names)), labels=labels)
    rate.invert_yaxis()
    rate.set_xlabel("requests/s (log scale; bar: median, dots: rounds)")
    rate.legend(loc="lower right")
    for i, (label, attr) in enumerate((("p50", "p50"), ("p99", "p99"))):
        latency.barh([y + i * 0.4 for y in range(len(names))],
                     [g.median(s, attr) for s in names], height=0.4, label=label)
    latency.axvline(P99_TARGET_MS, color="grey", linestyle="--", label="p99 target")
    latency.set_xlim(0, max([P99_TARGET_MS] + [g.median(s, "p99") for s in names]) * 1.15)
    latency.set_yticks([y + 0.2 for y in range(len(names))], labels=[""] * len(names))
    latency.invert_yaxis()
    latency.set_xlabel("ms per request (medians of the rounds)")
    latency.legend(loc="upper right")
    fig.suptitle(f"A small file through nginx, wrk {' '.join(GATE_WRK)}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
