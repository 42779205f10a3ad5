#!/usr/bin/env python3
"""Fire many HTTP requests at a server at once and report how it coped.

The course's concurrency tester, grown up. By default it opens a fresh connection per request,
as the course's script did; --keep-alive reuses one connection per client instead.

Closed loop (default): -c clients each send their next request as soon as the previous one is
answered, until -n requests are done. Open loop (--rate R --duration S): requests start at a
fixed rate whatever the server does, which is how real users behave and the way to push a
queue past its limits; a request that cannot start on time because all -c clients are busy
still counts its latency from the moment it should have started.

On Linux it also counts the sockets the run left in TIME_WAIT, on the server's side and on
the clients': whichever side closes a connection first keeps it there for 60 s.

--idle K first opens K keep-alive connections that each ask for / once and then stay open,
silent, until the run ends: browser tabs left open. A server that gives every connection a
worker of its own has K fewer for the load.

It first prints the address of the server's live page (/live): open it in a browser to watch
the server cope while the run goes on.

Examples:
  python3 scripts/accesses.py                                  # 20 requests, 20 at once, to :8090
  python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=1000 -n 20 -c 20
  python3 scripts/accesses.py http://127.0.0.1:8090/stats -n 50 -c 10   # which pids answered?
  python3 scripts/accesses.py http://127.0.0.1:8090/ -n 10000 -c 50 --keep-alive
  python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=200 --rate 100 --duration 10 -c 200
  python3 scripts/accesses.py http://127.0.0.1:8090/ -n 1 -c 1 --idle 8     # 8 open tabs, then 1 request
  python3 scripts/accesses.py http://127.0.0.1:8090/ --json

Exit status: 0 when every request got a 2xx or 3xx answer, 1 when any failed, 2 on bad usage.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import command_line, percentile  # noqa: E402

DEFAULT_URL = "http://127.0.0.1:8090/"


class Target:
    """Where the requests go: host, port and the path with its query."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host[:port]/path URLs are supported, not {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class Result:
    """One request's outcome."""

    __slots__ = ("ok", "outcome", "latency", "finished", "pid", "worker", "server", "upstream")

    def __init__(self, ok, outcome, latency, pid=None, worker=None, server=None, upstream=None):
        self.ok = ok
        self.outcome = outcome  # "HTTP 200", or the error's name
        self.latency = latency  # seconds
        self.finished = time.perf_counter()  # when it ended: the answered timeline's gaps
        self.pid = pid
        self.worker = worker
        self.server = server
        self.upstream = upstream  # a proxy's X-Upstream: which server behind it answered


class Client:
    """One simulated client: a connection used for one request or, with keep-alive, many."""

    def __init__(self, target, timeout, keep_alive):
        self.target = target
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.connection = None

    def request(self, scheduled=None):
        started = scheduled if scheduled is not None else time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.target.host, self.target.port, timeout=self.timeout
                )
            headers = {} if self.keep_alive else {"Connection": "close"}
            self.connection.request("GET", self.target.path, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
            latency = time.perf_counter() - started
            if not self.keep_alive or response.will_close:
                self.close()
            pid = pid_from(body, response.getheader("Content-Type", ""))
            return Result(
                200 <= response.status < 400,
                f"HTTP {response.status}",
                latency,
                pid=pid,
                worker=response.getheader("X-Worker"),
                server=response.getheader("Server"),
                upstream=response.getheader("X-Upstream"),
            )
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return Result(False, type(error).__name__, time.perf_counter() - started)

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class IdleClients:
    """--idle K: keep-alive connections that ask for / once, then sit open until the run ends."""

    def __init__(self, target, count, timeout):
        self.target = target
        self.count = count
        self.timeout = timeout
        self.sent = threading.Semaphore(0)
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.answered = 0
        self.threads = []

    def __enter__(self):
        self.threads = [threading.Thread(target=self.hold, daemon=True) for _ in range(self.count)]
        for thread in self.threads:
            thread.start()
        # The load starts once every idle client has sent its request (not once it is answered:
        # on a server with too few workers, some of them wait too), so theirs come first.
        for _ in self.threads:
            self.sent.acquire(timeout=self.timeout)
        return self

    def hold(self):
        connection = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)
        sent = False
        try:
            connection.request("GET", "/")
            self.sent.release()
            sent = True
            connection.getresponse().read()
            with self.lock:
                self.answered += 1
            self.done.wait()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            if not sent:
                self.sent.release()
            connection.close()

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout)


def pid_from(body, content_type):
    """The answering process's pid, when the body is /stats JSON."""
    if "json" not in content_type:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    pid = value.get("pid") if isinstance(value, dict) else None
    return pid if isinstance(pid, int) else None


