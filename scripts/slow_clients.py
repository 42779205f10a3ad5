#!/usr/bin/env python3
"""Slow clients ("slowloris"): many connections that send their request head a byte at a time.

Each slow client sends one byte of a valid request head per --interval seconds, never
finishing it; a good server answers 408 when its header timeout ends the wait. Meanwhile a
normal client sends one ordinary request at a time, on a fresh connection, and the script
reports how long they took: what everybody else feels while the slow ones hold on.

It starts the step itself (release build, free loopback port, stopped by pid at the end) with
--header-timeout-ms, or drives a running server given with --url.

Examples:
  python3 scripts/slow_clients.py step05-epoll-kqueue -n 500
  python3 scripts/slow_clients.py step02-threads -n 500 -- --max-threads 100
  python3 scripts/slow_clients.py step05-epoll-kqueue -n 500 --header-timeout-ms 3000 --json

Exit status: 0 when every normal request was answered 200, 1 otherwise, 2 on bad usage.
"""

import json
import os
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import (  # noqa: E402
    StepServer, build_release, command_line, percentile, split_server_options, tree_usage,
)

HEAD = b"GET / HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slow-client\r\nAccept: */*\r\n" + b"X-Pad: " + b"z" * 200


class SlowClients:
    """N connections on one thread, each sent a byte of HEAD per interval."""

    def __init__(self, host, port, count, interval):
        self.selector = selectors.DefaultSelector()
        self.sent = {}
        self.opened = 0
        self.refused = 0
        self.answers = {}  # status line -> count
        self.closed_silently = 0
        self.first_answer_after = None
        self.interval = interval
        for _ in range(count):
            try:
                client = socket.create_connection((host, port), timeout=5)
            except OSError:
                self.refused += 1
                continue
            client.setblocking(False)
            self.selector.register(client, selectors.EVENT_READ)
            self.sent[client] = 0
            self.opened += 1
        self.started = time.monotonic()

    def run(self, duration, stop):
        deadline = self.started + duration
        next_round = self.started
        while time.monotonic() < deadline and not stop.is_set() and self.sent:
            now = time.monotonic()
            if now >= next_round:
                for client in list(self.sent):
                    position = self.sent[client]
                    if position < len(HEAD):
                        try:
                            client.send(HEAD[position:position + 1])
                            self.sent[client] = position + 1
                        except OSError:
                            pass
                next_round += self.interval
            for key, _ in self.selector.select(timeout=max(0.0, min(next_round, deadline) - time.monotonic())):
                self._answered(key.fileobj)
        for client in list(self.sent):
            self._forget(client)

    def _answered(self, client):
        try:
            data = client.recv(4096)
        except OSError:
            data = b""
        if data:
            status = data.split(b"\r\n", 1)[0].decode("latin-1")
            self.answers[status] = self.answers.get(status, 0) + 1
            if self.first_answer_after is None:
                self.first_answer_after = time.monotonic() - self.started
        else:
            self.closed_silently += 1
        self._forget(client)

    def _forget(self, client):
        self.selector.unregister(client)
        self.sent.pop(client, None)
        client.close()


def normal_requests(host, port, stop, latencies, failures):
    """One ordinary request at a time, each on a new connection, until `stop`."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=10) as client:
                client.sendall(request)
                reply = b""
                while b"\r\n" not in reply:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            if reply.startswith(b"HTTP/1.1 200"):
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures.append(reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed")
        except OSError as error:
            failures.append(type(error).__name__)
        stop.wait(0.02)


def main():
    parser = command_line(__doc__)
    parser.add_argument("step", nargs="?", help="crate to start, e.g. step05-epoll-kqueue")
    parser.add_argument("--url", help="drive a running server instead (http://host:port)")
    parser.add_argument("-n", "--slow", type=int, default=500, help="slow connections (default 500)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bytes (default 1)")
    parser.add_argument("--header-timeout-ms", type=int, default=10_000,
                        help="the step's header timeout (default 10000, its own default)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ours, server_options = split_server_options(sys.argv[1:])
    args = parser.parse_args(ours)
    if bool(args.step) == bool(args.url):
        parser.error("give a step to start, or --url, not both")
    if args.slow < 1 or args.interval <= 0:
        parser.error("-n must be at least 1 and --interval positive")

    server = None
    if args.step:
        build_release([args.step])
        options = ["--header-timeout-ms", str(args.header_timeout_ms), *server_options]
        server = StepServer(args.step, options)
        host, port = server.host, server.port
    else:
        host, port = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        port = int(port)
    try:
        # Long enough for the header timeout to end every slow head, and a little more.
        duration = args.header_timeout_ms / 1000 + 2
        slow = SlowClients(host, port, args.slow, args.interval)
        stop = threading.Event()
        latencies, failures = [], []
        normal = threading.Thread(target=normal_requests, args=(host, port, stop, latencies, failures))
        normal.start()
        peak = [0, 0, 0]
        def sample():
            while not stop.wait(0.25):
                if server is not None:
                    usage = tree_usage(server.pid)
                    peak[:] = [max(a, b) for a, b in zip(peak, usage)]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        slow.run(duration, stop)
        stop.set()
        normal.join()
    finally:
        if server is not None:
            server.stop()

    report = {
        "slow_opened": slow.opened,
        "slow_refused": slow.refused,
        "slow_answers": slow.answers,
        "slow_closed_silently": slow.closed_silently,
        "slow_still_open": slow.opened - sum(slow.answers.values()) - slow.closed_silently,
        "first_answer_after_s": round(slow.first_answer_after, 2) if slow.first_answer_after else None,
        "normal_ok": len(latencies),
        "normal_failed": len(failures),
        "normal_failures": sorted(set(failures)),
        "normal_p50_ms": round(percentile(latencies, 0.5), 1),
        "normal_p99_ms": round(percentile(latencies, 0.99), 1),
        "normal_max_ms": round(max(latencies), 1) if latencies else 0.0,
        "server_peak_processes": peak[0] or None,
        "server_peak_threads": peak[1] or None,
        "server_peak_rss_mib": round(peak[2] / 1024, 1) if peak[2] else None,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<24} {value}")
    return 1 if failures or not latencies else 0


if __name__ == "__main__":
    sys.exit(main())
