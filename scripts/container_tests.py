#!/usr/bin/env python3
"""The container tests: docker-compose.yml brought up for real, checked, and taken down.

It builds the binaries and the images (scripts/containers.py), brings the compose project up
under a name of its own, and checks what a user of the images would see:

  cold start       `compose up -d`, then the first 200 through the published port
  published        only the proxy's port is published, and only on 127.0.0.1: not the admin
                   port, not the upstreams
  hello            GET / through the proxy: the hello page, from an upstream (X-Upstream)
  balanced         30 requests reach all three upstreams
  pid 1            the master is PID 1 in its container (/stats: master_pid)
  reload           `docker kill -s HUP`: a new generation of workers, no failed request
  worker killed    SIGKILL to a worker (from the host, by its host pid: the image has no
                   shell): the master forks a new one
  orphans reaped   a process whose parent dies in the container is inherited by the master
                   (PID 1), which reaps it: no zombie (in a step06 and in the step07 container)
  upstream stopped chapter 07's failure demo: `docker stop upstream2` under load; no request
                   fails, the health checks take it out; `docker start` brings it back
  stop drains      `docker stop` of the proxy with a request in flight: the request is
                   answered, the container exits 0 within the grace period

The host sends requests only to the port published on 127.0.0.1, never to a container's
address; the proxy reaches the upstreams on the project's own network. Processes are signalled
by pid. Everything the run makes (containers, networks, images) carries its name, and is
removed at the end, also on a failure, Ctrl-C or SIGTERM; then it checks that nothing is left.

Without Docker (no client, no daemon, no compose) it prints `skipped: <why>` and exits 0; with
FTP_REQUIRE_TOOLS=1 (CI) that is a failure.

Examples:
  python3 scripts/container_tests.py
  python3 scripts/container_tests.py --write-docs   # also the figures: docs/containers.json
                                                   # and the table in docs/07-reverse-proxy.md
"""

import argparse
import datetime
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accesses  # noqa: E402
import containers  # noqa: E402
from containers import GRACE_S, DockerError, Project, docker  # noqa: E402
from servers import ROOT, machine, write_region  # noqa: E402

RESULTS = os.path.join(ROOT, "target", "containers", "results.json")
DATA = os.path.join(ROOT, "docs", "containers.json")
CHAPTER = os.path.join(ROOT, "docs", "07-reverse-proxy.md")
UPSTREAMS = ("upstream1:8090", "upstream2:8090", "upstream3:8090")


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def wait_until(predicate, timeout, what, interval=0.1):
    """Calls `predicate` until it returns something true, which it returns; at most `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{what}: not within {timeout} s")
        time.sleep(interval)


def inspect(container, template):
    return docker("inspect", "--format", template, container)


def docker_time(text):
    """Docker's timestamps (2026-12-04T18:37:44.615655628Z) as a time.time()."""
    whole, _, fraction = text.strip().rstrip("Z").partition(".")
    at = datetime.datetime.fromisoformat(f"{whole}.{fraction[:6].ljust(6, '0')}+00:00")
    return at.timestamp()


def stopped_after(container, since):
    """Seconds from `since` (a time.time()) until the container's process exited: docker's
    own clean-up after the exit (network, port proxy) can take seconds more before `docker
    stop` returns, and is not the server's doing."""
    return docker_time(inspect(container, "{{.State.FinishedAt}}")) - since


def listening_after_start(container):
    """Seconds from the container's start to its `listening on` line: the server's own part
    of a cold start."""
    logs = docker("logs", "--timestamps", container)
    line = next((l for l in logs.splitlines() if " listening on http://" in l), None)
    check(line is not None, "no `listening on` line")
    return docker_time(line.split()[0]) - docker_time(inspect(container, "{{.State.StartedAt}}"))


# --- HTTP, to 127.0.0.1 only ---------------------------------------------------------------


def get(port, path, timeout=5.0):
    """GET `path` on a new connection to 127.0.0.1:`port`: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def stats(port):
    """The proxy's own /stats (it answers it itself), or {} if it does not answer."""
    try:
        status, _, body = get(port, "/stats", timeout=2.0)
        return json.loads(body) if status == 200 else {}
    except (OSError, http.client.HTTPException, ValueError):
        return {}


def when_stats(port, field, value):
    """For wait_until: the time at which the proxy's /stats shows `field` == `value`."""
    return time.monotonic() if stats(port).get(field) == value else None