class Progress:
    """A live `done/total` line on stderr, only when stderr is a terminal."""

    def __init__(self, total, results):
        self.total = total
        self.results = results
        self.started = time.perf_counter()
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        if sys.stderr.isatty():
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def run(self):
        while not self.stop.wait(0.2):
            self.draw()

    def draw(self):
        done = len(self.results)
        failed = sum(1 for result in self.results if not result.ok)
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"\r  {done}/{self.total} done, {failed} failed, {elapsed:.1f} s ")
        sys.stderr.flush()

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self.draw()
            sys.stderr.write("\n")


def run_closed_loop(target, requests, clients, timeout, keep_alive):
    """-c clients, each sending its next request when the last one is answered."""
    results = []
    lock = threading.Lock()
    remaining = [requests]

    def client_loop():
        client = Client(target, timeout, keep_alive)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            result = client.request()
            with lock:
                results.append(result)
        client.close()

    with Progress(requests, results):
        started = time.perf_counter()
        run_threads(client_loop, min(clients, requests))
        wall = time.perf_counter() - started
    return results, wall


def run_open_loop(target, rate, duration, clients, timeout, keep_alive):
    """Requests scheduled at `rate` per second for `duration` s, served by up to -c clients."""
    total = max(1, int(rate * duration))
    results = []
    lock = threading.Lock()
    started = time.perf_counter()
    next_index = [0]

    def client_loop():
        client = Client(target, timeout, keep_alive)
        while True:
            with lock:
                index = next_index[0]
                if index == total:
                    break
                next_index[0] += 1
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            # Latency counts from the scheduled start: a client that could not start on time
            # because the others were all busy waiting on the server still charges the server.
            result = client.request(scheduled=scheduled)
            with lock:
                results.append(result)
        client.close()

    with Progress(total, results):
        run_threads(client_loop, min(clients, total))
        wall = time.perf_counter() - started
    return results, wall


def run_threads(target, count):
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def time_wait_sockets(port):
    """(server side, client side): the TCP sockets in TIME_WAIT whose local port, or whose
    remote port, is `port`, from /proc/net/tcp and tcp6; None off Linux. The side that closes a
    connection first keeps it in TIME_WAIT (60 s on Linux): with `Connection: close` the
    server closes first, and the sockets pile up on its side."""
    server = client = 0
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as source:
                next(source)
                for line in source:
                    fields = line.split()
                    if len(fields) < 4 or fields[3] != "06":  # 06: TCP_TIME_WAIT
                        continue
                    local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                    server += local == port
                    client += remote == port
            found = True
        except OSError:
            continue
    return (server, client) if found else None


def largest_gap(results):
    """(seconds, at): the longest time between two answers in a row, and when it began, in
    seconds since the first request started. Under an open-loop load answers come every 1/rate
    s; a server that stops answering for a while (a restart) shows as one long gap, even when no
    request failed outright."""
    if not results:
        return 0.0, 0.0
    start = min(result.finished - result.latency for result in results)
    answered = sorted(result.finished for result in results if result.ok)
    gap, at = 0.0, 0.0
    for before, after in zip(answered, answered[1:]):
        if after - before > gap:
            gap, at = after - before, before - start
    return gap, at


