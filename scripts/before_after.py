#!/usr/bin/env python3
"""Did my change make it faster? Two builds of a step under the same wrk load, interleaved.

Give the binary from before the change and the one after (build the old one from another
checkout, e.g. `git worktree add /tmp/before HEAD~1 && cargo build --release --manifest-path
/tmp/before/Cargo.toml --target-dir /tmp/before-target -p step05-epoll-kqueue`). Each run starts
a binary, loads it with wrk (2 threads, --clients connections, keep-alive and
`Connection: close`), stops it, then does the same with the other; --runs rounds, alternating
which goes first. Reports the medians and the ratio after/before. Interleaving matters on a
shared machine: the noise hits both builds alike, so the ratio holds where absolute figures
drift.

Examples:
  python3 scripts/before_after.py /tmp/before-target/release/step05-epoll-kqueue target/release/step05-epoll-kqueue
  python3 scripts/before_after.py OLD NEW --runs 5 --duration 5 -- --workers 2
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import run_wrk  # noqa: E402
from servers import StepServer, machine, raise_fd_limit  # noqa: E402


def measure(path, options, clients, duration, keep_alive):
    with StepServer(os.path.basename(path), options, path=path) as server:
        run_wrk(server.url + "/", clients, 1, keep_alive)  # warm-up
        return run_wrk(server.url + "/", clients, duration, keep_alive)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("before", help="the binary before the change")
    parser.add_argument("after", help="the binary after it")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--clients", type=int, default=100, help="connections (default 100)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("options", nargs="*", help="after --: options for both binaries")
    args = parser.parse_args()
    for path in (args.before, args.after):
        if not os.access(path, os.X_OK):
            parser.error(f"{path}: not an executable")

    raise_fd_limit()
    report = {"machine": machine(), "clients": args.clients}
    for mode, keep_alive in (("keep_alive", True), ("close", False)):
        runs = {"before": [], "after": []}
        for round_ in range(args.runs):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for which in order:
                path = args.before if which == "before" else args.after
                result = measure(path, args.options, args.clients, args.duration, keep_alive)
                if result is None:
                    sys.exit(f"before_after: wrk gave no result against {path}")
                runs[which].append(result)
        row = {}
        for which, results in runs.items():
            row[which] = {
                "requests_per_s": round(statistics.median(r["requests_per_s"] for r in results)),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 2),
                "failed": sum(r["failed"] for r in results),
            }
        row["ratio"] = round(row["after"]["requests_per_s"] / row["before"]["requests_per_s"], 3)
        report[mode] = row

    if args.json:
        print(json.dumps(report))
        return 0
    print(f"wrk -t2 -c{args.clients}, median of {args.runs} interleaved runs, {report['machine']}")
    for mode in ("keep_alive", "close"):
        row = report[mode]
        print(f"  {mode:10}  before {row['before']['requests_per_s']:>8} req/s "
              f"(p99 {row['before']['p99_ms']} ms)   after {row['after']['requests_per_s']:>8} req/s "
              f"(p99 {row['after']['p99_ms']} ms)   after/before {row['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
