#!/usr/bin/env python3
"""The chat chapter's experiment: N clients in the chat server, and one line to all of them.

Builds examples/chat in release mode, starts it on a free loopback port, connects N clients
(each waits for its welcome line), then reports the server's threads and resident memory,
and how long one line from client 1 takes to reach all the other N - 1, through the one hub
thread. Stops the server (by pid) at the end.

Examples:
  python3 scripts/chat_clients.py -n 3
  python3 scripts/chat_clients.py -n 1000
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import binary, build_release, tree_usage  # noqa: E402


def read_until(sock, buffer, wanted, deadline):
    """Reads from `sock` until a line containing `wanted` arrives; the rest of the buffer."""
    while True:
        index = buffer.find(wanted)
        if index >= 0:
            end = buffer.find(b"\n", index)
            if end >= 0:
                return buffer[end + 1:]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {wanted!r} in time")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="clients (default: 100)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n must be at least 1 (one client speaks, the others listen), not {args.n}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.n + 64), hard))

    build_release(["chat"])
    server = subprocess.Popen(
        [binary("chat"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    clients = []
    try:
        line = server.stdout.readline().strip()
        host, port = line.removeprefix("listening on ").rsplit(":", 1)
        time.sleep(0.2)
        _, _, rss_before_kib = tree_usage(server.pid)
        deadline = time.monotonic() + 60
        for _ in range(args.n):
            sock = socket.create_connection((host, int(port)))
            rest = read_until(sock, b"", b"welcome, you are #", deadline)
            clients.append([sock, rest])
        # Join notices go to everyone already there: let them all arrive before measuring.
        for client in clients[:-1]:
            client[1] = read_until(client[0], client[1], f"#{args.n} joined".encode(), deadline)
        time.sleep(0.2)
        _, threads, rss_kib = tree_usage(server.pid)

        started = time.perf_counter()
        clients[0][0].sendall(b"hello, everyone\n")
        for client in clients[1:]:
            client[1] = read_until(client[0], client[1], b"#1: hello, everyone", deadline)
        elapsed = time.perf_counter() - started

        print(f"clients: {args.n}")
        print(f"server threads: {threads} (n + 2 = {args.n + 2})")
        per_client = (rss_kib - rss_before_kib) * 1024 / args.n
        print(f"server resident memory: {rss_before_kib / 1024:.1f} MiB with no client, "
              f"{rss_kib / 1024:.1f} MiB with {args.n} ({per_client:,.0f} B more per client)")
        print(f"one line to the other {args.n - 1} clients: {elapsed * 1000:.1f} ms")
        return 0
    finally:
        for sock, _ in clients:
            sock.close()
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
