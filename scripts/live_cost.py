#!/usr/bin/env python3
"""What watching costs: hello-page throughput with /live open in a browser, and without.

For each step, starts its release build, then alternates runs of the same load (wrk, or
accesses.py where wrk is missing: keep-alive clients asking for /) with nobody watching, with
the page's polls alone (GET /stats?close four times a second, what the server is asked), and
with headless Chromium showing /live (scripts/live.py) on the same cores, where the browser's
own drawing competes with the server for the CPU.
Interleaved runs, so that a machine that slows down mid-way hurts both sides alike; the table
gives each side's median and the difference. Take the benchmark lock on a shared machine:
flock /work/bench.lock python3 scripts/live_cost.py ...

Usage:
  python3 scripts/live_cost.py                          # step03 and step05, 5 runs of 3 s each side
  python3 scripts/live_cost.py --steps step05-epoll-kqueue --runs 3 --duration 2
  python3 scripts/live_cost.py --write-docs             # the table in chapter 03 (data: docs/03-queue-autoscale.json)

Exit status: 0, or 1 when a run failed to measure or the browser could not watch; 2 when
Chromium is missing.
"""

import datetime
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live import find_browser  # noqa: E402
from load import run_accesses, run_wrk  # noqa: E402
from servers import (  # noqa: E402
    ROOT, StepServer, build_release, command_line, machine, write_data, write_region,
)

DOC = os.path.join(ROOT, "docs", "03-queue-autoscale.md")
DATA = os.path.join(ROOT, "docs", "03-queue-autoscale.json")
REGION = "live_cost"
SIDES = ["unwatched", "polled", "watched"]


def poll_stats(url, stop):
    """What the page asks of the server, without a browser: GET /stats?close 4 times a second."""
    while not stop.wait(0.25):
        try:
            urllib.request.urlopen(url + "/stats?close", timeout=5).read()
        except OSError:
            pass


def one_run(server, clients, duration, side):
    """One load run against `/`: nobody watching, the page's polls alone (`polled`), or
    headless Chromium showing /live (`watched`)."""
    watcher = poller = None
    stop = threading.Event()
    if side == "polled":
        poller = threading.Thread(target=poll_stats, args=(server.url, stop), daemon=True)
        poller.start()
    if side == "watched":
        watcher = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "scripts", "live.py"), server.url,
             "--seconds", str(duration + 5), "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # The browser starts (about two CPU-seconds of start-up on our machine) and the page
        # polls before the load does: what is measured is a page that is open, not a browser
        # starting.
        time.sleep(4.0)
    url = server.url + "/"
    summary = (run_wrk(url, clients, duration) if shutil.which("wrk")
               else run_accesses(url, clients, duration))
    stop.set()
    if poller is not None:
        poller.join()
    if watcher is not None and watcher.wait(timeout=60) != 0:
        return None
    return summary


def main(argv):
    parser = command_line(__doc__)
    parser.add_argument("--steps", default="step03-queue-autoscale,step05-epoll-kqueue")
    parser.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per run (default 3)")
    parser.add_argument("--clients", type=int, default=16, help="keep-alive clients (default 16)")
    parser.add_argument("--write-docs", action="store_true", help=f"update the table in {os.path.relpath(DOC, ROOT)}")
    args = parser.parse_args(argv)
    if find_browser() is None:
        print("live_cost.py: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    steps = args.steps.split(",")
    build_release(steps)
    rows = []
    for step in steps:
        rates = {side: [] for side in SIDES}
        with StepServer(step) as server:
            for run in range(args.runs):
                # Alternate which side goes first, so that neither always follows the other.
                order = SIDES if run % 2 == 0 else SIDES[::-1]
                for side in order:
                    summary = one_run(server, args.clients, args.duration, side)
                    if summary is None or summary["failed"]:
                        print(f"{step}: a {side} run failed: {summary}", file=sys.stderr)
                        return 1
                    rates[side].append(summary["requests_per_s"])
                    print(f"{step} {side}: {summary['requests_per_s']:.0f} req/s", flush=True)
        unwatched, polled, watched = (statistics.median(rates[s]) for s in SIDES)
        rows.append({"step": step, "unwatched_rps": round(unwatched), "polled_rps": round(polled),
                     "watched_rps": round(watched),
                     "polled_difference_percent": round(100 * (polled - unwatched) / unwatched, 1),
                     "watched_difference_percent": round(100 * (watched - unwatched) / unwatched, 1),
                     "runs": rates})
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "command": "python3 scripts/live_cost.py " + " ".join(argv),
            "runs": args.runs, "duration_s": args.duration, "clients": args.clients,
            "tool": "wrk" if shutil.which("wrk") else "accesses.py"}
    lines = [f"Measured by `python3 scripts/live_cost.py` ({meta['machine']}, {meta['date']}; "
             f"{args.runs} interleaved runs of {args.duration} s per side, {args.clients} keep-alive "
             f"clients asking for `/` with {meta['tool']}; medians):",
             "",
             "| step | nobody watching | the page's polls alone | /live open in Chromium, same cores |",
             "|---|---|---|---|"]

    def cell(row, side):
        runs = row["runs"][side]
        return f"{row[side + '_rps']} ({min(runs):.0f} to {max(runs):.0f})"

    for row in rows:
        lines.append(f"| `{row['step']}` | {cell(row, 'unwatched')} | {cell(row, 'polled')}, "
                     f"{row['polled_difference_percent']:+.1f} % | {cell(row, 'watched')}, "
                     f"{row['watched_difference_percent']:+.1f} % |")
    lines += ["", "Requests per second: the median of the runs, and (in brackets) the slowest and "
              "the fastest run."]
    table = "\n".join(lines)
    print("\n" + table)
    if args.write_docs:
        write_region(DOC, REGION, table)
        write_data(DATA, REGION, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