def summarize(args, target, results, wall, idle=None, time_wait=None):
    # Throughput and latency are the answered requests': a refused connection is not an
    # answer, and with none answered there is no throughput or latency to report (None).
    latencies = sorted(result.latency * 1000 for result in results if result.ok)
    failures = Counter(result.outcome for result in results if not result.ok)
    pids = {result.pid for result in results if result.pid is not None}
    workers = {result.worker for result in results if result.worker is not None}
    servers = Counter(result.server for result in results if result.server)
    upstreams = Counter(result.upstream for result in results if result.upstream)
    gap, gap_at = largest_gap(results)
    return {
        "url": target.url,
        "mode": "open" if args.rate else "closed",
        "requests": len(results),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "keep_alive": args.keep_alive,
        "idle_clients": args.idle,
        "idle_answered": idle.answered if idle else 0,
        "ok": len(results) - sum(failures.values()),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "wall_s": round(wall, 4),
        "largest_gap_ms": round(gap * 1000, 1),
        "largest_gap_at_s": round(gap_at, 2),
        "requests_per_s": round(len(latencies) / wall, 1) if latencies and wall > 0 else None,
        "latency_ms": {
            "min": round(latencies[0], 2),
            "p50": round(percentile(latencies, 0.50), 2),
            "p90": round(percentile(latencies, 0.90), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(latencies[-1], 2),
        } if latencies else None,
        "distinct_pids": len(pids),
        "distinct_workers": len(workers),
        "upstreams": dict(sorted(upstreams.items())),
        "server": servers.most_common(1)[0][0] if servers else None,
        "time_wait": time_wait,
    }


def print_summary(summary):
    connection = "keep-alive" if summary["keep_alive"] else "a new connection per request"
    if summary["mode"] == "open":
        shape = f"{summary['rate']:g}/s open loop, up to {summary['concurrency']} clients"
    else:
        shape = f"{summary['concurrency']} clients"
    latency = summary["latency_ms"]
    lines = [
        f"target      {summary['url']}",
        f"load        {summary['requests']} requests, {shape}, {connection}",
        f"completed   {summary['ok']} ok, {summary['failed']} failed",
    ]
    if summary["idle_clients"]:
        lines.append(
            f"idle        {summary['idle_clients']} keep-alive connections held open "
            f"({summary['idle_answered']} answered)"
        )
    if summary["failures"]:
        lines.append(
            "failures    " + ", ".join(f"{count} x {what}" for what, count in summary["failures"].items())
        )
    lines.append(f"wall time   {summary['wall_s']:.2f} s")
    if latency is None:
        lines.append("throughput  none: no request was answered")
    else:
        lines += [
            f"throughput  {summary['requests_per_s']:.1f} answered requests/s",
            "latency ms  min {min:.1f}  p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {max:.1f}"
            .format(**latency),
        ]
        if summary["mode"] == "open":
            lines.append(
                f"largest gap {summary['largest_gap_ms']:.1f} ms without an answer, from "
                f"{summary['largest_gap_at_s']:.2f} s"
            )
    if summary["distinct_pids"]:
        lines.append(f"answered by {summary['distinct_pids']} distinct pids (from /stats)")
    if summary["distinct_workers"]:
        lines.append(f"answered by {summary['distinct_workers']} distinct workers (X-Worker)")
    if summary["upstreams"]:
        spread = ", ".join(f"{name} {count}" for name, count in summary["upstreams"].items())
        lines.append(f"upstreams   {len(summary['upstreams'])} behind the proxy (X-Upstream): {spread}")
    if not summary["distinct_pids"] and not summary["distinct_workers"] and not summary["upstreams"]:
        lines.append("answered by (not reported: request /stats to see which processes answered)")
    if summary["server"]:
        lines.append(f"server      {summary['server']}")
    if summary["time_wait"] and any(summary["time_wait"]):
        server, client = summary["time_wait"]
        lines.append(f"time-wait   {server} new on the server's side, {client} on the clients' side")
    print("\n".join(lines))


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def parse_args(argv):
    parser = command_line(__doc__, prog="accesses.py")
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("-n", "--requests", type=positive_int, default=20, help="requests in all (default 20)")
    parser.add_argument("-c", "--concurrency", type=positive_int, default=20, help="clients at once (default 20)")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument("--keep-alive", action="store_true", help="reuse one connection per client")
    parser.add_argument("--rate", type=positive_float, help="open loop: start R requests per second (needs --duration)")
    parser.add_argument("--duration", type=positive_float, help="open loop: for S seconds (needs --rate)")
    parser.add_argument(
        "--idle", type=int, default=0, metavar="K", help="first open K idle keep-alive connections (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--timeline", action="store_true",
                        help="with --json: add answered_at_s, when each answer came (s since the start)")
    args = parser.parse_args(argv)
    if (args.rate is None) != (args.duration is None):
        parser.error("--rate and --duration go together")
    if args.idle < 0:
        parser.error(f"--idle must be 0 or more, not {args.idle}")
    try:
        target = Target(args.url)
    except ValueError as error:
        parser.error(str(error))
    return args, target


def main(argv=None):
    args, target = parse_args(argv)
    # Where to watch the server cope, in a browser, while the run goes on (stderr: --json
    # keeps stdout for the summary alone).
    live = f"http://{urllib.parse.urlsplit(target.url).netloc}/live"
    print(f"watch it live: {live}", file=sys.stderr if args.json else sys.stdout, flush=True)
    before = time_wait_sockets(target.port)
    with IdleClients(target, args.idle, args.timeout) as idle:
        if args.rate:
            results, wall = run_open_loop(
                target, args.rate, args.duration, args.concurrency, args.timeout, args.keep_alive
            )
        else:
            results, wall = run_closed_loop(
                target, args.requests, args.concurrency, args.timeout, args.keep_alive
            )
        after = time_wait_sockets(target.port)
        time_wait = None
        if before is not None and after is not None:
            # Only what this run left behind: TIME_WAIT sockets of an earlier run may linger.
            time_wait = [max(0, now - then) for now, then in zip(after, before)]
        summary = summarize(args, target, results, wall, idle, time_wait)
        if args.timeline:
            start = min((result.finished - result.latency for result in results), default=0.0)
            summary["answered_at_s"] = sorted(
                round(result.finished - start, 4) for result in results if result.ok
            )
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # stdout closed (piped into `head`): nothing more to say.
        os._exit(1)
