#!/usr/bin/env python3
"""Run one chapter experiment in one command: start a step, fire accesses.py at it, stop it.

The step is built in release mode (cargo build --release -p STEP), started on a free loopback
port with the server options you give, and driven by scripts/accesses.py with the options
after `--`; a first accesses option that starts with `/` is the path to request. The server is
stopped (SIGTERM, by pid) when the load is done, or, with --hold S before the step's name, S
seconds later (to watch step03's workers shrink back after the load).

The port is a free one, so the step's live page is not on 8090: the address is printed as
`watch it live: http://127.0.0.1:PORT/live` (by accesses.py, as the load starts). With --wait S
before the step's name, that line comes as soon as the server is up, and the load starts S
seconds later: time to open the page and see the whole run, when the load lasts a second.

Examples:
  python3 scripts/experiment.py step01-fork --iterative -- /sleep?ms=1000 -n 20 -c 20
  python3 scripts/experiment.py step01-fork -- /sleep?ms=1000 -n 20 -c 20
  python3 scripts/experiment.py step02-threads --delay-ms 300 -- /stats -n 50 -c 50 --json
  python3 scripts/experiment.py --hold 15 step03-queue-autoscale --trace /tmp/trace.txt \
      -- /sleep?ms=200 --rate 100 --duration 5 -c 200
  python3 scripts/experiment.py --wait 10 --hold 10 step05-epoll-kqueue -- /sleep?ms=1000 -n 1000 -c 1000

Exit status: that of accesses.py (0: every request answered), or 2 when the step cannot start.
"""

import argparse
import os
import subprocess
import sys
import time

from servers import ROOT, StepServer, build_release, split_server_options


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    # Its own options come before the step's name; the step's, and then accesses.py's, after it.
    own = argparse.ArgumentParser(
        prog="experiment.py", add_help=False,
        usage="experiment.py [--hold S] [--wait S] STEP [step options] -- [accesses.py options]")
    own.add_argument("--hold", type=float, default=0.0, metavar="S")
    own.add_argument("--wait", type=float, default=0.0, metavar="S")
    leading = 0
    while leading < len(argv) and argv[leading] in ("--hold", "--wait"):
        leading += 2
    try:
        options = own.parse_args(argv[:leading])
    except SystemExit:
        return 2  # argparse said what was wrong, in one line
    argv = argv[leading:]
    if not argv:
        print(__doc__)
        return 2
    hold, wait = options.hold, options.wait
    step, (server_options, load_options) = argv[0], split_server_options(argv[1:])
    build_release([step])
    try:
        server = StepServer(step, server_options)
    except RuntimeError as error:
        print(f"experiment.py: {error}", file=sys.stderr)
        return 2
    with server:
        path = "/"
        if load_options and load_options[0].startswith("/"):
            path, load_options = load_options[0], load_options[1:]
        print(f"{step} {' '.join(server_options)}".strip(), flush=True)
        if wait > 0:
            print(f"watch it live: {server.url}/live   (the load starts in {wait:g} s)", flush=True)
            time.sleep(wait)
        accesses = os.path.join(ROOT, "scripts", "accesses.py")
        status = subprocess.run([sys.executable, accesses, server.url + path, *load_options]).returncode
        if hold > 0:
            print(f"holding the server for {hold:g} s", flush=True)
            time.sleep(hold)
        return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
