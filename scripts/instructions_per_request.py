#!/usr/bin/env python3
"""How many CPU instructions a step spends in user space per keep-alive request (callgrind).

Runs the step's release build under `valgrind --tool=callgrind`, sends N requests for the
hello page on one kept-alive connection, and divides the instructions counted by N. Unlike a
time, an instruction count does not depend on what else the machine is doing, so it compares
two versions of the code even on a busy, shared machine. It counts our code and the C library,
not the kernel: the system calls themselves are not in it (count those with `strace -c`).

Examples:
  python3 scripts/instructions_per_request.py step05-epoll-kqueue
  python3 scripts/instructions_per_request.py step05-epoll-kqueue -n 5000 --top 15
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import binary, build_release, read_response  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nUser-Agent: wrk\r\n\r\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step")
    parser.add_argument("-n", "--requests", type=int, default=20000)
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    parser.add_argument("--binary", help="run this executable instead of the step's release build "
                        "(an older build, to compare)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_annotate"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            parser.error(f"needs {tool} (apt-get install valgrind)")
    if not args.binary:
        build_release([args.step])
    out = tempfile.NamedTemporaryFile(suffix=".callgrind", delete=False).name
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               args.binary or binary(args.step), "--port", "0", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            for _ in range(args.requests):
                client.sendall(REQUEST)
                read_response(client)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    report = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    os.unlink(out)
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", report).group(1).replace(",", ""))
    print(f"{args.step}: {total / args.requests:,.0f} instructions per keep-alive request "
          f"in user space ({total:,} for {args.requests:,}, start-up included)")
    if args.top:
        rows = [line for line in report.splitlines() if re.match(r"\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", line)]
        print("\n".join(rows[1:args.top + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
