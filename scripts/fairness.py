#!/usr/bin/env python3
"""Who gets served at all? C keep-alive clients hammer a step; count the ones answered.

A load generator like wrk reports the requests that completed: latency percentiles of the
answered ones, and as "failed" only errors and timeouts. A client that waits the whole run
without an answer shows up nowhere. This script keeps a count per client: C clients each open
one keep-alive connection and send `GET /` again as soon as the previous answer arrived, for
--duration seconds; then it prints how many clients got at least one answer, and how the
answers were spread among them.

Steps that give each connection a worker (03, 04, the iterative server) serve only as many
clients as they have workers, for as long as those clients keep sending; the others wait.

Examples:
  python3 scripts/fairness.py step04-threadpool                 # 8 of 100 answered
  python3 scripts/fairness.py step05-epoll-kqueue               # 100 of 100
  python3 scripts/fairness.py -c 20 step01-fork -- --iterative     # server options after --
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import StepServer, build_release  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def answers(host, port, stop_at, keep_open):
    """One client's loop: how many answers it got before `stop_at` (monotonic).

    The connection is left open (in `keep_open`) when the run ends: were the answered clients
    to close at once, the waiting ones would be served in the moment after, and counted.
    """
    count, buffer = 0, b""
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError:
        return 0
    keep_open.append(sock)
    try:
        while time.monotonic() < stop_at:
            sock.sendall(REQUEST)
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = 0
                    for line in buffer[:head_end].split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(buffer) >= head_end + 4 + length:
                        buffer = buffer[head_end + 4 + length:]
                        count += 1
                        break
                left = stop_at - time.monotonic()
                if left <= 0:
                    return count
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    return count
                buffer += chunk
    except OSError:
        pass  # the run ended while this client waited, or the server closed on it
    return count


def answers_per_client(host, port, clients, duration):
    """Runs `clients` keep-alive clients for `duration` seconds; how many answers each got."""
    counts, sockets = [0] * clients, []
    stop_at = time.monotonic() + duration

    def client(index):
        counts[index] = answers(host, port, stop_at, sockets)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sock in sockets:
        sock.close()
    return counts


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", help="a crate name, e.g. step04-threadpool")
    parser.add_argument("options", nargs="*", help="server options (put them after --)")
    parser.add_argument("-c", "--clients", type=int, default=100, help="keep-alive clients (default 100)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)

    build_release([args.step])
    with StepServer(args.step, args.options) as server:
        counts = answers_per_client(server.host, server.port, args.clients, args.duration)

    answered = [count for count in counts if count > 0]
    label = " ".join([args.step, *args.options])
    print(f"{label}: {len(answered)} of {args.clients} keep-alive clients answered "
          f"in {args.duration:g} s; {sum(counts):,} answers")
    if answered:
        print(f"  answers per answered client: min {min(answered):,}, "
              f"median {statistics.median(answered):,.0f}, max {max(answered):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
