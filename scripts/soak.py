#!/usr/bin/env python3
"""Soak test: minutes of mixed load with faults, and a server that must come out unchanged.

Against one step (release build, free loopback port, stopped by pid at the end), for
--duration seconds, all at once:
  - normal clients: GET /, /script.js, /stats, on kept-alive and on new connections;
  - slow work: /sleep?ms=50..200;
  - bad input: random cases of testkit/corpus/bad-input.toml, each checked against its
    expected answer;
  - faults: clients that reset mid-request or mid-response, clients that hang up with answers
    pending, clients that trickle their heads (408), clients that never read their answers.

Pass: every normal request answered 200, every corpus case as expected, the server alive at the
end and exiting 0 on SIGTERM, and its memory stable: the second half of the run may not grow
it by more than --max-growth-mib (a leak grows it steadily; warm-up does not).

Examples:
  python3 scripts/soak.py step05-epoll-kqueue                  # 10 minutes
  python3 scripts/soak.py step05-epoll-kqueue --duration 30    # what CI runs
  python3 scripts/soak.py step02-threads --duration 60 --json

Exit status: 0 on a pass, 1 on a failure, 2 on bad usage.
"""

import json
import os
import random
import socket
import struct
import sys
import threading
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import (  # noqa: E402
    ROOT, StepServer, build_release, command_line, read_response, split_server_options,
    tree_usage,
)

CORPUS = os.path.join(ROOT, "testkit", "corpus", "bad-input.toml")


