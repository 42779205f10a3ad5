#!/usr/bin/env python3
"""The performance targets, measured side by side in one run: our fast steps against nginx.

Each row pits one of our steps against the real server it corresponds to, under the same wrk
load, interleaved (ours, theirs, ours, theirs, ...), and reports the median of --runs runs of
each, and the ratio: the median of the ratios of each round's two runs, taken seconds apart, so
that a slow minute of a shared machine weighs on both sides of a ratio alike. Rows:

  step05 (one thread)        vs nginx, worker_processes 1:     keep-alive c100, close c100
  step06 (a worker per core) vs nginx, worker_processes auto:  keep-alive c100 and c1000, close c100
  step04 (a pool)            vs Apache, worker MPM:            close c100; keep-alive c100, with
                                                               how many clients are answered at all
  step07 -> step06 upstream  vs nginx proxy_pass -> the same upstream (keepalive 64 both):
                             keep-alive c100 and close c100 (a new client connection per request,
                             pooled upstream connections), with step07's own client; keep-alive
                             c100 with --upstream-client reqwest; and step06 alone, directly
  idle keep-alive memory at 10 000 connections: step05, step06, nginx

A row whose peer (or step) is not installed is skipped with a printed line. The servers and
wrk share this machine's cores; nothing is pinned.

Examples:
  python3 scripts/bench_vs_nginx.py                     # about 6 minutes
  python3 scripts/bench_vs_nginx.py --runs 1 --duration 2 --rows step05
  python3 scripts/bench_vs_nginx.py --write-docs        # also updates docs/performance.md
                                                        # (and chapter 07, with the step07 rows)

With --write-docs the report also goes to docs/performance.json, beside the table it fills: the
book quotes these figures, and scripts/check_book.py checks every quote against that file.
"""

import datetime
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fairness import answers_per_client  # noqa: E402
from load import Contender, medians, paired_ratio, run_wrk, same_run, wrk_against  # noqa: E402
from servers import (  # noqa: E402
    ROOT, StepServer, apache_peer, build_release, command_line, machine, nginx_peer,
    nginx_proxy_peer, raise_fd_limit, write_data, write_proxy_config, write_region,
)

DOC = os.path.join(ROOT, "docs", "performance.md")
CHAPTER_07 = os.path.join(ROOT, "docs", "07-reverse-proxy.md")
DATA = os.path.join(ROOT, "docs", "performance.json")


def step(crate, *options):
    return Contender(" ".join([crate, *options]), crate, options)


def peer(label, start):
    return Contender(label, peer=start)


# (row, workload, ours, theirs, clients, keep_alive, target ratio)
def comparisons(rows):
    nginx1, nginx_auto, apache_worker = nginx_peer(1), nginx_peer("auto"), apache_peer("worker")
    plan = []
    if "step05" in rows:
        ours = step("step05-epoll-kqueue")
        if nginx1:
            theirs = peer("nginx, worker_processes 1", nginx1)
            plan += [("step05", "keep-alive c100", ours, theirs, 100, True, 1.2),
                     ("step05", "close c100", ours, theirs, 100, False, 1.15)]
        else:
            print("bench_vs_nginx: skipping the step05 row: nginx is not installed")
    if "step06" in rows:
        ours = step("step06-master-worker")
        if nginx_auto:
            theirs = peer("nginx, worker_processes auto", nginx_auto)
            plan += [("step06", "keep-alive c100", ours, theirs, 100, True, 1.2),
                     ("step06", "keep-alive c1000", ours, theirs, 1000, True, 1.2),
                     ("step06", "close c100", ours, theirs, 100, False, 1.15)]
        else:
            print("bench_vs_nginx: skipping the step06 row: nginx is not installed")
    if "step04" in rows:
        ours = step("step04-threadpool")
        if apache_worker:
            theirs = peer("Apache, worker MPM", apache_worker)
            plan += [("step04", "close c100", ours, theirs, 100, False, 1.0),
                     ("step04", "keep-alive c100", ours, theirs, 100, True, None)]
        else:
            print("bench_vs_nginx: skipping the step04 row: Apache is not installed")
    return plan


# Idle upstream connections per proxy worker, both proxies (nginx's `keepalive 64`).
PROXY_KEEPALIVE = 64
PROXY_THEIRS = "nginx proxy_pass → step06"


