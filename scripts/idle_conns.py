#!/usr/bin/env python3
"""What one idle keep-alive connection costs a server: its resident memory per connection.

Starts a step's release binary on a free loopback port, with --quiet and a long idle timeout so
that nothing closes the connections, and reads its resident memory (VmRSS, from Linux's /proc).
Then opens N connections that each make one request, read the answer and stay open, idle, as a
browser's keep-alive connections do; reads the memory again and prints the difference per
connection. Kernel memory (socket buffers, the poller's records) is not part of a process's
resident memory and is not counted; for steps made of several processes, see
inflight_memory.py.

The script raises its own limit on open files to hold N sockets; the server needs as many (step
05 raises its soft limit to the hard limit at start, like nginx's worker_rlimit_nofile).

Examples:
  python3 scripts/idle_conns.py step05-epoll-kqueue -n 10000
  python3 scripts/idle_conns.py step02-threads -n 1000 -- --max-threads 2000
"""

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 500


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_response(sock):
    """Reads one response with a Content-Length body; returns its head as text."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of the answer")
        body += chunk
    return head.decode("latin-1"), body


def open_idle(host, port, count, path):
    """`count` connections that each made one keep-alive request and read its answer."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    conns = []
    while len(conns) < count:
        batch = [socket.create_connection((host, port)) for _ in range(min(BATCH, count - len(conns)))]
        for sock in batch:
            sock.sendall(request)
        for sock in batch:
            head, _ = read_response(sock)
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
    parser.add_argument("step", help="crate name, e.g. step05-epoll-kqueue")
    parser.add_argument("-n", "--connections", type=int, default=10000, help="idle connections (default 10000)")
    parser.add_argument("--path", default="/", help="what each connection asks for first (default /)")
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not os.path.isdir("/proc"):
        parser.error("needs Linux's /proc")
    raise_open_files(args.connections + 256)

    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", args.step], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", args.step)
    command = [binary, "--port", "0", "--quiet", "--idle-timeout-ms", "3600000", *options]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    conns = []
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            parser.error(f"{args.step} did not start")
        host, port = line.removeprefix("listening on http://").rsplit(":", 1)
        port = int(port)
        # Warm up: the first connections allocate what the server keeps for all of them (read
        # buffers, the first pages of its tables), which is not a per-connection cost.
        for sock in open_idle(host, port, 100, args.path):
            sock.close()
        time.sleep(0.5)
        before = rss_kib(server.pid)
        started = time.monotonic()
        conns = open_idle(host, port, args.connections, args.path)
        opened = time.monotonic() - started
        time.sleep(0.5)
        after = rss_kib(server.pid)
        # Not /stats: a server at its connection limit would not accept one more to answer it.
        descriptors = len(os.listdir(f"/proc/{server.pid}/fd"))
    finally:
        for sock in conns:
            sock.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    n = args.connections
    print(f"{args.step} {' '.join(options)}".strip())
    print(f"  {n} idle keep-alive connections opened in {opened:.1f} s")
    print(f"  server RSS before: {before} KiB, after: {after} KiB")
    print(f"  per idle connection: {(after - before) * 1024 / n:.0f} bytes")
    print(f"  server descriptors open meanwhile: {descriptors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
