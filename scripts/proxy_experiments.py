#!/usr/bin/env python3
"""Chapter 07's experiments, run through the real binaries: step 07 in front of step 05 upstreams.

Every experiment starts its own processes on free loopback ports, with the example
configuration (step07-reverse-proxy/examples/proxy.toml, its upstreams 9001-9003 moved to the
ports it got) or the demo, and stops every one of them by pid at the end. Each prints
accesses.py's usual summary for each load, then one line with the figures the chapter quotes.

balance   the third upstream answers 50 ms late (--delay-ms 50): -n requests from -c clients
          through group `web` (round robin, `/`), then as many through `slow` (least
          connections, `/sleep?ms=0`): the spread over the three, the wall time and the p90.
demo      the demo (no --config): -n requests; `kill -9` one of its upstreams, -n more; once
          the health checks mark it down, -n more. The spread and failures of each run, and
          what the proxy logged about it (retries, ejections, health).
stopped   one upstream stopped (`kill -STOP`): -n requests from -c clients through `web`; how
          many were answered and how fast, which status the others got and after how long;
          then `kill -CONT`, and how long the health checks take to bring it back.
timeout   GET /sleep?ms=12000 through `slow`, whose upstreams would answer after 12 s, with
          read_timeout_ms = 10000: the status and the time it took.
reload    an open-loop load (--rate for --duration, -c clients) through `web`, and two SIGHUPs
          to the master during it (1 s and 2.5 s in): every request's fate, and the latency.

Examples:
  python3 scripts/proxy_experiments.py balance
  python3 scripts/proxy_experiments.py demo -n 300 -c 10
  python3 scripts/proxy_experiments.py stopped -n 30 -c 3
  python3 scripts/proxy_experiments.py timeout
  python3 scripts/proxy_experiments.py reload --rate 300 --duration 4 -c 50
  scripts/record 07-reverse-proxy -- python3 scripts/proxy_experiments.py balance

Exit status: 0 when the experiment ran (whatever it measured), 1 when it could not (a server
that did not start, a reload that did not happen), 2 on bad usage.
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accesses  # noqa: E402
from servers import ROOT, StepServer, build_release, command_line, machine, process_tree  # noqa: E402

EXAMPLE = os.path.join(ROOT, "step07-reverse-proxy", "examples", "proxy.toml")
EXAMPLE_UPSTREAMS = ("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")


# --- the pure parts (scripts/tests/test_proxy_experiments.py) -----------------------------


def example_config(text, upstreams):
    """The example configuration's text with its three upstreams (9001-9003) replaced by
    `upstreams`, in the same order, everywhere they appear (both groups list them)."""
    if len(upstreams) != len(EXAMPLE_UPSTREAMS):
        raise ValueError(f"the example has {len(EXAMPLE_UPSTREAMS)} upstreams, not {len(upstreams)}")
    for old in EXAMPLE_UPSTREAMS:
        if f'"{old}"' not in text:
            raise ValueError(f"the example configuration no longer names {old}")
    for old, new in zip(EXAMPLE_UPSTREAMS, upstreams):
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def spread(counts, order, labels=None):
    """`127.0.0.1:4001 100, 127.0.0.1:4002 100, 127.0.0.1:4003 (slow) 100`: the requests each
    upstream answered, in `order` (those with none too), then any other that answered."""
    labels = labels or {}
    names = list(order) + sorted(name for name in counts if name not in order)
    return ", ".join(f"{name}{' (' + labels[name] + ')' if name in labels else ''} {counts.get(name, 0)}"
                     for name in names)


def outcomes(results):
    """(answered, {outcome: latencies in s}) of a load's results: the ok ones' latencies, and
    each failure kind's."""
    answered, failed = [], {}
    for result in results:
        if result.ok:
            answered.append(result.latency)
        else:
            failed.setdefault(result.outcome, []).append(result.latency)
    return answered, failed


def log_counts(lines):
    """What the proxy logged about its upstreams, by kind."""
    kinds = {"retried on another upstream": "; trying ", "ejected (passive check)": " ejected for ",
             "marked down (active check)": " is down after ", "marked up again": " is up again after "}
    return {kind: sum(1 for line in lines if marker in line) for kind, marker in kinds.items()}


# --- running the servers and the load ------------------------------------------------------


