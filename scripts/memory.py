#!/usr/bin/env python3
"""What connections cost a server in memory: idle keep-alive ones, or requests in flight.

Two modes, one per question:

  idle      Starts a step's release binary (or nginx, with the same site) with a long idle
            timeout, opens N connections that each make one request, read the answer and stay
            open, idle, as a browser's keep-alive connections do, and reports the resident
            memory (RSS, summed over a master and its workers) per connection. Kernel memory
            (socket buffers, the poller's records) is not part of a process's resident memory
            and is not counted. The script raises its own limit on open files to hold N
            sockets; the server needs as many (step 05 raises its soft limit to the hard
            limit at start, like nginx's worker_rlimit_nofile).
  inflight  Starts a step, opens N connections that each ask for /sleep?ms=HOLD (so all are in
            flight at once), and reports the processes, threads and memory of the server and
            all its descendants, before and during the load. Memory is PSS here: each shared
            page is split between the processes sharing it, so a forked child's copy-on-write
            pages are not counted twice, as plain RSS would.

Both read Linux's /proc. Options for the server go after `--`.

Examples:
  python3 scripts/memory.py idle step05-epoll-kqueue -n 10000
  python3 scripts/memory.py idle step02-threads -n 1000 -- --max-threads 2000
  python3 scripts/memory.py idle nginx -n 10000          # nginx, one worker, for reference
  python3 scripts/memory.py inflight step01-fork -n 100
  python3 scripts/memory.py inflight step01-fork -n 100 -- --max-children 10
"""

import json
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import (  # noqa: E402
    PeerServer, StepServer, build_release, command_line, nginx_peer, read_response,
    split_server_options, tree_usage,
)

BATCH = 500


def open_idle(host, port, count, path):
    """`count` connections that each made one keep-alive request and read its answer."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    conns = []
    while len(conns) < count:
        batch = [socket.create_connection((host, port)) for _ in range(min(BATCH, count - len(conns)))]
        for sock in batch:
            sock.sendall(request)
        for sock in batch:
            _, head, _, _ = read_response(sock)
            if not head.startswith("HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head.splitlines()[0]}")
        conns.extend(batch)
    return conns


def raise_open_files(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"memory.py: needs {needed} open files, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def idle(args, options):
    raise_open_files(args.connections + 256)
    if args.step in ("nginx", "nginx-auto"):
        start = nginx_peer(1 if args.step == "nginx" else "auto", keepalive_timeout="3600s")
        if start is None:
            sys.exit("memory.py: nginx is not installed")
        server = PeerServer(args.step, start)
    else:
        if not args.binary:
            build_release([args.step])
        server = StepServer(args.step, ["--idle-timeout-ms", "3600000", *options], path=args.binary)
    conns = []
    with server:
        # Warm up: the first connections allocate what the server keeps for all of them (read
        # buffers, the first pages of its tables), which is not a per-connection cost.
        for sock in open_idle(server.host, server.port, 100, args.path):
            sock.close()
        time.sleep(0.5)
        processes, _, before = tree_usage(server.pid)
        started = time.monotonic()
        try:
            conns = open_idle(server.host, server.port, args.connections, args.path)
            opened = time.monotonic() - started
            time.sleep(0.5)
            _, _, after = tree_usage(server.pid)
        finally:
            for sock in conns:
                sock.close()

    n = args.connections
    name = f"{args.step} {' '.join(options)}".strip()
    per_connection = (after - before) * 1024 / n
    if args.json:
        print(json.dumps({"server": name, "connections": n, "processes": processes,
                          "rss_kib_before": before, "rss_kib_after": after,
                          "bytes_per_connection": round(per_connection)}))
        return 0
    print(name)
    print(f"  {n} idle keep-alive connections opened in {opened:.1f} s")
    print(f"  RSS of its {processes} process(es) before: {before} KiB, after: {after} KiB")
    print(f"  per idle connection: {per_connection:.0f} bytes")
    return 0


def inflight(args, options):
    if not args.binary:
        build_release([args.step])
    with StepServer(args.step, options, path=args.binary) as server:
        quiet = tree_usage(server.pid, pss=True)
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
    name = f"{args.step} {' '.join(options)}".strip()
    if args.json:
        print(json.dumps({"server": name, "connections": n,
                          "idle": dict(zip(("processes", "threads", "pss_kib"), quiet)),
                          "in_flight": dict(zip(("processes", "threads", "pss_kib"), busy)),
                          "kib_per_connection": round((busy[2] - quiet[2]) / n, 1)}))
        return 0
    print(name)
    print(f"  idle:{' ' * 14}{quiet[0]} processes, {quiet[1]} threads, PSS {quiet[2]} KiB")
    print(f"  {f'{n} in flight:':<19}{busy[0]} processes, {busy[1]} threads, PSS {busy[2]} KiB")
    print(f"  per connection:    {(busy[2] - quiet[2]) / n:.1f} KiB")
    return 0


def main(argv=None):
    parser = command_line(__doc__)
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    mode = modes.add_parser("idle", help="resident memory per idle keep-alive connection")
    mode.add_argument("step", help="crate name, e.g. step05-epoll-kqueue; or nginx, nginx-auto")
    mode.add_argument("-n", "--connections", type=int, default=10000, help="idle connections (default 10000)")
    mode.add_argument("--path", default="/", help="what each connection asks for first (default /)")
    mode = modes.add_parser("inflight", help="processes, threads and PSS with N requests in flight")
    mode.add_argument("step", help="crate name, e.g. step02-threads")
    mode.add_argument("-n", "--connections", type=int, default=100, help="requests in flight (default 100)")
    mode.add_argument("--hold-ms", type=int, default=3000, help="how long each request sleeps (default 3000)")
    for mode in modes.choices.values():
        mode.add_argument("--binary", help="run this executable instead of the step's release build "
                          "(an older build, to compare)")
        mode.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ours, options = split_server_options(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(ours)
    if not os.path.isdir("/proc"):
        parser.error("needs Linux's /proc")
    return {"idle": idle, "inflight": inflight}[args.mode](args, options)


if __name__ == "__main__":
    sys.exit(main())
