#!/usr/bin/env python3
"""What one idle keep-alive connection costs a server: its resident memory per connection.

Starts a step's release binary (or nginx, with the same site) on a free loopback port, with a
long idle timeout so that nothing closes the connections, and reads the resident memory of its
processes (RSS, from Linux's /proc; summed over a master and its workers).
Then opens N connections that each make one request, read the answer and stay open, idle, as a
browser's keep-alive connections do; reads the memory again and prints the difference per
connection. Kernel memory (socket buffers, the poller's records) is not part of a process's
resident memory and is not counted.

The script raises its own limit on open files to hold N sockets; the server needs as many (step
05 raises its soft limit to the hard limit at start, like nginx's worker_rlimit_nofile).

Examples:
  python3 scripts/idle_conns.py step05-epoll-kqueue -n 10000
  python3 scripts/idle_conns.py step02-threads -n 1000 -- --max-threads 2000
  python3 scripts/idle_conns.py step06-master-worker -n 10000
  python3 scripts/idle_conns.py nginx -n 10000        # nginx, one worker, for reference
"""

import argparse
import json
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import PeerServer, StepServer, build_release, nginx_peer, read_response, tree_usage  # noqa: E402

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
        sys.exit(f"idle_conns.py: needs {needed} open files, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", help="crate name, e.g. step05-epoll-kqueue; or nginx, nginx-auto")
    parser.add_argument("-n", "--connections", type=int, default=10000, help="idle connections (default 10000)")
    parser.add_argument("--path", default="/", help="what each connection asks for first (default /)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not os.path.isdir("/proc"):
        parser.error("needs Linux's /proc")
    raise_open_files(args.connections + 256)

    if args.step in ("nginx", "nginx-auto"):
        start = nginx_peer(1 if args.step == "nginx" else "auto", keepalive_timeout="3600s")
        if start is None:
            parser.error("nginx is not installed")
        server = PeerServer(args.step, start)
    else:
        build_release([args.step])
        server = StepServer(args.step, ["--idle-timeout-ms", "3600000", *options])
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
    per_connection = (after - before) * 1024 / n
    if args.json:
        print(json.dumps({"server": f"{args.step} {' '.join(options)}".strip(), "connections": n,
                          "processes": processes, "rss_kib_before": before, "rss_kib_after": after,
                          "bytes_per_connection": round(per_connection)}))
        return 0
    print(f"{args.step} {' '.join(options)}".strip())
    print(f"  {n} idle keep-alive connections opened in {opened:.1f} s")
    print(f"  RSS of its {processes} process(es) before: {before} KiB, after: {after} KiB")
    print(f"  per idle connection: {per_connection:.0f} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
