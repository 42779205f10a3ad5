"""Shared by the scripts: build and start a step, and measure its process tree.

Not a command; `experiment.py`, `inflight_memory.py` and `compare` import it.
"""

import os
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def build_release(crates):
    """`cargo build --release` for the given crates; exits with a message if it fails."""
    command = ["cargo", "build", "--release", "--quiet"]
    for crate in crates:
        command += ["-p", crate]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit(f"cannot build {', '.join(crates)}")


def binary(crate):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", crate)


def _limit_open_files(limit):
    """In the child before exec: `ulimit -n limit`, soft and hard (so the server cannot raise it)."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class StepServer:
    """A step's release binary running on a free loopback port, stopped by pid on exit."""

    def __init__(self, crate, options=(), cpus=None, open_files=None, path=None):
        """Starts `crate`'s release binary, or the binary at `path` (a test build, say)."""
        command = [path or binary(crate), "--host", "127.0.0.1", "--port", "0", "--quiet", *options]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        self.crate = crate
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            # Its own process group, so that stop() also reaches what it forked.
            start_new_session=True,
            preexec_fn=(lambda: _limit_open_files(open_files)) if open_files else None,
        )
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            self.stop()
            raise RuntimeError(f"{crate} did not start (first line: {line!r})")
        self.url = line.removeprefix("listening on ")
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        # Keep reading stdout so that the server never blocks on a full pipe.
        self._drain = threading.Thread(target=self._discard_output, daemon=True)
        self._drain.start()

    def _discard_output(self):
        for _ in self.process.stdout:
            pass

    @property
    def pid(self):
        return self.process.pid

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL to the whole group if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def process_tree(root):
    """`root` and all its descendants, by pid (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _first_number(path, field):
    try:
        with open(path) as source:
            for line in source:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_usage(root, pss=False):
    """(processes, threads, memory in KiB) of the tree under `root`.

    Memory is PSS when `pss` (shared pages split between the processes sharing them: honest,
    but slow to read for hundreds of processes), else the sum of RSS (cheap; a page shared by
    forked processes counts once in each).
    """
    tree = process_tree(root)
    threads = sum(_first_number(f"/proc/{pid}/status", "Threads:") for pid in tree)
    if pss:
        memory = sum(_first_number(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in tree)
    else:
        memory = 0
        for pid in tree:
            try:
                with open(f"/proc/{pid}/statm") as statm:
                    memory += int(statm.read().split()[1]) * PAGE_SIZE // 1024
            except (OSError, IndexError, ValueError):
                pass
    return len(tree), threads, memory
