#!/usr/bin/env python3
"""What N requests in flight cost a step: processes, threads and memory of its process tree.

Starts a step's release binary on a free loopback port, opens N connections that each ask for
/sleep?ms=HOLD (so all are in flight at once), then reads /proc (Linux only) for the server
and all its descendants: how many processes and threads, and their memory as PSS (each shared
page is split between the processes sharing it, so a forked child's copy-on-write pages are
not counted twice, as plain RSS would). Prints the figures before and during the load.

Examples:
  python3 scripts/inflight_memory.py step01-fork
  python3 scripts/inflight_memory.py step02-threads -n 500
  python3 scripts/inflight_memory.py step01-fork -n 100 -- --max-children 10
"""

import argparse
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def process_tree(root):
    """`root` and all its descendants, by pid."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def status_field(pid, path, field):
    try:
        with open(f"/proc/{pid}/{path}") as source:
            for line in source:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(root):
    """(processes, threads, PSS in KiB) of the tree under `root`."""
    tree = process_tree(root)
    threads = sum(status_field(pid, "status", "Threads:") for pid in tree)
    pss = sum(status_field(pid, "smaps_rollup", "Pss:") for pid in tree)
    return len(tree), threads, pss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", help="crate name, e.g. step02-threads")
    parser.add_argument("-n", "--connections", type=int, default=100, help="requests in flight (default 100)")
    parser.add_argument("--hold-ms", type=int, default=3000, help="how long each request sleeps (default 3000)")
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not os.path.isdir("/proc"):
        parser.error("needs Linux's /proc")

    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", args.step], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", args.step)
    server = subprocess.Popen([binary, "--port", "0", "--quiet", *options], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            parser.error(f"{args.step} did not start")
        host, port = line.removeprefix("listening on http://").rsplit(":", 1)
        idle = measure(server.pid)
        request = f"GET /sleep?ms={args.hold_ms} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        clients = []
        for _ in range(args.connections):
            client = socket.create_connection((host, int(port)))
            client.sendall(request)
            clients.append(client)
        time.sleep(min(1.0, args.hold_ms / 3000))
        busy = measure(server.pid)
        for client in clients:
            client.close()
    finally:
        server.terminate()
        server.wait()

    n = args.connections
    print(f"{args.step} {' '.join(options)}".strip())
    print(f"  idle:{' ' * 14}{idle[0]} processes, {idle[1]} threads, PSS {idle[2]} KiB")
    print(f"  {f'{n} in flight:':<19}{busy[0]} processes, {busy[1]} threads, PSS {busy[2]} KiB")
    print(f"  per connection:    {(busy[2] - idle[2]) / n:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