def expand(template):
    """The corpus's {TEXT*N} repetition (see testkit/src/corpus.rs)."""
    out, rest = [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        inside, closed, tail = after.partition("}")
        text, star, count = inside.rpartition("*")
        if closed and star and count.isdigit():
            out += [before, text * int(count)]
            rest = tail
        else:
            out += [before, "{"]
            rest = after
    out.append(rest)
    return "".join(out)


def corpus_cases():
    with open(CORPUS, "rb") as source:
        cases = tomllib.load(source)["case"]
    usable = []
    for case in cases:
        # Cases that wait for the header timeout would only slow the soak down.
        if case["expect"] == 408:
            continue
        data = bytes.fromhex(case["send_hex"]) if "send_hex" in case else expand(case["send"]).encode("utf-8")
        usable.append((case["name"], data, case["expect"], case.get("half_close", False)))
    return usable


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.problems = []

    def add(self, what, problem=None):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if problem and len(self.problems) < 20:
                self.problems.append(f"{what}: {problem}")
            elif problem:
                self.counts["problems not listed"] = self.counts.get("problems not listed", 0) + 1


def read_status(sock):
    """The status code of the first answer on `sock`, or None if it closed first."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


def normal_client(host, port, stop, tally, keep_alive):
    paths = ["/", "/script.js", "/stats", "/hello.html"]
    sock, buffered = None, b""
    while not stop.is_set():
        path = random.choice(paths)
        what = f"normal {'keep-alive' if keep_alive else 'new connection'}"
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=10)
            close = "" if keep_alive else "Connection: close\r\n"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\n{close}\r\n".encode())
            status, _, _, buffered = read_response(sock, buffered)
            tally.add(what, None if status == 200 else f"{path} answered {status}")
            if not keep_alive:
                sock.close()
                sock, buffered = None, b""
        except OSError as error:
            tally.add(what, f"{path}: {type(error).__name__}: {error}")
            if sock is not None:
                sock.close()
            sock, buffered = None, b""
        stop.wait(0.002)
    if sock is not None:
        sock.close()


def slow_work_client(host, port, stop, tally):
    while not stop.is_set():
        ms = random.randint(50, 200)
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(f"GET /sleep?ms={ms} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
                status, _, _, _ = read_response(sock)
                tally.add("slow work", None if status == 200 else f"/sleep answered {status}")
        except OSError as error:
            tally.add("slow work", f"{type(error).__name__}: {error}")


def bad_input_client(host, port, stop, tally, cases):
    while not stop.is_set():
        name, data, expect, half_close = random.choice(cases)
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                try:
                    sock.sendall(data)
                except OSError:
                    pass  # refused early, the answer is what counts
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
                status = read_status(sock)
            ok = (status is None) if expect == "close" else (status == expect)
            tally.add("bad input", None if ok else f"{name}: expected {expect}, got {status}")
        except OSError as error:
            if expect == "close":
                tally.add("bad input")
            else:
                tally.add("bad input", f"{name}: {type(error).__name__}: {error}")
        stop.wait(0.01)


def fault_client(host, port, stop, tally):
    # SO_LINGER on, zero seconds: close() sends a reset instead of a FIN.
    linger_zero = struct.pack("ii", 1, 0)
    faults = ["reset mid-request", "reset mid-response", "hang up with answers pending",
              "trickle", "never read"]
    while not stop.is_set():
        fault = random.choice(faults)
        try:
            sock = socket.create_connection((host, port), timeout=10)
            if fault == "reset mid-request":
                sock.sendall(b"GET / HTTP/1.1\r\nHo")
            elif fault == "reset mid-response":
                sock.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n" * 100)
                sock.recv(100)
            elif fault == "hang up with answers pending":
                sock.sendall(b"GET /sleep?ms=20 HTTP/1.1\r\nHost: soak\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n" * 3)
                sock.close()
                tally.add(fault)
                continue
            elif fault == "trickle":
                for byte in b"GET / HTTP/1.1\r\n":
                    if stop.wait(0.05):
                        break
                    sock.send(bytes([byte]))
            elif fault == "never read":
                sock.setblocking(False)
                try:
                    for _ in range(2000):
                        sock.send(b"GET /script.js HTTP/1.1\r\nHost: soak\r\n\r\n")
                except BlockingIOError:
                    pass
                stop.wait(0.5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
            sock.close()
            tally.add(fault)
        except OSError:
            tally.add(fault)  # the server may end a faulty client first: that is its right
        stop.wait(0.02)


def main():
    parser = command_line(__doc__)
    parser.add_argument("step", help="crate to soak, e.g. step05-epoll-kqueue")
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--max-growth-mib", type=float, default=8.0,
                        help="allowed memory growth over the second half (default 8)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ours, server_options = split_server_options(sys.argv[1:])
    args = parser.parse_args(ours)
    if args.duration <= 0:
        parser.error("--duration must be positive")

    build_release([args.step])
    server = StepServer(args.step, ["--header-timeout-ms", "2000", *server_options])
    tally, stop = Tally(), threading.Event()
    cases = corpus_cases()
    workers = [
        threading.Thread(target=normal_client, args=(server.host, server.port, stop, tally, True)),
        threading.Thread(target=normal_client, args=(server.host, server.port, stop, tally, True)),
        threading.Thread(target=normal_client, args=(server.host, server.port, stop, tally, False)),
        threading.Thread(target=slow_work_client, args=(server.host, server.port, stop, tally)),
        threading.Thread(target=bad_input_client, args=(server.host, server.port, stop, tally, cases)),
        threading.Thread(target=fault_client, args=(server.host, server.port, stop, tally)),
        threading.Thread(target=fault_client, args=(server.host, server.port, stop, tally)),
    ]
    samples = []
    started = time.monotonic()
    exit_code = None
    try:
        for worker in workers:
            worker.start()
        while time.monotonic() - started < args.duration:
            if server.process.poll() is not None:
                tally.add("server", f"exited during the soak with status {server.process.returncode}")
                break
            samples.append((time.monotonic() - started, tree_usage(server.pid)))
            time.sleep(min(1.0, args.duration / 30))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        if server.process.poll() is None:
            server.process.terminate()
            try:
                exit_code = server.process.wait(timeout=15)
            except Exception:  # noqa: BLE001 - any failure to stop is reported below
                exit_code = None
        server.stop()
    if exit_code != 0:
        tally.add("server", f"exit status after SIGTERM: {exit_code}")

    half = [usage for at, usage in samples if at >= args.duration / 2]
    growth_mib = (half[-1][2] - half[0][2]) / 1024 if len(half) >= 2 else 0.0
    if growth_mib > args.max_growth_mib:
        tally.add("memory", f"grew {growth_mib:.1f} MiB over the second half")
    report = {
        "step": args.step,
        "duration_s": round(time.monotonic() - started, 1),
        "counts": tally.counts,
        "problems": tally.problems,
        "rss_mib_first_sample": round(samples[0][1][2] / 1024, 1) if samples else None,
        "rss_mib_last_sample": round(samples[-1][1][2] / 1024, 1) if samples else None,
        "rss_growth_second_half_mib": round(growth_mib, 2),
        "peak_threads": max((usage[1] for _, usage in samples), default=None),
        "peak_processes": max((usage[0] for _, usage in samples), default=None),
        "passed": not tally.problems,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<28} {value}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
