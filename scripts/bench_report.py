#!/usr/bin/env python3
"""Turn criterion's results into the table of medians in docs/benchmarks.md.

Run `cargo bench -p benches` first (it writes target/criterion/**/new/estimates.json), then:

  python3 scripts/bench_report.py                 # writes docs/benchmarks.md and .json
  python3 scripts/bench_report.py --stdout        # prints the table instead

The page states the machine (cores, CPU model, kernel) and the date of the run. The medians go
to docs/benchmarks.json too, beside the page: the book quotes them, and scripts/check_book.py
checks every quote against that file.
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import ROOT, machine, write_data  # noqa: E402

# The order and grouping of the table: (section title, prefix of the benchmark ids).
SECTIONS = [
    ("Starting a worker", ("process:", "thread:")),
    ("Handing work to another thread", ("mpsc:", "condvar:", "queue:", "pool:")),
    ("Waiting for readiness", ("poller:",)),
    ("Per request, whatever the model", ("parse:", "route + render:")),
    ("End to end over loopback (one request and its answer)", ("end to end/",)),
]


def load_results(criterion_dir):
    """{benchmark id: median in nanoseconds} for every benchmark criterion has measured."""
    results = {}
    for folder, _, files in os.walk(criterion_dir):
        if os.path.basename(folder) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(folder, "benchmark.json")) as source:
                name = json.load(source)["full_id"]
            with open(os.path.join(folder, "estimates.json")) as source:
                median = json.load(source)["median"]["point_estimate"]
        except (OSError, KeyError, ValueError):
            continue
        results[name] = median
    return results


def human(nanoseconds):
    if nanoseconds >= 1e6:
        return f"{nanoseconds / 1e6:.2f} ms"
    if nanoseconds >= 1e3:
        return f"{nanoseconds / 1e3:.1f} µs"
    return f"{nanoseconds:.0f} ns"


def report_of(results):
    """What the page shows, as data: the run's date and machine, and every median."""
    report = {
        "meta": {"date": datetime.date.today().isoformat(), "machine": machine(),
                 "command": "cargo bench -p benches; python3 scripts/bench_report.py"},
        "medians_ns": dict(sorted(results.items())),
    }
    pingpong = next((value for name, value in results.items() if name.startswith("condvar:")), None)
    if pingpong is not None:
        report["wake_up_ns"] = pingpong / 2
    return report


def render(report):
    results, meta = report["medians_ns"], report["meta"]
    lines = [
        "# Benchmarks: what each model pays",
        "",
        "Medians from `cargo bench -p benches` (criterion), turned into this page by",
        "`python3 scripts/bench_report.py`. Machine: " + meta["machine"] + "; run on "
        + meta["date"] + ".",
        "The benchmark and the servers it starts share the same cores, and nothing was pinned.",
        "Criterion's full reports, with distributions, are in `target/criterion/report/index.html`.",
        "",
    ]
    if "wake_up_ns" in report:
        lines += [
            f"**How to read it.** Waking a sleeping thread costs about {human(report['wake_up_ns'])} here (the",
            "condvar row is two wake-ups), several times a typical bare-metal figure: on a virtual",
            "machine a CPU with nothing to do is parked, and unparking it is slow. Every row that hands",
            "work to another thread, and every end-to-end row (the server must wake for the request, the",
            "client for the answer), is mostly that cost. One request at a time hides the models'",
            "differences; with a hundred clients at once, in [the comparison](comparison.md), the",
            "wake-ups overlap and the models separate.",
            "",
        ]
    used = set()
    for title, prefixes in SECTIONS:
        rows = [(name, value) for name, value in results.items() if name.startswith(prefixes)]
        if not rows:
            continue
        lines += [f"## {title}", "", "| benchmark | median |", "|---|---:|"]
        for name, value in sorted(rows, key=lambda row: (prefixes.index(next(p for p in prefixes if row[0].startswith(p))), row[0])):
            label = name.removeprefix("end to end/")
            lines.append(f"| {label} | {human(value)} |")
            used.add(name)
        lines.append("")
    rest = sorted(set(results) - used)
    if rest:
        lines += ["## Other", "", "| benchmark | median |", "|---|---:|"]
        lines += [f"| {name} | {human(results[name])} |" for name in rest]
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--criterion-dir", default=os.path.join(ROOT, "target", "criterion"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="the page to write; its data goes beside it, with .json")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing --out")
    args = parser.parse_args()
    results = load_results(args.criterion_dir)
    if not results:
        print(f"bench_report.py: no results under {args.criterion_dir}; run cargo bench -p benches first",
              file=sys.stderr)
        return 1
    report = report_of(results)
    page = render(report)
    if args.stdout:
        print(page)
    else:
        with open(args.out, "w") as out:
            out.write(page)
        print(f"wrote {args.out} ({len(results)} benchmarks)")
        write_data(os.path.splitext(args.out)[0] + ".json", "bench_report", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
