#!/usr/bin/env python3
"""Where the time goes: CPU per request, user and kernel, ours against nginx, same run.

Starts step06 as the upstream, then step07 (one group of that upstream) with its own client,
step07 with `--upstream-client reqwest`, and nginx `proxy_pass` to it
(scripts/peers/nginx-proxy.conf), each with --workers workers and the same keep-alive pool to
the upstream, and loads each in turn with wrk (2 threads, 100 kept-alive clients, --duration
s), --runs times, interleaved. From /proc it reads the CPU time the proxy's processes spent
(not the upstream's, not wrk's), split into user space and kernel, and divides by the
requests answered; each figure is the median of the runs. Then the same for the upstream
alone, hit directly. With --perf, it also samples step07's worker with `perf record` (first
run) and prints the shares of its time by library and the costliest functions.

With --new-connections, the proxies get a new client connection per request (wrk's
`Connection: close`; their upstream connections stay pooled).

With --close, it compares step06 and nginx (`worker_processes auto`) serving the hello page
themselves, with a new connection per request (wrk's `Connection: close`): how much of a short
connection's cost is the kernel's, which no server can save.

Examples:
  python3 scripts/cpu_per_request.py
  python3 scripts/cpu_per_request.py --perf --runs 1
  python3 scripts/cpu_per_request.py --write-docs      # the table in docs/performance.md and chapter 07
                                                       # (its figures in docs/performance.json)
  python3 scripts/cpu_per_request.py --new-connections
  python3 scripts/cpu_per_request.py --close
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import run_wrk  # noqa: E402
from servers import (  # noqa: E402
    ROOT, PeerServer, StepServer, build_release, machine, nginx_peer, nginx_proxy_peer, process_tree,
    raise_fd_limit, tree_cpu_seconds, write_data, write_proxy_config, write_region,
)

DOC = os.path.join(ROOT, "docs", "performance.md")
DATA = os.path.join(ROOT, "docs", "performance.json")
CHAPTER_07 = os.path.join(ROOT, "docs", "07-reverse-proxy.md")

# One worker serves all 100 clients by default: room in the pool for each client's upstream
# connection, on both sides (nginx's `keepalive` is per worker too).
KEEPALIVE = 128


def measure(label, server, duration, exclude=(), perf=False, keep_alive=True):
    """One run: the rate and the CPU µs per request (user, kernel) of `server`'s processes."""
    run_wrk(server.url + "/", 100, 1, keep_alive)  # warm-up: pools filled, pages faulted in
    before = tree_cpu_seconds(server.pid, exclude)
    recorder = None
    if perf:
        workers = [pid for pid in process_tree(server.pid) if pid != server.pid and pid not in exclude]
        data = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
        recorder = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", data,
                                     "-p", ",".join(map(str, workers)), "--", "sleep", str(duration)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run_wrk(server.url + "/", 100, duration, keep_alive)
    after = tree_cpu_seconds(server.pid, exclude)
    if result is None or not result["requests"]:
        sys.exit(f"cpu_per_request: wrk gave no result against {label}")
    user = (after[0] - before[0]) / result["requests"] * 1e6
    kernel = (after[1] - before[1]) / result["requests"] * 1e6
    print(f"{label:<34} {result['requests_per_s']:>9,.0f} req/s   CPU per request: "
          f"{user:5.1f} µs user + {kernel:5.1f} µs kernel = {user + kernel:5.1f} µs", flush=True)
    if recorder:
        recorder.wait()
        for sort, lines in (("dso", 12), ("sym", 25)):
            report = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none", "--sort", sort,
                                     "--stdio", "--percent-limit", "1"],
                                    capture_output=True, text=True).stdout
            rows = [line for line in report.splitlines() if line.strip() and not line.startswith("#")
                    and "%" in line.split()[0]]
            print(f"  {label}, by {sort}:")
            for row in rows[:lines]:
                print("   ", row.strip()[:150])
        os.unlink(data)
    return {"requests_per_s": result["requests_per_s"], "user_us": user, "kernel_us": kernel}


