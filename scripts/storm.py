#!/usr/bin/env python3
"""Connection storm: connect and close at full speed, and check the server comes back unchanged.

Starts a step (release build, free loopback port, stopped by pid at the end), and from
--threads threads opens and closes connections as fast as it can for --duration seconds; every
other thread also sends a request and reads the first bytes of the answer before closing. Then
it waits for the server to settle and compares its process tree with the one before:
processes, threads, open descriptors and memory.

Two storms are run. Memory is judged between the first and the second: an allocator keeps
what a burst needed at once (a high-water mark, reached again by the next burst, not
exceeded), while a leak grows with every storm.

Examples:
  python3 scripts/storm.py step05-epoll-kqueue
  python3 scripts/storm.py step01-fork --duration 10 --json

Exit status: 0 when processes, threads and descriptors came back to what they were and memory
grew less than --max-growth-mib over the second storm, 1 otherwise, 2 on bad usage.
"""

import json
import os
import socket
import sys
import threading
import time

import servers

REQUEST = b"GET / HTTP/1.1\r\nHost: storm\r\nConnection: close\r\n\r\n"


def fd_count(tree):
    """Open descriptors over the process tree (Linux /proc)."""
    count = 0
    for pid in tree:
        try:
            count += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass  # gone while we looked
    return count


def usage(root):
    """(processes, threads, descriptors, memory in KiB) of the tree under `root`."""
    processes, threads, memory = servers.tree_usage(root)
    return processes, threads, fd_count(servers.process_tree(root)), memory


def storm(host, port, duration, threads):
    """Connections opened (and closed) from `threads` threads for `duration` seconds."""
    until = time.monotonic() + duration
    counts = [0] * threads

    def run(index):
        while time.monotonic() < until:
            try:
                with socket.create_connection((host, port), timeout=2) as sock:
                    if index % 2:
                        sock.sendall(REQUEST)
                        sock.recv(4096)
            except OSError:
                continue  # a refused or reset connection still counts as storm, not as an answer
            counts[index] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts)


def settle(root, baseline, within):
    """Waits until processes, threads and descriptors are back to `baseline` (or `within` s)."""
    deadline = time.monotonic() + within
    while True:
        now = usage(root)
        if all(now[i] <= baseline[i] for i in range(3)) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def main():
    parser = servers.command_line(__doc__)
    parser.add_argument("step", help="crate to start, e.g. step05-epoll-kqueue")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per storm (default 10)")
    parser.add_argument("--threads", type=int, default=4, help="storming threads (default 4)")
    parser.add_argument("--max-growth-mib", type=float, default=8.0,
                        help="memory growth allowed over the second storm (default 8)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds allowed to return to the figures before (default 15)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("options", nargs="*", help="after --: options for the step")
    args = parser.parse_args()
    if not os.path.isdir("/proc/self/fd"):
        print("storm.py needs Linux's /proc to count processes and descriptors", file=sys.stderr)
        return 2

    servers.raise_fd_limit()
    servers.build_release([args.step])
    with servers.StepServer(args.step, args.options) as server:
        for _ in range(20):
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                sock.sendall(REQUEST)
                sock.recv(4096)
        time.sleep(0.3)
        before = usage(server.pid)
        first = storm(server.host, server.port, args.duration, args.threads)
        warmed = settle(server.pid, before, args.settle)
        second = storm(server.host, server.port, args.duration, args.threads)
        after = settle(server.pid, before, args.settle)
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(REQUEST)
            served = sock.recv(64).startswith(b"HTTP/1.1 200")

    names = ("processes", "threads", "fds", "rss_kib")
    growth_mib = (after[3] - warmed[3]) / 1024
    report = {
        "step": args.step,
        "storm_s": args.duration,
        "connections": [first, second],
        "connections_per_s": round((first + second) / (2 * args.duration)),
        "before": dict(zip(names, before)),
        "after_first": dict(zip(names, warmed)),
        "after_second": dict(zip(names, after)),
        "rss_growth_second_storm_mib": round(growth_mib, 2),
        "served_after": served,
    }
    report["passed"] = (
        served
        and all(after[i] <= before[i] for i in range(3))
        and growth_mib <= args.max_growth_mib
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.step}: {first} + {second} connections in two {args.duration:g} s storms")
        for label, figures in (("before", before), ("after 1st", warmed), ("after 2nd", after)):
            processes, threads, fds, rss = figures
            print(f"  {label:9}  {processes} processes, {threads} threads, {fds} fds, "
                  f"{rss / 1024:.1f} MiB")
        print(f"  memory over the second storm: {growth_mib:+.2f} MiB; "
              f"served afterwards: {'yes' if served else 'NO'}")
        print("  PASS" if report["passed"] else "  FAIL")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