class Load:
    """`clients` threads, each sending GET / every `interval` seconds on a keep-alive
    connection of its own (accesses.py's client), until stopped or for at most `limit`
    seconds. Records every request: (start, end, ok, X-Upstream).

    Like a browser (and like the proxy towards its upstreams), a client whose kept-alive
    connection turns out closed before any answer sends the request again on a new one: a
    server may close an idle connection at any moment (a retired worker does), and the
    request may cross the close. `retries` counts them."""

    CLOSED = ("RemoteDisconnected", "ConnectionResetError", "BrokenPipeError")

    def __init__(self, port, clients=4, interval=0.02, limit=90.0):
        self.target = accesses.Target(f"http://127.0.0.1:{port}/")
        self.clients, self.interval, self.limit = clients, interval, limit
        self.records = []
        self.retries = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = []

    def client(self):
        client = accesses.Client(self.target, timeout=10, keep_alive=True)
        deadline = time.monotonic() + self.limit
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            reused = client.connection is not None
            result = client.request()
            if reused and not result.ok and result.outcome in self.CLOSED:
                with self.lock:
                    self.retries += 1
                result = client.request()
            with self.lock:
                self.records.append((start, time.monotonic(), result.ok, result.upstream))
            self.stop_event.wait(self.interval)
        client.close()

    def __enter__(self):
        for _ in range(self.clients):
            thread = threading.Thread(target=self.client, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    def between(self, start, end=float("inf")):
        """The requests that started in [start, end)."""
        with self.lock:
            return [r for r in self.records if start <= r[0] < end]


def failed(records):
    return sum(1 for r in records if not r[2])


# --- the checks ------------------------------------------------------------------------------


def cold_start(project, figures):
    start = time.monotonic()
    project.run("up", "--detach", "--no-build")
    up_returned = time.monotonic() - start
    # With the docker client, which starts in milliseconds (docker-compose 1.29 takes most of
    # a second to start, and would be counted in the cold start).
    proxy = docker(
        "ps", "--quiet", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={project.name}",
        "--filter", "label=com.docker.compose.service=proxy",
    )
    published = docker("port", proxy, "8090/tcp").splitlines()[0]
    host, _, port = published.rpartition(":")
    check(host == "127.0.0.1", f"the proxy is published on {published}, not 127.0.0.1")
    project.port = int(port)

    def answered():
        try:
            return get(project.port, "/", timeout=1.0)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    wait_until(answered, 30, "the first 200 through the proxy", interval=0.02)
    first_answer = time.monotonic() - start
    for service in containers.SERVICES:
        project.container(service)
    check(project.container("proxy") == proxy, "two proxies?")
    listening = listening_after_start(project.container("proxy"))
    figures["cold_start_s"] = round(first_answer, 2)
    figures["compose_up_s"] = round(up_returned, 2)
    figures["proxy_listening_ms"] = round(listening * 1000, 1)
    return (
        f"`up -d` returned after {up_returned:.2f} s, first 200 after {first_answer:.2f} s; "
        f"the proxy listened {listening * 1000:.1f} ms after its container started"
    )


def published(project, figures):
    bindings = {}
    for service in containers.SERVICES:
        ports = json.loads(inspect(project.container(service), "{{json .NetworkSettings.Ports}}"))
        bindings[service] = {
            port: [f"{b['HostIp']}:{b['HostPort']}" for b in (hosts or [])]
            for port, hosts in (ports or {}).items()
        }
    proxy = bindings.pop("proxy")
    check(
        list(proxy) == ["8090/tcp"] and len(proxy["8090/tcp"]) == 1,
        f"the proxy publishes exactly 8090, once: {proxy}",
    )
    check(proxy["8090/tcp"][0].startswith("127.0.0.1:"), f"not on loopback only: {proxy}")
    for service, ports in bindings.items():
        check(not any(ports.values()), f"{service} publishes {ports}")
    return f"proxy {proxy['8090/tcp'][0]} only; admin 9090 and the upstreams unpublished"


def hello(project, figures):
    status, headers, body = get(project.port, "/")
    check(status == 200, f"GET / answered {status}")
    check(b"<html" in body.lower() and b"/script.js" in body, "not the hello page")
    check(headers.get("X-Upstream") in UPSTREAMS, f"X-Upstream: {headers.get('X-Upstream')}")
    return f"200, {len(body)} bytes, from {headers['X-Upstream']}"


def balanced(project, figures):
    seen = {}
    for _ in range(30):
        status, headers, _ = get(project.port, "/")
        check(status == 200, f"GET / answered {status}")
        upstream = headers.get("X-Upstream")
        seen[upstream] = seen.get(upstream, 0) + 1
    check(set(seen) == set(UPSTREAMS), f"answered by {seen}")
    return ", ".join(f"{name} {count}" for name, count in sorted(seen.items()))


def pid_1(project, figures):
    proxy = stats(project.port)
    check("master_pid" in proxy, f"no master_pid in /stats: {proxy}")
    check(proxy["master_pid"] == 1, f"the proxy's master is pid {proxy['master_pid']}")
    top = docker("top", project.container("proxy"), "-o", "pid,ppid,args").splitlines()[1:]
    return f"master_pid 1, worker pid {proxy['pid']}; {len(top)} processes in the container"


def reload(project, figures):
    before = stats(project.port).get("generation")
    check(before is not None, "no generation in /stats")
    with Load(project.port, clients=2) as load:
        time.sleep(0.5)
        docker("kill", "--signal", "HUP", project.container("proxy"))
        wait_until(
            lambda: when_stats(project.port, "generation", before + 1),
            15,
            f"generation {before + 1}",
        )
        time.sleep(0.5)
    records = load.between(0)
    check(failed(records) == 0, f"{failed(records)} of {len(records)} requests failed")
    return (
        f"generation {before} -> {before + 1}, {len(records)} requests, 0 failed "
        f"({load.retries} sent again on a new connection)"
    )


def children(pid):
    """The host pids of `pid`'s children (the master's workers, and what it inherited)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def worker_killed(project, figures):
    master = int(inspect(project.container("proxy"), "{{.State.Pid}}"))
    workers = children(master)
    check(len(workers) >= 1, "the master has no worker")
    victim = workers[0]

    def replaced():
        now = children(master)
        return now if len(now) == len(workers) and victim not in now else None

    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    after = wait_until(replaced, 10, "a new worker")
    elapsed = time.monotonic() - start
    check(get(project.port, "/")[0] == 200, "no answer after the replacement")
    check("was killed by SIGKILL" in project.logs("proxy"), "the master did not log the death")
    new = sorted(set(after) - set(workers))
    return f"host pid {victim} killed, {new[0]} forked {elapsed * 1000:.0f} ms later"


def orphans_reaped(project, figures, service, binary, extra):
    """Starts a second master in the container with `docker exec` (its parent: the runtime,
    outside), freezes its workers, kills it: the workers must be re-parented to the
    container's PID 1. Then they are let go (they exit when their master's lifeline closes),
    and PID 1 must reap them."""
    container = project.container(service)
    init = int(inspect(container, "{{.State.Pid}}"))
    own = set(children(init))
    docker("exec", "--detach", container, binary, "--port", "0", "--workers", "2", "--quiet", *extra)

    def second_master():
        for line in docker("top", container, "-o", "pid,ppid,args").splitlines()[1:]:
            pid, ppid, args = line.split(None, 2)
            if "--port 0" in args and int(ppid) != init and int(pid) != init:
                kids = children(int(pid))
                if len(kids) == 2:
                    return int(pid), kids
        return None

    exec_master, orphans = wait_until(second_master, 10, "the second master's two workers")
    for pid in orphans:
        os.kill(pid, signal.SIGSTOP)
    os.kill(exec_master, signal.SIGKILL)

    def parent(pid):
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("PPid:"))

    wait_until(lambda: all(parent(pid) == init for pid in orphans), 5, "re-parented to PID 1")
    for pid in orphans:
        os.kill(pid, signal.SIGCONT)

    def gone():
        # A zombie stays in /proc (state Z) until its parent reaps it.
        return not any(os.path.exists(f"/proc/{pid}") for pid in orphans)

    wait_until(gone, 10, "the orphans reaped")
    check(set(children(init)) == own, "the master's own workers changed")
    reaped = project.logs(service).count("not one of its workers")
    check(reaped >= 2, f"the master logged {reaped} orphans reaped")
    return f"2 orphans re-parented to PID 1 and reaped, its {len(own)} workers untouched"


def upstream_stopped(project, figures):
    """Chapter 07's failure demo, in containers."""
    upstream2 = project.container("upstream2")
    address = inspect(upstream2, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    with Load(project.port) as load:
        time.sleep(2.0)
        stop_at, stop_wall = time.monotonic(), time.time()
        docker("stop", upstream2, timeout=GRACE_S + 10)
        stopped_s = stopped_after(upstream2, stop_wall)
        exit_code = inspect(upstream2, "{{.State.ExitCode}}")
        down_at = wait_until(
            lambda: when_stats(project.port, "upstreams_up", 2), 20, "upstream2 marked down"
        )
        time.sleep(3.0)
        start_at = time.monotonic()
        docker("start", upstream2)
        again = inspect(upstream2, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        note = ""
        if again != address:
            # The name now points elsewhere: the proxy resolved it when it read its
            # configuration, and follows it at the next reload, as nginx does.
            note = f"; it came back at another address ({address} -> {again}): reloaded"
            docker("kill", "--signal", "HUP", project.container("proxy"))
        up_at = wait_until(
            lambda: when_stats(project.port, "upstreams_up", 3), 20, "upstream2 back up"
        )
        back_at = wait_until(
            lambda: next((r[1] for r in load.between(up_at) if r[3] == UPSTREAMS[1]), None),
            10,
            "requests reach upstream2 again",
        )
        time.sleep(1.0)
    everything = load.between(0)
    before = load.between(0, stop_at)
    outage = load.between(stop_at, down_at)
    ejected = load.between(down_at, start_at)
    slowest = max((r[1] - r[0] for r in outage), default=0.0)
    to_upstream2 = sum(1 for r in ejected if r[3] == UPSTREAMS[1])
    figures["failure_demo"] = {
        "clients": load.clients,
        "interval_ms": int(load.interval * 1000),
        "requests": len(everything),
        "failed": failed(everything),
        "sent_again": load.retries,
        "stop_s": round(stopped_s, 2),
        "exit_code": int(exit_code),
        "down_after_s": round(down_at - stop_at, 2),
        "requests_until_down": len(outage),
        "slowest_until_down_ms": round(slowest * 1000),
        "requests_while_down": len(ejected),
        "to_upstream2_while_down": to_upstream2,
        "up_after_s": round(up_at - start_at, 2),
        "served_again_after_s": round(back_at - start_at, 2),
        "same_address": again == address,
    }
    check(len(before) > 0 and failed(before) == 0, "the load failed before the stop")
    check(exit_code == "0", f"upstream2 exited with status {exit_code}")
    check(to_upstream2 == 0, f"{to_upstream2} requests reached upstream2 while it was down")
    check(
        failed(ejected) == 0,
        f"{failed(ejected)} of {len(ejected)} requests failed after the health check",
    )
    check(
        failed(everything) == 0,
        f"{failed(everything)} of {len(everything)} requests failed "
        f"({failed(outage)} before upstream2 was marked down)",
    )
    return (
        f"{len(everything)} requests, 0 failed; down after {down_at - stop_at:.1f} s "
        f"(slowest request meanwhile {slowest * 1000:.0f} ms), {len(ejected)} requests "
        f"while down, none to upstream2; up {up_at - start_at:.1f} s after docker start{note}"
    )


def stop_drains(project, figures):
    proxy = project.container("proxy")
    answer = {}

    def slow_request():
        try:
            answer["status"], _, answer["body"] = get(project.port, "/sleep?ms=3000", timeout=20)
        except (OSError, http.client.HTTPException) as error:
            answer["error"] = error

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(0.5)
    start, start_wall = time.monotonic(), time.time()
    docker("stop", proxy, timeout=GRACE_S + 10)
    returned = time.monotonic() - start
    client.join()
    exited = stopped_after(proxy, start_wall)
    exit_code = inspect(proxy, "{{.State.ExitCode}}")
    figures["stop_with_request_in_flight_s"] = round(exited, 2)
    check(answer.get("status") == 200, f"the request in flight got {answer}")
    check(exit_code == "0", f"the proxy exited with status {exit_code}")
    check(exited < GRACE_S - 1, f"the proxy exited {exited:.1f} s after docker stop")
    check("master: all workers stopped" in project.logs("proxy"), "no clean stop logged")
    return (
        f"the 3 s request answered 200; exit 0 {exited:.1f} s after docker stop, "
        f"which returned after {returned:.1f} s"
    )


def run_checks(project, figures):
    checks = [
        ("cold start", cold_start),
        ("published", published),
        ("hello", hello),
        ("balanced", balanced),
        ("pid 1", pid_1),
        ("reload", reload),
        ("worker killed", worker_killed),
        (
            "orphans reaped (step06)",
            lambda p, f: orphans_reaped(p, f, "upstream3", "/step06-master-worker", []),
        ),
        (
            "orphans reaped (step07)",
            lambda p, f: orphans_reaped(
                p, f, "proxy", "/step07-reverse-proxy", ["--config", "/etc/step07/proxy.toml"]
            ),
        ),
        ("upstream stopped", upstream_stopped),
        ("stop drains", stop_drains),
    ]
    passed = failures = 0
    for name, function in checks:
        try:
            print(f"ok      {name}: {function(project, figures)}", flush=True)
            passed += 1
        except (CheckFailed, DockerError, OSError, subprocess.TimeoutExpired, KeyError) as error:
            print(f"FAILED  {name}: {error}", flush=True)
            failures += 1
            if project.port is None:
                break  # nothing came up: the other checks cannot run
    return passed, failures


def write_docs(figures):
    with open(DATA, "w") as out:
        json.dump(figures, out, indent=2)
        out.write("\n")
    demo = figures["failure_demo"]
    sizes = ", ".join(f"`{step}` {mb:.1f} MB" for step, mb in figures["image_mb"].items())
    table = "\n".join(
        [
            f"Measured by `python3 scripts/container_tests.py --write-docs` "
            f"({figures['machine']}, Docker {figures['docker']}, {figures['compose']}, "
            f"{figures['date']}; data: [containers.json](containers.json)):",
            "",
            "| | |",
            "|---|---|",
            f"| the images (`docker image ls`) | {sizes} |",
            f"| cold start: `up -d` until the first 200 on 127.0.0.1 (images built) "
            f"| {figures['cold_start_s']:.1f} s (`up -d` returns after "
            f"{figures['compose_up_s']:.1f} s; the proxy listens "
            f"{figures['proxy_listening_ms']:.0f} ms after its container starts) |",
            f"| `docker stop upstream2` under load ({demo['clients']} clients, a request "
            f"every {demo['interval_ms']} ms each) | {demo['requests']} requests, "
            f"{demo['failed']} failed; upstream2 drained and exited {demo['exit_code']} "
            f"{demo['stop_s'] * 1000:.0f} ms after `docker stop` |",
            f"| until the health checks mark it down | {demo['down_after_s']:.1f} s; "
            f"{demo['requests_until_down']} requests meanwhile, the slowest "
            f"{demo['slowest_until_down_ms']} ms |",
            f"| while it is down | {demo['requests_while_down']} requests, "
            f"{demo['to_upstream2_while_down']} to upstream2 |",
            f"| `docker start upstream2` | up after {demo['up_after_s']:.1f} s, serving again "
            f"after {demo['served_again_after_s']:.1f} s |",
            f"| `docker stop` of the proxy, a 3 s request in flight | answered, exit 0 after "
            f"{figures['stop_with_request_in_flight_s']:.1f} s |",
        ]
    )
    write_region(CHAPTER, "containers", table)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the figures into docs/containers.json and docs/07-reverse-proxy.md",
    )
    args = parser.parse_args()
    why = containers.docker_missing()
    if why is not None:
        print(f"skipped: {why}", file=sys.stderr)
        sys.exit(1 if os.environ.get("FTP_REQUIRE_TOOLS") == "1" else 0)
    # Ctrl-C raises KeyboardInterrupt; SIGTERM (a CI timeout) must clean up the same way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    project = Project(f"ftp-test-{os.getpid()}-{int(time.time())}", publish="")
    figures = {
        "machine": machine(),
        "docker": docker("version", "--format", "{{.Server.Version}}"),
        "compose": " ".join(project.compose)
        + " "
        + subprocess.run(
            project.compose + ["version", "--short"], capture_output=True, text=True
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    started = time.monotonic()
    passed = failures = 0
    left = []
    try:
        containers.build_binaries()
        images = containers.build_images(tag=project.tag, labels=[project.label])
        figures["image_mb"] = {
            step: round(containers.image_size(name) / 1e6, 2) for step, name in images.items()
        }
        print(f"images: {figures['image_mb']} (MB); project {project.name}", flush=True)
        passed, failures = run_checks(project, figures)
    except (CheckFailed, DockerError) as error:
        print(f"FAILED  set-up: {error}", flush=True)
        failures += 1
    finally:
        if failures:
            for service in ("proxy", "upstream2"):
                try:
                    print(f"--- the last lines of {service}'s log:\n{project.logs(service)[-3000:]}")
                except DockerError:
                    pass
        left = project.remove_everything()
    if left:
        print(f"FAILED  clean-up: left behind: {', '.join(left)}")
        failures += 1
    else:
        print(f"ok      clean-up: no container, network or image of {project.name} left")
        passed += 1
    figures["seconds"] = round(time.monotonic() - started, 1)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as out:
        json.dump(figures, out, indent=2)
    if args.write_docs and not failures:
        write_docs(figures)
    print(f"the container tests took {figures['seconds']} s")
    # The closing line CI reads.
    print(f"containers: {passed} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
