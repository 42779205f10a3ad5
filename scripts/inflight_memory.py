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
import sys
import time

from servers import StepServer, build_release, tree_usage


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

    build_release([args.step])
    with StepServer(args.step, options) as server:
        idle = tree_usage(server.pid, pss=True)
        request = f"GET /sleep?ms={args.hold_ms} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode()
        clients = []
        for _ in range(args.connections):
            client = socket.create_connection((server.host, server.port))
            client.sendall(request)
            clients.append(client)
        time.sleep(min(1.0, args.hold_ms / 3000))
        busy = tree_usage(server.pid, pss=True)
        for client in clients:
            client.close()

    n = args.connections
    print(f"{args.step} {' '.join(options)}".strip())
    print(f"  idle:{' ' * 14}{idle[0]} processes, {idle[1]} threads, PSS {idle[2]} KiB")
    print(f"  {f'{n} in flight:':<19}{busy[0]} processes, {busy[1]} threads, PSS {busy[2]} KiB")
    print(f"  per connection:    {(busy[2] - idle[2]) / n:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
