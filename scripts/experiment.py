#!/usr/bin/env python3
"""Run one chapter experiment in one command: start a step, fire accesses.py at it, stop it.

The step is built in release mode (cargo build --release -p STEP), started on a free loopback
port with the server options you give, and driven by scripts/accesses.py with the options
after `--`; a first accesses option that starts with `/` is the path to request. The server is
stopped (SIGTERM, by pid) when the load is done.

Examples:
  python3 scripts/experiment.py step01-fork --iterative -- /sleep?ms=1000 -n 20 -c 20
  python3 scripts/experiment.py step01-fork -- /sleep?ms=1000 -n 20 -c 20
  python3 scripts/experiment.py step02-threads --delay-ms 300 -- /stats -n 50 -c 50 --json

Exit status: that of accesses.py (0: every request answered), or 2 when the step cannot start.
"""

import os
import subprocess
import sys

from servers import ROOT, StepServer, build_release


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    step, rest = argv[0], argv[1:]
    if "--" in rest:
        split = rest.index("--")
        server_options, load_options = rest[:split], rest[split + 1 :]
    else:
        server_options, load_options = rest, []
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
        accesses = os.path.join(ROOT, "scripts", "accesses.py")
        return subprocess.run([sys.executable, accesses, server.url + path, *load_options]).returncode

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