@contextlib.contextmanager
def servers(delays=(0, 0, 0), config=True):
    """Three step 05 upstreams (the i-th with --delay-ms delays[i]) and step 07 in front of them
    with the example configuration; or, with config=False, step 07's demo alone. Yields
    (proxy, upstreams); stops them all, by pid, at the end."""
    started = []
    workdir = tempfile.mkdtemp(prefix="proxy-experiments-")
    try:
        if not config:
            proxy = StepServer("step07-reverse-proxy", log_lines=1000)
            started.append(proxy)
            yield proxy, []
            return
        upstreams = []
        for delay in delays:
            upstream = StepServer("step05-epoll-kqueue", ["--delay-ms", str(delay)] if delay else [])
            started.append(upstream)
            upstreams.append(upstream)
        path = os.path.join(workdir, "proxy.toml")
        with open(EXAMPLE, encoding="utf-8") as source:
            text = example_config(source.read(), [f"{u.host}:{u.port}" for u in upstreams])
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        proxy = StepServer("step07-reverse-proxy", ["--config", path], log_lines=1000)
        started.append(proxy)
        yield proxy, upstreams
    finally:
        for server in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)  # a stopped process would not hear SIGTERM
            server.stop()
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)


def load(url, requests=None, clients=10, rate=None, duration=None, title=""):
    """accesses.py's load (a new connection per request), its summary printed under `title`;
    (summary, results)."""
    target = accesses.Target(url)
    if rate:
        results, wall = accesses.run_open_loop(target, rate, duration, clients, 30.0, False)
    else:
        results, wall = accesses.run_closed_loop(target, requests, clients, 30.0, False)
    args = argparse.Namespace(rate=rate, concurrency=clients, keep_alive=False, idle=0)
    summary = accesses.summarize(args, target, results, wall)
    print(f"\n== {title}")
    accesses.print_summary(summary)
    return summary, results


def proxy_lines(proxy, since=(0, 0)):
    """What the proxy said since `since` (a mark()): its errors on stderr (a retry on another
    upstream), then its events on stdout (an ejection, a health verdict)."""
    return list(proxy.stderr_tail)[since[0]:] + list(proxy.stdout_tail)[since[1]:]


def mark(proxy):
    return len(proxy.stderr_tail), len(proxy.stdout_tail)


def wait_for_log(proxy, marker, timeout, since=(0, 0), count=1):
    """Seconds until the proxy has said `count` lines containing `marker`, or None after
    `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sum(marker in line for line in proxy_lines(proxy, since)) >= count:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def print_log(proxy, since):
    """How many lines of each kind the proxy said since `since`, and its health verdicts."""
    lines = proxy_lines(proxy, since)
    for kind, count in log_counts(lines).items():
        if count:
            print(f"proxy log   {count} x {kind}")
    for line in lines:
        if line.startswith("health: "):
            print(f"proxy log   {line}")


# --- the experiments ----------------------------------------------------------------------


def balance(args):
    with servers(delays=(0, 0, 50)) as (proxy, upstreams):
        names = [f"{u.host}:{u.port}" for u in upstreams]
        labels = {names[2]: "slow"}
        for title, path in (("round robin (group web)", "/"), ("least connections (group slow)", "/sleep?ms=0")):
            summary, _ = load(proxy.url + path, args.requests, args.concurrency,
                              title=f"{title}: GET {path}, the third upstream 50 ms late")
            latency = summary["latency_ms"] or {}
            print(f"result      {title.split(' (')[0]}: {spread(summary['upstreams'], names, labels)}; "
                  f"{summary['failed']} failed, wall {summary['wall_s']:.2f} s, p90 {latency.get('p90', 0):.1f} ms")


def demo_upstream_pids(master):
    """The demo's upstreams: the master's descendants started with --demo-upstream."""
    found = []
    for pid in process_tree(master):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as source:
                if b"--demo-upstream" in source.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return sorted(found)


def upstream_port(pid):
    """The port process `pid` listens on: its listening socket's inode, found in /proc/net/tcp."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as source:
            next(source)
            for line in source:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    return int(fields[1].rsplit(":", 1)[1], 16)
    return None


def demo(args):
    with servers(config=False) as (proxy, _):
        summary, _ = load(proxy.url + "/", args.requests, args.concurrency, title="the demo")
        order = sorted(summary["upstreams"])
        print(f"result      demo: {spread(summary['upstreams'], order)}; {summary['failed']} failed, "
              f"wall {summary['wall_s']:.2f} s")
        pids = demo_upstream_pids(proxy.pid)
        if not pids:
            sys.exit("proxy_experiments: the demo's upstreams were not found")
        victim = pids[0]
        port = upstream_port(victim)
        since = mark(proxy)
        os.kill(victim, signal.SIGKILL)
        print(f"\nkill -9 {victim} (the demo upstream on port {port})")
        summary, _ = load(proxy.url + "/", args.requests, args.concurrency, title="right after the kill")
        print(f"result      after the kill: {spread(summary['upstreams'], order)}; {summary['failed']} failed")
        waited = wait_for_log(proxy, " is down after ", 15, since)
        print_log(proxy, since)
        if waited is None:
            print("health      not marked down within 15 s")
            return
        summary, _ = load(proxy.url + "/", args.requests, args.concurrency, title="once marked down")
        print(f"result      marked down: {spread(summary['upstreams'], order)}; {summary['failed']} failed")


