#!/usr/bin/env python3
"""What each step withstands, measured: slow clients, running out of descriptors, storms.

For every step (or those named), one after the other, on release builds:
  - slow_clients.py: 500 connections trickling their heads a byte a second, with the step's
    default 10 s header timeout, while a normal client measures its latency;
  - exhaustion.py: the step under `ulimit -n 256`, 1 000 connections held for 3 s: its CPU
    while out of descriptors, and how soon it serves again;
  - storm.py: two 10 s storms of connect/close; processes, threads, descriptors and memory
    after them.

Prints a table, keeps the reports in target/hardening.json, and with --write-docs puts the
table into docs/hardening.md and the reports into docs/hardening.json (the book quotes them;
scripts/check_book.py checks the quotes against that file). Takes about 10 minutes for the
seven steps.

Examples:
  python3 scripts/hardening_report.py
  python3 scripts/hardening_report.py step05-epoll-kqueue step07-reverse-proxy
  python3 scripts/hardening_report.py --write-docs
  python3 scripts/hardening_report.py step07-reverse-proxy --keep-others --write-docs
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import ROOT, build_release, command_line, machine, write_data, write_region  # noqa: E402

STEPS = [
    "step01-fork",
    "step02-threads",
    "step03-queue-autoscale",
    "step04-threadpool",
    "step05-epoll-kqueue",
    "step06-master-worker",
    "step07-reverse-proxy",
]
DOC = os.path.join(ROOT, "docs", "hardening.md")
DATA = os.path.join(ROOT, "docs", "hardening.json")


def run(script, *args):
    """Runs one of the scripts with --json; its report, or None with the reason printed."""
    command = [sys.executable, os.path.join(ROOT, "scripts", script), *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        print(f"  {script} gave no report: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None


def measure(step):
    print(f"{step}: slow clients", file=sys.stderr)
    slow = run("slow_clients.py", step, "-n", "500")
    print(f"{step}: out of descriptors", file=sys.stderr)
    exhaustion = run("exhaustion.py", step, "--open-files", "256", "--attempts", "1000")
    print(f"{step}: storms", file=sys.stderr)
    # step03 retires its extra workers one at a time (every --shrink-after-ms, 500 ms): after a
    # storm that grew it to 100, that takes a minute, which is its design, not a leak.
    storm = run("storm.py", step, "--duration", "10", "--settle", "120")
    return {"step": step, "slow_clients": slow, "exhaustion": exhaustion, "storm": storm}


def slow_cells(report):
    if not report:
        return ["-", "-", "-"]
    answers = report["slow_answers"]
    timed_out = sum(count for status, count in answers.items() if " 408 " in status)
    others = report["slow_opened"] - timed_out
    if report.get("slow_refused"):
        others = f"{others} ({report['slow_refused']} refused)"
    peak = []
    if report.get("server_peak_processes"):
        peak.append(f"{report['server_peak_processes']} proc")
    if report.get("server_peak_threads"):
        peak.append(f"{report['server_peak_threads']} thr")
    if report.get("server_peak_rss_mib"):
        peak.append(f"{report['server_peak_rss_mib']} MiB")
    return [
        f"{timed_out} / {others}",
        f"{report['normal_p99_ms']} ms ({report['normal_ok']} ok, {report['normal_failed']} failed)",
        ", ".join(peak) or "-",
    ]


def exhaustion_cells(report):
    if not report:
        return ["-", "-"]
    again = report["served_again_after_s"]
    return [
        f"{report['cpu_share_while_stuck'] * 100:.1f} %",
        f"{again} s" if again is not None else "never",
    ]


def storm_cells(report):
    if not report:
        return ["-", "-"]
    before, after = report["before"], report["after_second"]
    back = all(after[key] <= before[key] for key in ("processes", "threads", "fds"))
    return [
        f"{report['connections_per_s']}/s; {'back to' if back else 'NOT back to'} "
        f"{before['processes']} proc, {before['threads']} thr, {before['fds']} fds",
        f"{report['rss_growth_second_storm_mib']:+.2f} MiB",
    ]


def render(results, where):
    rows = [
        "| step | slow clients: 408 / other | normal p99 meanwhile | peak while slow | "
        "CPU out of fds | serves again | storms | memory, 2nd storm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cells = [result["step"], *slow_cells(result["slow_clients"]),
                 *exhaustion_cells(result["exhaustion"]), *storm_cells(result["storm"])]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    rows.append("")
    rows.append(f"Measured with `python3 scripts/hardening_report.py` on {where}.")
    return "\n".join(rows)


def main():
    parser = command_line(__doc__)
    parser.add_argument("steps", nargs="*", help="crates to measure (default: all seven)")
    parser.add_argument("--write-docs", action="store_true", help=f"update the table in {DOC}")
    parser.add_argument("--keep-others", action="store_true",
                        help="measure only the steps named; keep the other rows of the last run "
                             "(target/hardening.json)")
    args = parser.parse_args()
    steps = args.steps or STEPS
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        parser.error(f"unknown step {unknown[0]} (one of {', '.join(STEPS)})")
    build_release(steps)
    results = [measure(step) for step in steps]
    saved = os.path.join(ROOT, "target", "hardening.json")
    if args.keep_others and os.path.exists(saved):
        with open(saved) as source:
            earlier = {row["step"]: row for row in json.load(source)}
        earlier.update({row["step"]: row for row in results})
        results = [earlier[step] for step in STEPS if step in earlier]
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(saved, "w") as out:
        json.dump(results, out, indent=1)
    where = machine()
    table = render(results, where)
    print(table)
    if args.write_docs:
        write_region(DOC, "hardening_report", table)
        command = "python3 scripts/hardening_report.py " + " ".join(sys.argv[1:])
        write_data(DATA, "hardening_report", {"meta": {"command": command, "machine": where},
                                              "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
