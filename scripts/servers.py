"""Shared by the scripts: start a step (or nginx or Apache beside it), measure it, and the small
helpers they share (`command_line`, `percentile`, `machine`, `step_dir`, `split_server_options`).

Not a command; `experiment.py`, `memory.py`, `compare` and others import it.
"""

import collections
import glob
import json
import math
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def command_line(doc, **options):
    """The argument parser of a script whose docstring is its manual: the first paragraph says
    what it does, the rest (the examples) is shown by --help as written."""
    import argparse

    what, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(description=what, epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **options)


def steps(root=None):
    """The steps' crate names, as the tree under `root` (this repository) has them."""
    return sorted(os.path.basename(os.path.dirname(path))
                  for path in glob.glob(os.path.join(root or ROOT, "step[0-9][0-9]-*", "Cargo.toml")))


def step_dir(name, root=None):
    """The directory of the step called `name`: `4`, `04`, `step04` or `step04-threadpool`, in
    the tree under `root` (this repository); None when there is no such step (or more than one)."""
    root = root or ROOT
    if name.isdigit():
        name = f"step{int(name):02d}"
    exact = os.path.join(root, name)
    if os.path.isfile(os.path.join(exact, "Cargo.toml")):
        return exact
    found = sorted(glob.glob(os.path.join(root, f"{name}-*", "Cargo.toml")))
    return os.path.dirname(found[0]) if len(found) == 1 else None


def split_server_options(argv):
    """(the script's own arguments, the server's options): what comes after `--` is the
    server's."""
    if "--" not in argv:
        return argv, []
    split = argv.index("--")
    return argv[:split], argv[split + 1:]


def percentile(values, fraction):
    """The nearest-rank percentile of `values` (any order); 0.0 when there are none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def adopt_orphans():
    """Linux: become the "subreaper" of our descendants, so that a process that outlives its
    parent (a browser's helpers, a new nginx master whose old master exits) becomes our child
    instead of init's, and we can reap it at the end."""
    import ctypes

    try:
        pr_set_child_subreaper = 36
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


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


def stop_group(process, timeout):
    """SIGTERM to `process`, then SIGKILL to its whole process group (what it forked too) if it
    has not exited within `timeout` seconds; reaps it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


class StepServer:
    """A step's release binary running on a free loopback port, stopped by pid on exit."""

    def __init__(self, crate, options=(), cpus=None, open_files=None, path=None, log_lines=20):
        """Starts `crate`'s release binary, or the binary at `path` (a test build, say), keeping
        the last `log_lines` lines it writes to stderr in `stderr_tail`, and to stdout after its
        `listening on` line (events and the access log) in `stdout_tail`.

        Raises RuntimeError, with the server's own last line on stderr, when it does not start.
        """
        command = [path or binary(crate), "--host", "127.0.0.1", "--port", "0", "--quiet", *options]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        self.crate = crate
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # Its own process group, so that stop() also reaches what it forked.
            start_new_session=True,
            preexec_fn=(lambda: _limit_open_files(open_files)) if open_files else None,
        )
        # Keep reading stderr, so that the server never blocks on a full pipe, and keep its
        # last lines: a server that cannot start says why there (`error: cannot listen ...`).
        self.stderr_tail = collections.deque(maxlen=log_lines)
        self._stderr = threading.Thread(target=self._keep_stderr, daemon=True)
        self._stderr.start()
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.stop()
            self._stderr.join(timeout=5)
            why = self.stderr_tail[-1] if self.stderr_tail else f"first line on stdout: {line!r}"
            raise RuntimeError(f"{crate} did not start: {why}")
        self.url = line.removeprefix("listening on ")
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        # Keep reading stdout too.
        self.stdout_tail = collections.deque(maxlen=log_lines)
        self._drain = threading.Thread(target=self._keep_stdout, daemon=True)
        self._drain.start()

    def _keep_stdout(self):
        for line in self.process.stdout:
            if line.strip():
                self.stdout_tail.append(line.strip())

    def _keep_stderr(self):
        for line in self.process.stderr:
            if line.strip():
                self.stderr_tail.append(line.strip())

    @property
    def pid(self):
        return self.process.pid

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL to the whole group if it does not exit in time."""
        stop_group(self.process, timeout)
        # Its pipes end with it: let the readers finish, then close them.
        for reader in (getattr(self, "_drain", None), self._stderr):
            if reader is not None:
                reader.join(timeout=1)
        for pipe in (self.process.stdout, self.process.stderr):
            pipe.close()

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


def write_region(path, name, text):
    """Replaces what lies between `<!-- name: begin -->` and `<!-- name: end -->` in `path`."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    with open(path) as source:
        whole = source.read()
    if begin not in whole or end not in whole:
        sys.exit(f"{name}: {path} has no {begin} ... {end} region")
    head, _, rest = whole.partition(begin)
    _, _, tail = rest.partition(end)
    with open(path, "w") as out:
        out.write(f"{head}{begin}\n{text}\n{end}{tail}")
    print(f"wrote the table into {path}")


def write_data(path, name, report):
    """Stores `report` under `name` in the JSON data file `path` (created if need be), beside the
    other reports it holds: the figures a generated region shows, for the book to quote and for
    scripts/check_book.py to check the quotes against."""
    data = {}
    if os.path.exists(path):
        with open(path) as source:
            data = json.load(source)
    data[name] = report
    with open(path, "w") as out:
        json.dump(data, out, indent=1, ensure_ascii=False)
        out.write("\n")
    print(f"wrote the data into {path}")