def stopped(args):
    with servers() as (proxy, upstreams):
        victim = upstreams[0]
        since = mark(proxy)
        os.kill(victim.pid, signal.SIGSTOP)
        print(f"kill -STOP {victim.pid} (upstream {victim.host}:{victim.port})")
        _, results = load(proxy.url + "/", args.requests, args.concurrency,
                          title="one upstream stopped: GET /")
        answered, failed = outcomes(results)
        fast = f", in at most {max(answered) * 1000:.1f} ms" if answered else ""
        line = f"result      {len(answered)} answered{fast}"
        for outcome, latencies in sorted(failed.items()):
            line += f"; {len(latencies)} x {outcome} after {min(latencies):.2f} to {max(latencies):.2f} s"
        print(line)
        # Both groups, web and slow, list it: each checks it on its own.
        down = wait_for_log(proxy, " is down after ", 15, since, count=2)
        print_log(proxy, since)
        since = mark(proxy)
        os.kill(victim.pid, signal.SIGCONT)
        print(f"kill -CONT {victim.pid}")
        if down is not None:
            up = wait_for_log(proxy, " is up again after ", 15, since, count=2)
            print_log(proxy, since)
            print(f"health      back up in both groups {up:.2f} s after kill -CONT" if up is not None
                  else "health      not back up in both groups within 15 s")


def timeout(args):
    with servers() as (proxy, _):
        connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
        started = time.perf_counter()
        connection.request("GET", f"/sleep?ms={args.sleep_ms}")
        response = connection.getresponse()
        response.read()
        took = time.perf_counter() - started
        connection.close()
        print(f"result      GET /sleep?ms={args.sleep_ms} with read_timeout_ms = 10000: "
              f"HTTP {response.status} after {took:.2f} s")


def stats(proxy):
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    connection.request("GET", "/stats")
    value = json.loads(connection.getresponse().read())
    connection.close()
    return value


def reload(args):
    with servers() as (proxy, _):
        before = stats(proxy).get("generation")
        box = {}
        loader = threading.Thread(target=lambda: box.update(result=load(
            proxy.url + "/", clients=args.concurrency, rate=args.rate, duration=args.duration,
            title=f"two SIGHUP reloads during {args.rate:g}/s for {args.duration:g} s")))
        loader.start()
        for pause in (1.0, 1.5):
            time.sleep(pause)
            os.kill(proxy.pid, signal.SIGHUP)
        loader.join()
        summary, results = box["result"]
        after = stats(proxy).get("generation")
        latency = summary["latency_ms"] or {}
        print(f"result      {summary['requests']} requests, {summary['failed']} failed, "
              f"p99 {latency.get('p99', 0):.1f} ms, max {latency.get('max', 0):.1f} ms; "
              f"generation {before} -> {after}")
        if after == before:
            sys.exit("proxy_experiments: the reloads did not start a new generation")


EXPERIMENTS = {"balance": balance, "demo": demo, "stopped": stopped, "timeout": timeout, "reload": reload}


def main(argv):
    parser = command_line(__doc__)
    parser.add_argument("experiment", choices=list(EXPERIMENTS))
    parser.add_argument("-n", "--requests", type=accesses.positive_int,
                        help="requests per load (balance, demo: 300; stopped: 30)")
    parser.add_argument("-c", "--concurrency", type=accesses.positive_int,
                        help="clients at once (balance, demo: 10; stopped: 3; reload: 50)")
    parser.add_argument("--rate", type=accesses.positive_float, default=300.0, help="reload: requests per second (300)")
    parser.add_argument("--duration", type=accesses.positive_float, default=4.0, help="reload: seconds (4)")
    parser.add_argument("--sleep-ms", type=int, default=12000, help="timeout: the upstream's sleep (12000)")
    args = parser.parse_args(argv)
    defaults = {"stopped": (30, 3), "reload": (None, 50)}.get(args.experiment, (300, 10))
    args.requests = args.requests or defaults[0]
    args.concurrency = args.concurrency or defaults[1]
    build_release(["step05-epoll-kqueue", "step07-reverse-proxy"])
    print(f"machine     {machine()}")
    try:
        EXPERIMENTS[args.experiment](args)
    except RuntimeError as error:  # a server that did not start says why
        sys.exit(f"proxy_experiments: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
