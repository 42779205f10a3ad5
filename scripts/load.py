"""Shared by the scripts: drive a load with wrk, or with accesses.py where wrk is missing.

Not a command; `compare` and `bench_vs_nginx.py` import it. Both functions return the same
summary, or None when the tool printed nothing usable:
  {"requests", "requests_per_s", "p50_ms", "p99_ms", "failed"}
"""

import json
import os
import subprocess
import sys
import tempfile

from servers import ROOT

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
    return {
        "requests": summary["requests"],
        "requests_per_s": summary["requests_per_s"],
        "p50_ms": summary["latency_ms"]["p50"],
        "p99_ms": summary["latency_ms"]["p99"],
        "failed": summary["failed"],
    }
