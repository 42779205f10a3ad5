#!/usr/bin/env python3
"""Replacing a server's binary under load: step 06's SIGUSR2, a plain stop and start, and nginx's SIGUSR2.

The measurement of docs/beyond-step07.md, three scenarios in one run. Each starts the server
with two workers on a free port, fires an open-loop load at it with scripts/accesses.py
(--rate R for --duration S, a new connection per request, so that accepting never stops), and
at --at seconds:

  step06 SIGUSR2        kill -USR2 the master: it execs its binary, which adopts the listening
                        socket; the old master retires once the new workers are ready
  step06 stop, start    kill -TERM the master, wait until it has exited, start it again on the
                        same port: what a server without SIGUSR2 must do
  nginx SIGUSR2         kill -USR2 nginx's master, and once the new master's workers run,
                        kill -QUIT the old master (nginx's documented procedure)

For each it reports the requests, how many failed and why, and the largest gap in the
answered timeline (the longest time without an answer) and when it began: near the change
(from 0.2 s before to 2 s after), and over the whole run, whose largest gap may be the load
generator's own hiccup (a Python client on a busy machine) rather than the server's: the
whole-run figure is the floor against which the change's gap reads. --runs N repeats
the three, interleaved, and keeps every run. nginx is skipped (with a line saying so) when it
is not installed. Every process is stopped at the end, by process group, and reaped. Take
`flock /work/bench.lock` around it on a shared machine.

Usage: python3 scripts/upgrade.py [--rate 1000] [--duration 10] [--at 4] [--runs 1] [--write-docs]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
from nginx_upgrade import nginx_processes, start_nginx  # noqa: E402
from servers import (  # noqa: E402
    ROOT, adopt_orphans, binary, build_release, copy_site, free_port, kill_groups_and_reap, machine,
    render_template, wait_for_port, write_data, write_region,
)

CHAPTER = os.path.join(ROOT, "docs", "beyond-step07.md")
DATA = os.path.join(ROOT, "docs", "beyond-step07.json")
STEP06 = "step06-master-worker"


def start_load(port, args):
    return subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "accesses.py"), f"http://127.0.0.1:{port}/",
         "--rate", str(args.rate), "--duration", str(args.duration), "-c", "50",
         "--timeout", "5", "--json", "--timeline"],
        stdout=subprocess.PIPE, text=True,
    )


def start_step06(port, workdir):
    """Starts step 06 on `port`; (its process, whether it listens)."""
    with open(os.path.join(workdir, "step06.log"), "a") as log:
        process = subprocess.Popen(
            [binary(STEP06), "--port", str(port), "--workers", "2", "--quiet"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    return process, wait_for_port(port)


def step06_upgrade(port, workdir, args):
    process, listening = start_step06(port, workdir)
    groups = [process.pid]
    if not listening:
        return groups, None, "did not start"

    def at_the_moment():
        process.send_signal(signal.SIGUSR2)
        # The old master exits once the new one's workers are ready: our child, we reap it.
        process.wait(timeout=30)
        return f"old master exited {process.returncode}"
    return groups, at_the_moment, None


def step06_restart(port, workdir, args):
    process, listening = start_step06(port, workdir)
    groups = [process.pid]
    if not listening:
        return groups, None, "did not start"

    def at_the_moment():
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        again, listening = start_step06(port, workdir)
        groups.append(again.pid)
        return f"stopped, and listening again {time.monotonic() - stopping:.3f} s after SIGTERM"
    return groups, at_the_moment, None


def nginx_upgrade(port, workdir, args):
    for folder in ("logs", "temp"):
        os.makedirs(os.path.join(workdir, folder), exist_ok=True)
    conf = render_template("nginx.conf", workdir, port=port, workers=2, prefix=workdir,
                           root=copy_site(workdir), keepalive_timeout="5s")
    master, group, listening = start_nginx(workdir, conf, port)
    groups = [group]
    if not listening:
        return groups, None, "did not start"

    def at_the_moment():
        os.kill(master, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            masters, workers = nginx_processes(group)
            if len(masters) == 2 and len(workers) == 4:
                break
            time.sleep(0.01)
        os.kill(master, signal.SIGQUIT)
        os.waitpid(master, 0)  # our child since adopt_orphans
        return f"then: masters and workers {nginx_processes(group)}"
    return groups, at_the_moment, None


SCENARIOS = [
    ("step06 SIGUSR2", "step06-usr2", step06_upgrade),
    ("step06 stop, start", "step06-restart", step06_restart),
    ("nginx SIGUSR2", "nginx-usr2", nginx_upgrade),
]


def run_one(name, start, args):
    workdir = tempfile.mkdtemp(prefix="upgrade-")
    port = free_port()
    groups, at_the_moment, failed = start(port, workdir, args)
    load = None
    try:
        if failed:
            return {"error": failed}
        time.sleep(0.3)  # let the workers start
        load = start_load(port, args)
        started = time.monotonic()
        time.sleep(max(0.0, started + args.at - time.monotonic()))
        what = at_the_moment()
        print(f"  {name}: at {args.at:g} s: {what}", flush=True)
        output, _ = load.communicate(timeout=args.duration + 60)
        summary = json.loads(output)
        # Around the change: from just before it to two seconds after (the new master's start).
        near = [t for t in summary["answered_at_s"] if args.at - 0.2 <= t <= args.at + 2.0]
        gaps = [(after - before, before) for before, after in zip(near, near[1:])]
        near_gap, near_at = max(gaps, default=(0.0, args.at))
        return {
            "change_gap_ms": round(near_gap * 1000, 1),
            "change_gap_at_s": round(near_at, 2),
            "event": what,
            "requests": summary["requests"],
            "answered": summary["ok"],
            "failed": summary["failed"],
            "failures": summary["failures"],
            "largest_gap_ms": summary["largest_gap_ms"],
            "largest_gap_at_s": summary["largest_gap_at_s"],
            "p99_ms": (summary["latency_ms"] or {}).get("p99"),
        }
    finally:
        kill_groups_and_reap(groups, load)
        shutil.rmtree(workdir, ignore_errors=True)


def table(report):
    lines = [
        f"{report['rate']:g} requests a second for {report['duration']:g} s, a new connection "
        f"each, the binary replaced at {report['at']:g} s; {report['machine']}, "
        f"{report['date']}, {report['note']}:",
        "",
        "| server, how | requests | failed | longest without an answer, near the change | "
        "the same, whole run |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key, _ in SCENARIOS:
        runs = report["scenarios"].get(key)
        if not runs:
            lines.append(f"| {label} | | | not run |")
            continue
        requests = " / ".join(f"{run.get('requests', 0):,}" for run in runs)
        failed = " / ".join(
            str(run["failed"]) if "failed" in run else run.get("error", "?") for run in runs
        )
        near = " / ".join(
            f"{run['change_gap_ms']:.0f} ms at {run['change_gap_at_s']:.2f} s"
            for run in runs if "change_gap_ms" in run
        )
        whole = " / ".join(
            f"{run['largest_gap_ms']:.0f} ms at {run['largest_gap_at_s']:.2f} s"
            for run in runs if "largest_gap_ms" in run
        )
        lines.append(f"| {label} | {requests} | {failed} | {near} | {whole} |")
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="requests per second (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--at", type=float, default=4.0, help="when to replace the binary (default 4)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of the three (default 1)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the table into docs/beyond-step07.md and the data beside it")
    args = parser.parse_args(argv)
    if not 0 < args.at < args.duration:
        parser.error("--at must fall within --duration")

    build_release([STEP06])
    adopt_orphans()
    has_nginx = shutil.which("nginx") is not None
    if not has_nginx:
        print("upgrade.py: nginx is not installed (apt-get install nginx): its row is skipped",
              file=sys.stderr)
    report = {
        "rate": args.rate, "duration": args.duration, "at": args.at, "runs": args.runs,
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "note": "the servers and the load generator sharing the cores",
        "scenarios": {},
    }
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        for label, key, start in SCENARIOS:
            if key.startswith("nginx") and not has_nginx:
                continue
            outcome = run_one(label, start, args)
            print(f"  {label}: {outcome}", flush=True)
            report["scenarios"].setdefault(key, []).append(outcome)
    text = table(report)
    print()
    print(text)
    if args.write_docs:
        write_region(CHAPTER, "upgrade", text)
        write_data(DATA, "upgrade", report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