def render(meta, rows):
    lines = [
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}`: wrk `-t2 -c100`, "
        f"{meta['load']} between the clients and the proxy, {meta['duration_s']} s per run, {meta['workers']} proxy worker(s), each figure "
        f"the median of {meta['runs']} interleaved runs. The proxies, the upstream and wrk share the cores.",
        "",
        "| | req/s | user µs per request | kernel µs per request | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        total = row["user_us"] + row["kernel_us"]
        lines.append(f"| {row['label']} | {row['requests_per_s']:,.0f} | {row['user_us']:.1f} | "
                     f"{row['kernel_us']:.1f} | {total:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of load (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs, medians kept (default 3)")
    parser.add_argument("--workers", default="1", help="proxy workers, every proxy (default 1)")
    parser.add_argument("--perf", action="store_true", help="also profile step07's worker with perf")
    parser.add_argument("--write-docs", action="store_true", help=f"update the tables in {DOC} and {CHAPTER_07}")
    parser.add_argument("--new-connections", action="store_true",
                        help="the proxies with a new client connection per request")
    parser.add_argument("--close", action="store_true",
                        help="step06 against nginx auto, serving themselves, a connection per request")
    args = parser.parse_args()
    if not nginx_peer(1):
        parser.error("needs nginx (apt-get install nginx-light)")
    raise_fd_limit()
    if args.close:
        build_release(["step06-master-worker"])
        print(f"wrk -t2 -c100, Connection: close, {args.duration} s each; {machine()}")
        with StepServer("step06-master-worker") as ours:
            measure("step06, workers auto", ours, args.duration, keep_alive=False)
        with PeerServer("nginx", nginx_peer("auto")) as theirs:
            measure("nginx, worker_processes auto", theirs, args.duration, keep_alive=False)
        return 0
    build_release(["step06-master-worker", "step07-reverse-proxy"])
    load = "Connection: close" if args.new_connections else "keep-alive"
    print(f"wrk -t2 -c100 {load}, {args.duration} s each, {args.runs} runs; {machine()}")
    results = {}
    with StepServer("step06-master-worker") as upstream:
        address = f"{upstream.host}:{upstream.port}"
        upstream_pids = set(process_tree(upstream.pid))
        config = write_proxy_config(os.path.join(ROOT, "target", "cpu-per-request.toml"), [address],
                                    keepalive=KEEPALIVE)
        proxies = [
            ("step07 → step06 (own client)", lambda: StepServer(
                "step07-reverse-proxy", ["--config", config, "--workers", args.workers])),
            ("step07 → step06 (reqwest)", lambda: StepServer(
                "step07-reverse-proxy", ["--config", config, "--workers", args.workers,
                                         "--upstream-client", "reqwest"])),
            ("nginx `proxy_pass` → step06", lambda: PeerServer(
                "nginx proxy_pass", nginx_proxy_peer(address, args.workers, KEEPALIVE))),
        ]
        for run in range(args.runs):
            for i, (label, start) in enumerate(proxies):
                with start() as server:
                    perf = args.perf and run == 0 and i == 0
                    results.setdefault(label, []).append(
                        measure(label, server, args.duration, upstream_pids, perf,
                                keep_alive=not args.new_connections))
            results.setdefault("step06 alone", []).append(measure("step06 alone", upstream, args.duration))
    rows = [{"label": label, **{key: statistics.median(r[key] for r in runs)
                                for key in ("requests_per_s", "user_us", "kernel_us")}}
            for label, runs in results.items()]
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "command": "python3 scripts/cpu_per_request.py " + " ".join(sys.argv[1:]),
            "runs": args.runs, "duration_s": args.duration, "workers": args.workers, "load": load}
    table = render(meta, rows)
    print("\n" + table)
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "cpu-per-request.json"), "w") as out:
        json.dump({"meta": meta, "rows": rows}, out, indent=1)
    if args.write_docs:
        region = "cpu_per_request_close" if args.new_connections else "cpu_per_request"
        write_region(DOC, region, table)
        if not args.new_connections:
            write_region(CHAPTER_07, region, table)
        write_data(DATA, region, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
