#!/usr/bin/env python3
"""How many system calls a step makes per request, by name (strace), kept-alive and not.

Runs the step's release build under `strace -f -c` (every thread and child counted), then
sends --requests requests for the hello page on one kept-alive connection, and as many again
each on its own connection (`Connection: close`), each phase under its own strace run.
Divides the calls counted by the number of requests. Like an instruction count, a call count
does not depend on what else the machine is doing, so two versions of a step compare fairly on
a busy machine; unlike it, it sees the kernel's side: every call is a trip into the kernel.

Examples:
  python3 scripts/syscalls_per_request.py step05-epoll-kqueue
  python3 scripts/syscalls_per_request.py step02-threads -n 2000
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import binary, build_release, read_response  # noqa: E402

KEEP_ALIVE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def phase(path, requests, keep_alive):
    """{call: count per request} for one phase, under a fresh strace."""
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
    server = subprocess.Popen(["strace", "-f", "-c", "-o", out, path, "--port", "0", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        if keep_alive:
            with socket.create_connection(("127.0.0.1", port)) as client:
                for _ in range(requests):
                    client.sendall(KEEP_ALIVE)
                    read_response(client)
        else:
            for _ in range(requests):
                with socket.create_connection(("127.0.0.1", port)) as client:
                    client.sendall(CLOSE)
                    read_response(client)
        time.sleep(0.2)
    finally:
        # The server itself gets the SIGTERM (strace would not pass its own on); strace writes
        # its summary when the server has exited.
        with open(f"/proc/{server.pid}/task/{server.pid}/children") as children:
            for pid in children.read().split():
                os.kill(int(pid), signal.SIGTERM)
        server.wait()
    with open(out) as report:
        text = report.read()
    os.unlink(out)
    counts = {}
    for line in text.splitlines():
        # % time  seconds  usecs/call  calls  [errors]  syscall
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1)) / requests
    return counts


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("step", help="crate, e.g. step05-epoll-kqueue")
    parser.add_argument("-n", "--requests", type=int, default=5000, help="per phase (default 5000)")
    parser.add_argument("--binary", help="run this executable instead of the step's release build "
                        "(an older build, to compare)")
    args = parser.parse_args()
    if subprocess.run(["which", "strace"], capture_output=True).returncode != 0:
        parser.error("needs strace (apt-get install strace)")
    if not args.binary:
        build_release([args.step])
    for label, keep_alive in (("kept-alive connection", True), ("a connection each", False)):
        counts = phase(args.binary or binary(args.step), args.requests, keep_alive)
        # Start-up and shutdown calls divide to almost nothing over thousands of requests.
        shown = {name: per for name, per in counts.items() if per >= 0.05}
        total = sum(shown.values())
        calls = ", ".join(f"{name} {per:.2f}" for name, per in sorted(shown.items(), key=lambda i: -i[1]))
        print(f"{args.step}, {label}: {total:.1f} system calls per request ({calls})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
