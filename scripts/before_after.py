#!/usr/bin/env python3
"""Did my change make it faster? Two builds of a step under the same wrk load, interleaved.

Give the binary from before the change and the one after (build the old one from another
checkout, e.g. `git worktree add /tmp/before HEAD~1 && cargo build --release --manifest-path
/tmp/before/Cargo.toml --target-dir /tmp/before-target -p step05-epoll-kqueue`). Each run starts
a binary, loads it with wrk (2 threads, --clients connections, keep-alive and
`Connection: close`), stops it, then does the same with the other; --runs rounds, alternating
which goes first. Reports the medians, the ratio after/before (the median of the rounds'
ratios, each taken from two runs a few seconds apart), and the CPU time each
build's processes spent per request (Linux). Interleaving matters on a shared machine: the
noise hits both builds alike, so the ratio holds where absolute figures drift.

Examples:
  python3 scripts/before_after.py /tmp/before-target/release/step05-epoll-kqueue target/release/step05-epoll-kqueue
  python3 scripts/before_after.py OLD NEW --runs 5 --duration 5 -- --workers 2
  python3 scripts/before_after.py OLD NEW --modes close
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import Contender, medians, paired_ratio, same_run, wrk_against  # noqa: E402
from servers import command_line, machine, raise_fd_limit, split_server_options  # noqa: E402


def main(argv=None):
    parser = command_line(__doc__)
    parser.add_argument("before", help="the binary before the change")
    parser.add_argument("after", help="the binary after it")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--clients", type=int, default=100, help="connections (default 100)")
    parser.add_argument("--modes", default="keep_alive,close",
                        help="which loads: keep_alive, close or both (default both)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ours, options = split_server_options(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(ours)
    contenders = [Contender(which, path=path, options=options)
                  for which, path in (("before", args.before), ("after", args.after))]
    for contender in contenders:
        if not contender.available():
            parser.error(f"{contender.path}: not an executable")

    raise_fd_limit()
    report = {"machine": machine(), "clients": args.clients, "runs": args.runs,
              "duration_s": args.duration, "options": options}
    for mode in args.modes.split(","):
        keep_alive = mode == "keep_alive"
        runs = same_run(contenders, args.runs, alternate=True,
                        measure=lambda c: wrk_against(c, args.clients, args.duration, keep_alive))
        row = {}
        for contender, results in zip(contenders, runs):
            if None in results:
                sys.exit(f"before_after: wrk gave no result against {contender.path}")
            summary = medians(results)
            row[contender.label] = {"requests_per_s": round(summary["requests_per_s"]),
                                    "p99_ms": round(summary["p99_ms"], 2), "failed": summary["failed"],
                                    "cpu_us_per_request": round(summary.get("cpu_us_per_request", 0), 1)}
        row["ratio"] = round(paired_ratio(runs[1], runs[0]), 3)
        report[mode] = row

    if args.json:
        print(json.dumps(report))
        return 0
    print(f"wrk -t2 -c{args.clients}, median of {args.runs} interleaved runs, {report['machine']}")
    for mode in args.modes.split(","):
        row = report[mode]
        before, after = row["before"], row["after"]
        print(f"  {mode:10}  before {before['requests_per_s']:>8} req/s (p99 {before['p99_ms']} ms, "
              f"CPU {before['cpu_us_per_request']} µs/request)   after {after['requests_per_s']:>8} req/s "
              f"(p99 {after['p99_ms']} ms, CPU {after['cpu_us_per_request']} µs/request)   "
              f"after/before {row['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
