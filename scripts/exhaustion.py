#!/usr/bin/env python3
"""Run a step out of file descriptors, and check it neither spins nor stays stuck.

Starts the step with `ulimit -n` set to --open-files (soft and hard), then opens --attempts
connections and holds them: far more than the server has descriptors for. A server that
handles `EMFILE` badly retries `accept` in a tight loop at 100 % CPU; a good one pauses. Then
the flood is released, and normal requests must be served again.

Reports the server's CPU time while it was out of descriptors (as a share of one core), how
many flood connections it accepted, and how soon a normal request was answered afterwards.

Examples:
  python3 scripts/exhaustion.py step05-epoll-kqueue
  python3 scripts/exhaustion.py step02-threads --open-files 256 --attempts 1000 --json
  python3 scripts/exhaustion.py test --binary target/debug/step04-threadpool --open-files 64 --attempts 200

Exit status: 0 when the server stayed calm (under --max-cpu of a core) and served again,
1 otherwise, 2 on bad usage.
"""

import json
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import (  # noqa: E402
    StepServer, build_release, command_line, split_server_options, tree_cpu_seconds,
)

def get(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return client.recv(64).startswith(b"HTTP/1.1 200")


def main():
    parser = command_line(__doc__)
    parser.add_argument("step", help="crate name (its release build is used), or with --binary a label")
    parser.add_argument("--binary", help="run this executable instead of building the step")
    parser.add_argument("--open-files", type=int, default=256, help="the server's ulimit -n (default 256)")
    parser.add_argument("--attempts", type=int, default=1000, help="connections held open (default 1000)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the flood is held (default 3)")
    parser.add_argument("--max-cpu", type=float, default=0.25, help="share of one core allowed while stuck")
    parser.add_argument("--json", action="store_true")
    ours, server_options = split_server_options(sys.argv[1:])
    args = parser.parse_args(ours)
    if args.open_files < 16 or args.attempts < 1:
        parser.error("--open-files must be at least 16 and --attempts at least 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.attempts + 64:
        parser.error(f"this shell's hard descriptor limit ({hard}) is below --attempts")

    if not args.binary:
        build_release([args.step])
    with StepServer(args.step, server_options, open_files=args.open_files, path=args.binary) as server:
        flood, refused = [], 0
        for _ in range(args.attempts):
            try:
                client = socket.create_connection((server.host, server.port), timeout=2)
                # One quick request, then silence: a crowd of idle browsers, each holding a
                # kept-alive connection (a descriptor) until it leaves.
                client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                flood.append(client)
            except OSError:
                refused += 1
        time.sleep(0.5)  # let the server reach its limit
        cpu_before, started = sum(tree_cpu_seconds(server.pid)), time.monotonic()
        time.sleep(args.hold)
        cpu_share = (sum(tree_cpu_seconds(server.pid)) - cpu_before) / (time.monotonic() - started)
        for client in flood:
            client.close()
        released = time.monotonic()
        served_again_after = None
        while time.monotonic() - released < 15:
            try:
                if get(server.host, server.port, timeout=2):
                    served_again_after = time.monotonic() - released
                    break
            except OSError:
                pass
            time.sleep(0.1)
        alive = server.process.poll() is None

    report = {
        "step": args.step,
        "open_files": args.open_files,
        "attempts": args.attempts,
        "refused_by_kernel": refused,
        "cpu_share_while_stuck": round(cpu_share, 3),
        "served_again_after_s": round(served_again_after, 2) if served_again_after is not None else None,
        "server_alive": alive,
        "passed": alive and served_again_after is not None and cpu_share <= args.max_cpu,
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k:<24} {v}" for k, v in report.items()))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
