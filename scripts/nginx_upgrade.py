#!/usr/bin/env python3
"""nginx reloads its configuration and replaces its own binary under load, dropping nothing.

The experiment of docs/beyond-step07.md. Starts nginx (2 workers) with the config that
scripts/compare uses (scripts/peers/nginx.conf), fires an open-loop load at it with
scripts/accesses.py (a new connection per request, so that accepting never stops), and
meanwhile:

  at 2 s  SIGHUP   reload: the master re-reads its config, starts new workers, and the old
                   ones finish what they are serving and exit
  at 4 s  SIGUSR2  binary upgrade: the master forks and execs a new nginx, which inherits
                   the listening socket (its descriptor number is passed in the NGINX
                   environment variable) and starts its own workers beside the old ones
  at 5 s  SIGQUIT  the old master shuts down gracefully: its workers finish what they
                   serve, then it exits; the new master serves alone

Then it prints the load's outcome (every request answered?) and which masters and workers
were alive after each step. With --restart it does what a server without these signals must
do instead, at 3 s: stop nginx (gracefully) and start it again, and counts the refused
connections. Stops every nginx process at the end (by process group, and reaps them). Needs
nginx (apt-get install nginx) and permission to run it as `nobody`.

Usage: python3 scripts/nginx_upgrade.py [--restart] [--rate 300]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
from servers import (  # noqa: E402
    adopt_orphans, copy_site, free_port, process_tree, render_template, wait_for_port,
)

TIMELINE = [
    (2.0, signal.SIGHUP, "SIGHUP: reload"),
    (4.0, signal.SIGUSR2, "SIGUSR2: start the new binary"),
    (5.0, signal.SIGQUIT, "SIGQUIT: the old master leaves"),
]


def nginx_processes(group):
    """(masters, workers): the pids of nginx processes in process group `group`."""
    masters, workers = [], []
    for pid in process_tree(os.getpid()):
        try:
            if os.getpgid(pid) != group:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as source:
                command = source.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "master process" in command:
            masters.append(pid)
        elif "worker process" in command:
            workers.append(pid)
    return sorted(masters), sorted(workers)


def describe(groups):
    masters, workers = [], []
    for group in groups:
        found = nginx_processes(group)
        masters += found[0]
        workers += found[1]
    return f"masters {masters}, workers {workers}"


def start_nginx(workdir, conf, port):
    """Starts nginx; (master pid, its process group, whether it listens on `port`)."""
    # Two details make SIGUSR2 work on a master that runs in the foreground (daemon off):
    # nginx must be started by its absolute path (the master execs argv[0] again, and execve
    # does not search PATH), and its parent must change after it started (a master whose
    # parent is the one it started with takes itself for a new binary whose old master is
    # still alive, and ignores the signal). So a shell starts it in the background, waits
    # until nginx listens, and exits: nginx becomes our child through adopt_orphans.
    starter = subprocess.Popen(
        ["sh", "-c", '"$0" "$@" >/dev/null 2>&1 & echo $!; read _',
         shutil.which("nginx"), "-p", workdir, "-c", conf],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    master_pid = int(starter.stdout.readline())
    listening = wait_for_port(port)
    starter.stdin.close()
    starter.wait()
    # The shell led a new session and process group, which nginx keeps.
    return master_pid, starter.pid, listening


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restart", action="store_true",
                        help="stop and start nginx at 3 s instead of the signals")
    parser.add_argument("--rate", type=int, default=300, help="requests per second (default 300)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load (default 8)")
    args = parser.parse_args(argv)
    if shutil.which("nginx") is None:
        print("nginx_upgrade.py: nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2

    adopt_orphans()
    workdir = tempfile.mkdtemp(prefix="nginx-upgrade-")
    port = free_port()
    for folder in ("logs", "temp"):
        os.makedirs(os.path.join(workdir, folder))
    conf = render_template("nginx.conf", workdir, port=port, workers=2, prefix=workdir,
                           root=copy_site(workdir), keepalive_timeout="5s")
    master_pid, group, listening = start_nginx(workdir, conf, port)
    groups, load = [group], None
    try:
        if not listening:
            print(f"nginx_upgrade.py: nginx did not start (see {workdir})", file=sys.stderr)
            return 1
        time.sleep(0.3)  # let the workers start
        print(f"0.0 s  started: {describe(groups)}", flush=True)
        load = subprocess.Popen(
            [sys.executable, os.path.join(SCRIPTS, "accesses.py"), f"http://127.0.0.1:{port}/",
             "--rate", str(args.rate), "--duration", str(args.duration), "-c", "50", "--json"],
            stdout=subprocess.PIPE, text=True,
        )
        started = time.monotonic()
        if args.restart:
            time.sleep(3.0)
            stopping = time.monotonic()
            os.kill(master_pid, signal.SIGQUIT)
            os.waitpid(master_pid, 0)  # our child since adopt_orphans
            master_pid, group, listening = start_nginx(workdir, conf, port)
            groups.append(group)
            print(f"3.0 s  stopped and started again in {time.monotonic() - stopping:.2f} s: "
                  f"{describe(groups)}", flush=True)
        else:
            for at, signum, what in TIMELINE:
                time.sleep(max(0.0, started + at - time.monotonic()))
                os.kill(master_pid, signum)
                time.sleep(0.5)
                print(f"{at:.1f} s  {what:32} then: {describe(groups)}", flush=True)
        output, _ = load.communicate(timeout=args.duration + 60)
        summary = json.loads(output)
        print(f"load: {summary['requests']} requests at {args.rate}/s, a new connection each: "
              f"{summary['ok']} answered, {summary['failed']} failed {summary['failures'] or ''}")
        print(f"after: {describe(groups)}")
        if summary["failed"] and not args.restart:
            with open(os.path.join(workdir, "logs", "error.log")) as log:
                print("nginx's error.log:\n" + log.read(), file=sys.stderr)
            return 1
        return 0
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        while True:  # the masters and workers, now our children (see adopt_orphans)
            try:
                if os.waitpid(-1, 0)[0] == 0:
                    break
            except ChildProcessError:
                break
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