def proxy_comparison(rows, runs, duration):
    """step07 -> step06 against nginx proxy_pass -> the same step06, interleaved: a list of rows
    like the main table's, and the upstream alone (or None)."""
    if "step07" not in rows:
        return [], None
    if not os.path.isdir(os.path.join(ROOT, "step07-reverse-proxy")):
        print("bench_vs_nginx: skipping the step07 row: step07 is not in this workspace yet")
        return [], None
    template = os.path.join(ROOT, "scripts", "peers", "nginx-proxy.conf")
    if not (nginx_peer(1) and os.path.exists(template)):
        print("bench_vs_nginx: skipping the step07 row: nginx or scripts/peers/nginx-proxy.conf missing")
        return [], None
    with StepServer("step06-master-worker") as upstream:
        address = f"{upstream.host}:{upstream.port}"
        config = os.path.join(ROOT, "target", "bench-vs-nginx-proxy.toml")
        os.makedirs(os.path.dirname(config), exist_ok=True)
        # One group of one upstream, the same keep-alive pool as nginx-proxy.conf's upstream.
        write_proxy_config(config, [address], keepalive=PROXY_KEEPALIVE)
        own = step("step07-reverse-proxy", "--config", config)
        own.label = "step07-reverse-proxy → step06"
        simple = step("step07-reverse-proxy", "--config", config, "--upstream-client", "reqwest")
        simple.label = "step07 --upstream-client reqwest → step06"
        nginx = peer(PROXY_THEIRS, nginx_proxy_peer(address, "auto", PROXY_KEEPALIVE))
        # (workload, ours, keep-alive, target ratio); theirs is nginx each time.
        plan = [("keep-alive c100", own, True, 1.15),
                ("close c100", own, False, 1.0),
                ("keep-alive c100", simple, True, None)]
        # Each (row, side) once per round, and the upstream alone (None): what the hop costs.
        entries = [(i, side) for i in range(len(plan)) for side in ("ours", "theirs")] + [None]

        def measure(entry):
            if entry is None:
                result = run_wrk(upstream.url + "/", 100, duration, keep_alive=True)
                who, workload = "step06 direct", "keep-alive c100"
            else:
                i, side = entry
                workload, ours, keep_alive, _ = plan[i]
                contender = ours if side == "ours" else nginx
                result = wrk_against(contender, 100, duration, keep_alive, warm_up=False)
                who = contender.label
            print(f"{who:<44} {workload:<16} "
                  f"{result['requests_per_s'] if result else 0:>10,.0f} req/s  "
                  f"p99 {result['p99_ms'] if result else 0:7.1f} ms")
            return result

        found = dict(zip(entries, same_run(entries, runs, measure)))
    proxied = []
    for i, (workload, ours, _, target) in enumerate(plan):
        mine, other = found[(i, "ours")], found[(i, "theirs")]
        ratio = paired_ratio(mine, other)
        if ratio is None:
            continue
        mine, other = medians(mine), medians(other)
        proxied.append({
            "ours": ours.label, "theirs": PROXY_THEIRS, "workload": workload, "target": target,
            "ours_rps": mine["requests_per_s"], "theirs_rps": other["requests_per_s"],
            "ratio": ratio, "ours_p99": mine["p99_ms"], "theirs_p99": other["p99_ms"],
        })
    direct = medians(found[None])
    alone = {"rps": direct["requests_per_s"], "p99": direct["p99_ms"]} if direct else None
    return proxied, alone


def idle_memory(rows):
    if "idle" not in rows:
        return []
    found = []
    for name in ("step05-epoll-kqueue", "step06-master-worker", "nginx"):
        output = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "memory.py"), "idle",
                                 name, "-n", "10000", "--json"], capture_output=True, text=True)
        try:
            found.append(json.loads(output.stdout))
        except ValueError:
            print(f"bench_vs_nginx: idle memory of {name} failed: {output.stderr.strip()[-200:]}")
    return found