def tree_cpu_seconds(root, exclude=()):
    """(user, kernel) CPU seconds spent by the tree under `root`, without the pids in
    `exclude` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = kernel = 0
    for pid in process_tree(root):
        if pid in exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            kernel += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass  # gone while we looked
    return user / ticks, kernel / ticks


def read_response(sock, buffered=b""):
    """Reads one response with a Content-Length body from `sock`, after the bytes `buffered`
    already read from it. Returns (status, head as text, body, the bytes read past the body:
    the start of a pipelined next answer). Raises ConnectionError if the server closes first."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of the answer")
        rest += chunk
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), rest[:length], rest[length:]


# --- peers: nginx and Apache, serving the same site from generated configs -----------------

SITE = os.path.join(ROOT, "common", "site")
PEERS_DIR = os.path.join(ROOT, "scripts", "peers")
APACHE_MODULES = "/usr/lib/apache2/modules"


def raise_fd_limit():
    """Let this script and its children (servers, wrk) hold thousands of sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def render_template(name, workdir, **values):
    """scripts/peers/<name> with `$values` filled in, written into `workdir`."""
    with open(os.path.join(PEERS_DIR, name)) as source:
        text = string.Template(source.read()).substitute(**values)
    path = os.path.join(workdir, name)
    with open(path, "w") as out:
        out.write(text)
    return path


def copy_site(workdir):
    """The site, where a peer's unprivileged workers can read it."""
    root = os.path.join(workdir, "site")
    shutil.copytree(SITE, root)
    os.chmod(workdir, 0o755)
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return root


def nginx_peer(workers, keepalive_timeout="5s"):
    """A function (port, workdir) -> Popen starting nginx with `workers`, or None if absent.
    The keep-alive timeout is 5 s, as the steps' idle timeout, unless said otherwise."""
    def start(port, workdir):
        for folder in ("logs", "temp"):
            os.makedirs(os.path.join(workdir, folder), exist_ok=True)
        conf = render_template("nginx.conf", workdir, port=port, workers=workers,
                               prefix=workdir, root=copy_site(workdir),
                               keepalive_timeout=keepalive_timeout)
        return subprocess.Popen(["nginx", "-p", workdir, "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    return start if shutil.which("nginx") else None


def apache_peer(mpm):
    """A function (port, workdir) -> Popen starting Apache with `mpm`, or None if absent."""
    def start(port, workdir):
        conf = render_template("apache.conf", workdir, port=port, mpm=mpm, prefix=workdir,
                               modules=APACHE_MODULES, root=copy_site(workdir))
        return subprocess.Popen(["apache2", "-f", conf, "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    installed = shutil.which("apache2") and os.path.exists(f"{APACHE_MODULES}/mod_mpm_{mpm}.so")
    return start if installed else None


class PeerServer:
    """A peer started by `start(port, workdir)` on a free port, stopped by pid (and group)."""

    def __init__(self, label, start):
        self.workdir = tempfile.mkdtemp(prefix="peer-")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.process = start(self.port, self.workdir)
        if not wait_for_port(self.port):
            self.stop()
            raise RuntimeError(f"{label} did not start (see {self.workdir})")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        stop_group(self.process, 10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def nginx_proxy_peer(upstream, workers, keepalive=64):
    """A `start(port, workdir)` for PeerServer: nginx `proxy_pass` to `upstream` ("IP:port")
    with `workers` worker processes and `keepalive` idle upstream connections per worker, from
    scripts/peers/nginx-proxy.conf."""

    def start(port, workdir):
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(workdir, "temp"), exist_ok=True)
        conf = render_template("nginx-proxy.conf", workdir, port=port, workers=workers,
                               prefix=workdir, upstream=upstream, keepalive=keepalive)
        return subprocess.Popen(["nginx", "-p", workdir, "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    return start


def write_proxy_config(path, upstreams, upstream_header=False, keepalive=64):
    """Writes a step 07 configuration (for `--config`) to `path`: one route, `/`, to one
    round-robin group of `upstreams` ("IP:port" each), with step 07's default timeouts and a
    keep-alive pool of `keepalive` idle connections per upstream and worker (nginx's
    `keepalive`, the same in nginx_proxy_peer). Returns `path`. Without a configuration, step
    07 runs its demo instead (three upstreams of its own), which is fine for a try but not for
    a comparison with nginx in front of the same upstream."""
    listed = ", ".join(f'"{address}"' for address in upstreams)
    with open(path, "w") as out:
        out.write("[proxy]\n"
                  f"upstream_header = {'true' if upstream_header else 'false'}\n"
                  f"keepalive = {keepalive}\n\n"
                  '[[route]]\nprefix = "/"\ngroup = "app"\n\n'
                  f'[group.app]\nstrategy = "round_robin"\nupstreams = [{listed}]\n')
    return path


# --- measuring a running server -----------------------------------------------------------

class Sampler:
    """Peak processes, threads and RSS (KiB) of a process tree, sampled while a load runs."""

    def __init__(self, pid, interval=0.25):
        self.pid = pid
        self.interval = interval
        self.peak = [0, 0, 0]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while True:
            usage = tree_usage(self.pid)
            self.peak = [max(old, new) for old, new in zip(self.peak, usage)]
            if self.stop_event.wait(self.interval):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()


def machine():
    """`2 cores (CPU model), Linux 6.x`: the line every table of measurements states."""
    import platform

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"
