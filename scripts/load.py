"""Shared by the scripts: the same-run comparison, and the load that drives it.

Not a command; `compare`, `bench_vs_nginx.py`, `before_after.py` and `per_request.py` import it.

- `Contender`: one server to measure, a step (by crate, or a binary of it) or a peer (nginx,
  Apache), started fresh for every run.
- `same_run`: every contender measured once per round, round after round, interleaved, so that
  the drift of a shared machine hits all of them alike and their ratio holds; `medians` sums up.
- `run_wrk` and `run_accesses`: one load, by wrk or, where wrk is missing, by accesses.py. Both
  return the same summary, or None when the tool printed nothing usable:
  {"requests", "requests_per_s", "p50_ms", "p99_ms", "failed"}
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from servers import ROOT, PeerServer, StepServer, tree_cpu_seconds


class Contender:
    """One server in a same-run comparison: a step (its crate, with options; or the binary at
    `path`, an older build) or a peer (`peer`: a function (port, workdir) -> Popen)."""

    def __init__(self, label, crate=None, options=(), path=None, peer=None):
        self.label = label
        self.crate = crate
        self.options = list(options)
        self.path = path
        self.peer = peer

    def available(self):
        if self.path:
            return os.access(self.path, os.X_OK)
        if self.crate:
            return os.path.isdir(os.path.join(ROOT, self.crate))
        return self.peer is not None

    def start(self, cpus=None):
        """The server, running on a free loopback port (a context manager that stops it)."""
        if self.crate or self.path:
            return StepServer(self.crate or os.path.basename(self.path), self.options, cpus=cpus,
                              path=self.path)
        return PeerServer(self.label, self.peer)


def same_run(entries, runs, measure, alternate=False):
    """Calls `measure(entry)` for every entry, `runs` rounds (round 1 of every entry, then
    round 2, ...); with `alternate`, every other round in reverse order, so that no entry always
    runs first. Returns the results of each entry, in the entries' order, a result per round
    (None for a run that gave none), so that results of one round can be paired."""
    results = [[None] * runs for _ in entries]
    for round_ in range(runs):
        order = list(range(len(entries)))
        if alternate and round_ % 2:
            order.reverse()
        for index in order:
            results[index][round_] = measure(entries[index])
    return results


def paired_ratio(ours, theirs, key="requests_per_s"):
    """The median, over the rounds where both ran, of ours / theirs in that round: a slow
    minute of a shared machine slows both sides of one ratio, where it would shift the median
    of one side only. None when no round has both."""
    ratios = [mine[key] / other[key] for mine, other in zip(ours, theirs)
              if mine and other and other[key]]
    return statistics.median(ratios) if ratios else None


def medians(results, summed=("failed",)):
    """The median of each figure over the runs of one entry (the `summed` ones added up
    instead), leaving out runs that gave no result; None without any."""
    results = [result for result in results if result]
    if not results:
        return None
    return {key: (sum if key in summed else statistics.median)(run[key] for run in results)
            for key, value in results[0].items() if isinstance(value, (int, float))}


def wrk_against(contender, clients, duration, keep_alive, path="/", warm_up=True):
    """Starts `contender`, loads `path` with wrk (after a second of warm-up: pools filled,
    pages faulted in), stops it; the summary, or None. On Linux the summary also has the CPU
    time the server's processes spent per request, user and kernel together
    (`cpu_us_per_request`): a busy machine slows a server down, but hardly changes that."""
    with contender.start() as server:
        if warm_up:
            run_wrk(server.url + path, clients, 1, keep_alive)
        before = tree_cpu_seconds(server.pid)
        result = run_wrk(server.url + path, clients, duration, keep_alive)
        after = tree_cpu_seconds(server.pid)
    if result and result["requests"] and os.path.isdir("/proc"):
        result["cpu_us_per_request"] = (sum(after) - sum(before)) / result["requests"] * 1e6
    return result

# wrk prints its summary for humans; this hook (run when wrk is done) prints it as one line of
# JSON too, so that nothing has to parse "Requests/sec:".
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url, clients, duration, keep_alive=True, cpus=None, threads=2, timeout="5s"):
    """wrk against `url` with `clients` connections for `duration` seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{duration}s", "--timeout", timeout,
               "-s", script.name]
    if not keep_alive:
        command += ["-H", "Connection: close"]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    try:
        output = subprocess.run(command + [url], capture_output=True, text=True,
                                timeout=duration + 60).stdout
    finally:
        os.unlink(script.name)
    line = next((l for l in output.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        return None
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    failed = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + raw["status"]
    return {
        "requests": raw["requests"],
        "requests_per_s": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "failed": failed,
    }


def run_accesses(url, clients, duration, keep_alive=True, cpus=None, fast_page=True):
    """accesses.py against `url`: a fixed number of requests, a few rounds per client (more for
    a fast page), since it has no duration of its own."""
    rounds = max(2, int(duration * (20 if fast_page else 1)))
    command = [sys.executable, os.path.join(ROOT, "scripts", "accesses.py"), url,
               "-n", str(clients * rounds), "-c", str(clients), "--timeout", "10", "--json"]
    if keep_alive:
        command.append("--keep-alive")
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    output = subprocess.run(command, capture_output=True, text=True, timeout=600).stdout
    try:
        summary = json.loads(output)
    except ValueError:
        return None
    if not summary["ok"]:
        return None
    return {
        "requests": summary["requests"],
        "requests_per_s": summary["requests_per_s"],
        "p50_ms": summary["latency_ms"]["p50"],
        "p99_ms": summary["latency_ms"]["p99"],
        "failed": summary["failed"],
    }