def render(report, only_proxy=False):
    meta = report["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}`: wrk "
        f"(`-t2`, {meta['duration_s']} s per run), each figure the median of {meta['runs']} interleaved runs, "
        "each ratio the median of the rounds' ratios (ours and theirs a few seconds apart).",
        "The servers and wrk share the machine's cores; nothing was pinned.",
        "",
        "| ours | against, same run | load | ours req/s | theirs req/s | ratio | target | ours p99 ms | theirs p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        if only_proxy and "→" not in row["ours"]:
            continue
        ratio = row["ratio"]
        target = f"≥ {row['target']:g}×" if row["target"] else "(measured)"
        met = "" if row["target"] is None else (" ✓" if ratio >= row["target"] else " ✗")
        lines.append(
            f"| {row['ours']} | {row['theirs']} | {row['workload']} | {row['ours_rps']:,.0f} | "
            f"{row['theirs_rps']:,.0f} | {ratio:.2f}×{met} | {target} | {row['ours_p99']:.1f} | {row['theirs_p99']:.1f} |"
        )
    if only_proxy:
        return "\n".join(lines + proxy_lines(report))
    for row in report.get("fairness", []):
        lines.append("")
        lines.append(f"Keep-alive c100, who is answered at all ({row['duration_s']} s): "
                     f"{row['server']} answered {row['answered']} of {row['clients']} clients.")
    lines += proxy_lines(report)
    if report.get("idle"):
        lines += ["", "| idle keep-alive connections | processes | bytes per connection (RSS) |", "|---|---:|---:|"]
        for row in report["idle"]:
            lines.append(f"| {row['server']}, {row['connections']:,} | {row['processes']} | {row['bytes_per_connection']} |")
    return "\n".join(lines)


def proxy_lines(report):
    """The sentence on the upstream reached directly, in the same run as the proxies."""
    alone = report.get("proxy_direct")
    if not (alone and "ours_of_direct" in alone):
        return []
    return ["", f"The same step06 without a proxy in front, same run: {alone['rps']:,.0f} req/s, "
                f"p99 {alone['p99']:.1f} ms: through step07, {alone['ours_of_direct']:.2f}× of "
                f"direct; through nginx, {alone['theirs_of_direct']:.2f}×."]


def main():
    parser = command_line(__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rows", default="step05,step06,step04,step07,idle",
                        help="which rows (default all: step05,step06,step04,step07,idle)")
    parser.add_argument("--write-docs", action="store_true", help=f"update the table in {DOC}")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    raise_fd_limit()
    build_release([c for c in ("step04-threadpool", "step05-epoll-kqueue", "step06-master-worker",
                               "step07-reverse-proxy") if os.path.isdir(os.path.join(ROOT, c))])

    plan = comparisons(rows)
    # Every (row, side) is measured once per round: round 1 of all of them, then round 2, ...
    entries = [(i, side) for i in range(len(plan)) for side in (2, 3)]

    def measure(entry):
        i, side = entry
        _, workload, ours, theirs, clients, keep_alive, _ = plan[i]
        contender = ours if side == 2 else theirs
        result = wrk_against(contender, clients, args.duration, keep_alive, warm_up=False)
        print(f"{contender.label:<32} {workload:<17} "
              f"{result['requests_per_s'] if result else 0:>10,.0f} req/s  "
              f"p99 {result['p99_ms'] if result else 0:7.1f} ms")
        return result

    found = dict(zip(entries, same_run(entries, args.runs, measure)))

    report = {"meta": {"date": datetime.date.today().isoformat(), "machine": machine(),
                       "command": "python3 scripts/bench_vs_nginx.py " + " ".join(sys.argv[1:]),
                       "runs": args.runs, "duration_s": args.duration},
              "rows": [], "fairness": []}
    for i, (row, workload, ours, theirs, clients, keep_alive, target) in enumerate(plan):
        mine, other = medians(found[(i, 2)]), medians(found[(i, 3)])
        ratio = paired_ratio(found[(i, 2)], found[(i, 3)])
        if ratio is None:
            continue
        report["rows"].append({
            "ours": ours.label, "theirs": theirs.label, "workload": workload, "target": target,
            "ours_rps": mine["requests_per_s"], "theirs_rps": other["requests_per_s"],
            "ratio": ratio,
            "ours_p99": mine["p99_ms"], "theirs_p99": other["p99_ms"],
        })
        if row == "step04" and keep_alive:
            for contender in (ours, theirs):
                with contender.start() as server:
                    counts = answers_per_client(server.host, server.port, clients, args.duration)
                report["fairness"].append({"server": contender.label, "clients": clients,
                                           "answered": sum(1 for c in counts if c), "duration_s": args.duration})
    proxied, alone = proxy_comparison(rows, args.runs, args.duration)
    report["rows"] += proxied
    if alone:
        own = next((row for row in proxied if row["workload"] == "keep-alive c100"
                    and row["ours"] == "step07-reverse-proxy → step06"), None)
        if own:
            alone["ours_of_direct"] = own["ours_rps"] / alone["rps"]
            alone["theirs_of_direct"] = own["theirs_rps"] / alone["rps"]
        report["proxy_direct"] = alone
    report["idle"] = idle_memory(rows)

    table = render(report)
    print("\n" + table)
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench-vs-nginx.json"), "w") as out:
        json.dump(report, out, indent=1)
    if args.write_docs:
        write_region(DOC, "bench_vs_nginx", table)
        if any("→" in row["ours"] for row in report["rows"]):
            write_region(CHAPTER_07, "bench_vs_nginx_step07", render(report, only_proxy=True))
        write_data(DATA, "bench_vs_nginx", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
