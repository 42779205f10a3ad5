#!/usr/bin/env python3
"""Where the time goes: CPU per request, user and kernel, ours against nginx, same run.

Starts step06 as the upstream, then in turn step07 (one group of that upstream) and nginx
`proxy_pass` to it (scripts/peers/nginx-proxy.conf), each with --workers workers, and loads
each with wrk (2 threads, 100 kept-alive clients, --duration s). From /proc it reads the CPU
time the proxy's processes spent (not the upstream's, not wrk's), split into user space and
kernel, and divides by the requests answered. Then the same for the upstream alone, hit
directly. With --perf, it also samples the step07 worker with `perf record` and prints the
shares of its time by library and the costliest functions.

With --close, it compares step06 and nginx (`worker_processes auto`) serving the hello page
themselves, with a new connection per request (wrk's `Connection: close`): how much of a short
connection's cost is the kernel's, which no server can save.

Examples:
  python3 scripts/cpu_per_request.py
  python3 scripts/cpu_per_request.py --perf
  python3 scripts/cpu_per_request.py --close
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import run_wrk  # noqa: E402
from servers import (  # noqa: E402
    ROOT, PeerServer, StepServer, build_release, machine, nginx_peer, nginx_proxy_peer, process_tree,
    raise_fd_limit, tree_cpu_seconds, write_proxy_config,
)

def measure(label, server, duration, exclude=(), perf=False, keep_alive=True):
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
    print(f"{label:<28} {result['requests_per_s']:>9,.0f} req/s   CPU per request: "
          f"{user:5.1f} µs user + {kernel:5.1f} µs kernel = {user + kernel:5.1f} µs")
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


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of load (default 5)")
    parser.add_argument("--workers", default="1", help="proxy workers, both sides (default 1)")
    parser.add_argument("--perf", action="store_true", help="also profile step07's worker with perf")
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
    print(f"wrk -t2 -c100 keep-alive, {args.duration} s each; {machine()}")
    with StepServer("step06-master-worker") as upstream:
        address = f"{upstream.host}:{upstream.port}"
        upstream_pids = set(process_tree(upstream.pid))
        config = write_proxy_config(os.path.join(ROOT, "target", "cpu-per-request.toml"), [address])
        with StepServer("step07-reverse-proxy", ["--config", config, "--workers", args.workers]) as ours:
            measure("step07 -> step06", ours, args.duration, upstream_pids, args.perf)

        with PeerServer("nginx proxy_pass", nginx_proxy_peer(address, args.workers)) as theirs:
            measure("nginx proxy_pass -> step06", theirs, args.duration, upstream_pids)
        measure("step06 alone", upstream, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
