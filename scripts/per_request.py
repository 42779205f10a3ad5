#!/usr/bin/env python3
"""What one request costs a server: system calls, instructions or CPU time, per request.

Three ways to look, one per mode:

  syscalls      the step's release build under `strace -f -c` (every thread and child
                counted), sent --requests requests for the hello page on one kept-alive
                connection, then as many again each on its own connection (`Connection:
                close`), each phase under its own strace run: the calls per request, by name.
                With --trace, the calls one close connection makes, in order (`strace -f`).
  instructions  the step under `valgrind --tool=callgrind`, --requests keep-alive requests:
                the user-space instructions per request (our code and the C library, not the
                kernel). --top N also lists the N costliest functions.
  cpu           wrk against a running server (2 threads, 100 clients, --duration s), and the
                CPU time its processes spent, from /proc, split into user space and kernel,
                per request. By default step07 (its own client, then `--upstream-client
                reqwest`) and nginx `proxy_pass` in front of the same step06, the same
                keep-alive pool each, then that step06 alone, --runs times interleaved, each
                figure the median (--perf also profiles step07's worker with `perf record`,
                first run; --new-connections gives the proxies a new client connection per
                request, their upstream connections still pooled; --syscalls also counts
                each proxy's system calls per request, by name; --before PATH measures an
                older build of step07 in the same runs; --write-docs puts the
                table into docs/performance.md and chapter 07, its figures into
                docs/performance.json). With --close, step05 and step06 against nginx (1 worker, auto)
                serving the hello page themselves, a new connection per request, and the
                system calls each makes per request under that load (perf's tracepoints):
                where a short connection's time goes. --write-docs puts that table into
                docs/05-event-loop.md and its figures into docs/05-event-loop.json.

Call and instruction counts do not depend on what else the machine is doing, so two versions of
a step (--binary: an older build) compare fairly even on a busy machine; CPU times do, so the
cpu mode measures both sides in one run.

Examples:
  python3 scripts/per_request.py syscalls step05-epoll-kqueue
  python3 scripts/per_request.py syscalls step05-epoll-kqueue --trace
  python3 scripts/per_request.py instructions step05-epoll-kqueue --top 12
  python3 scripts/per_request.py cpu --perf --runs 1
  python3 scripts/per_request.py cpu --new-connections
  python3 scripts/per_request.py cpu --close
"""

import datetime
import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import run_wrk  # noqa: E402
from servers import (  # noqa: E402
    ROOT, PeerServer, StepServer, binary, build_release, command_line, machine, nginx_peer,
    nginx_proxy_peer, process_tree, raise_fd_limit, read_response, tree_cpu_seconds,
    write_data, write_proxy_config, write_region,
)

CHAPTER = os.path.join(ROOT, "docs", "05-event-loop.md")
# The proxies' table, in two pages, and its figures.
PROXY_DOCS = [os.path.join(ROOT, "docs", "performance.md"), os.path.join(ROOT, "docs", "07-reverse-proxy.md")]
PROXY_DATA = os.path.join(ROOT, "docs", "performance.json")
# One proxy worker serves all 100 clients by default: room in the pool for each client's upstream
# connection, on both sides (nginx's `keepalive` is per worker too).
PROXY_KEEPALIVE = 128
# The figures the chapter's table shows, beside it (scripts/check_book.py checks them).
CHAPTER_DATA = os.path.join(ROOT, "docs", "05-event-loop.json")
KEEP_ALIVE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# --- a server under a tool (strace, valgrind), driven request by request ------------------------

def under_tool(tool, path, requests, keep_alive, stop_children=False):
    """Starts `path` under `tool` (a command list), sends `requests` hello-page requests, on one
    kept-alive connection or each on its own, and stops the server."""
    server = subprocess.Popen([*tool, path, "--port", "0", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("listening on http://"):
            sys.exit(f"per_request: {path} did not start under {tool[0]}")
        port = int(line.rsplit(":", 1)[1])
        if keep_alive:
            with socket.create_connection(("127.0.0.1", port)) as client:
                for _ in range(requests):
                    client.sendall(KEEP_ALIVE)
                    read_response(client)
        else:
            for _ in range(requests):
                with socket.create_connection(("127.0.0.1", port)) as client:
                    client.sendall(CLOSE)
                    read_response(client)
        time.sleep(0.2)
    finally:
        if stop_children:
            # The server itself gets the SIGTERM (strace would not pass its own on); strace
            # writes its summary when the server has exited.
            with open(f"/proc/{server.pid}/task/{server.pid}/children") as children:
                for pid in children.read().split():
                    os.kill(int(pid), signal.SIGTERM)
        else:
            server.send_signal(signal.SIGTERM)
        server.wait()


def syscall_counts(path, requests, keep_alive):
    """{call: count per request} for one phase, under a fresh `strace -c`."""
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
    under_tool(["strace", "-f", "-c", "-o", out], path, requests, keep_alive, stop_children=True)
    with open(out) as report:
        text = report.read()
    os.unlink(out)
    counts = {}
    for line in text.splitlines():
        # % time  seconds  usecs/call  calls  [errors]  syscall
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1)) / requests
    return counts


def close_connection_trace(path):
    """The system calls of one `Connection: close` request, in order, from `accept` on: the
    third of three requests, so that start-up is over."""
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
    under_tool(["strace", "-f", "-o", out], path, 3, keep_alive=False, stop_children=True)
    with open(out) as report:
        calls = [re.sub(r"^\d+\s+", "", line.rstrip()) for line in report]
    os.unlink(out)
    accepts = [i for i, call in enumerate(calls) if call.startswith("accept")]
    if len(accepts) < 3:
        return calls
    # From the third accept to the wait after its close.
    third = calls[accepts[2]:]
    closed = next((i for i, call in enumerate(third) if call.startswith("close(")), len(third))
    return third[:closed + 2]


def syscalls(args):
    if not shutil.which("strace"):
        sys.exit("per_request: the syscalls mode needs strace (apt-get install strace)")
    path = args.binary or binary(args.step)
    if args.trace:
        for call in close_connection_trace(path):
            print(call[:160])
        return 0
    report = {"step": args.step, "requests": args.requests}
    for key, label, keep_alive in (("keep_alive", "kept-alive connection", True),
                                   ("close", "a connection each", False)):
        counts = syscall_counts(path, args.requests, keep_alive)
        # Start-up and shutdown calls divide to almost nothing over thousands of requests.
        shown = {name: round(per, 2) for name, per in counts.items() if per >= 0.05}
        report[key] = {"total": round(sum(shown.values()), 2), "calls": shown}
        if not args.json:
            calls = ", ".join(f"{name} {per:.2f}" for name, per in sorted(shown.items(), key=lambda i: -i[1]))
            print(f"{args.step}, {label}: {sum(shown.values()):.1f} system calls per request ({calls})")
    if args.json:
        print(json.dumps(report))
    return 0


def instructions(args):
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"per_request: the instructions mode needs {tool} (apt-get install valgrind)")
    out = tempfile.NamedTemporaryFile(suffix=".callgrind", delete=False).name
    under_tool(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"],
               args.binary or binary(args.step), args.requests, keep_alive=True)
    report = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    os.unlink(out)
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", report).group(1).replace(",", ""))
    if args.json:
        print(json.dumps({"step": args.step, "requests": args.requests,
                          "instructions_per_request": round(total / args.requests)}))
        return 0
    print(f"{args.step}: {total / args.requests:,.0f} instructions per keep-alive request "
          f"in user space ({total:,} for {args.requests:,}, start-up included)")
    if args.top:
        rows = [line for line in report.splitlines() if re.match(r"\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", line)]
        print("\n".join(rows[1:args.top + 1]))
    return 0


# --- a running server under wrk, its CPU time from /proc -------------------------------------

# The system calls a server makes for a request, counted under load by the kernel's tracepoints
# (`perf stat`), which, unlike strace, hardly slow the server down.
SERVER_CALLS = ("accept", "accept4", "read", "recvfrom", "write", "writev", "sendto", "sendfile64",
                "epoll_wait", "epoll_ctl", "close", "shutdown", "setsockopt", "ioctl", "fcntl",
                "futex")


def perf_counts_syscalls():
    """Whether `perf stat` can count system calls here (it needs the kernel's tracepoints)."""
    if not shutil.which("perf"):
        return False
    probe = subprocess.run(["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_close", "true"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and "not supported" not in probe.stderr


def count_syscalls(pids, seconds):
    """Starts counting the system calls of `pids` for `seconds`; `.read()` on the result, once
    it is done, gives {call: count}."""
    out = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
    events = ",".join(f"syscalls:sys_enter_{call}" for call in SERVER_CALLS)
    counter = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-o", out,
                                "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def read():
        counter.wait()
        counts = {}
        with open(out) as report:
            for line in report:
                fields = line.split(",")
                if len(fields) > 2 and fields[0].isdigit() and "sys_enter_" in fields[2]:
                    counts[fields[2].split("sys_enter_", 1)[1]] = int(fields[0])
        os.unlink(out)
        return counts

    counter.read = read
    return counter


def cpu_of(label, server, duration, exclude=(), perf=False, keep_alive=True, syscalls=False):
    """Loads `server` with wrk and prints (and returns) its CPU time per request, user and
    kernel, and with `syscalls` its system calls per request."""
    run_wrk(server.url + "/", 100, 1, keep_alive)  # warm-up: pools filled, pages faulted in
    pids = [pid for pid in process_tree(server.pid) if pid not in exclude]
    before = tree_cpu_seconds(server.pid, exclude)
    recorder = counter = None
    if perf:
        workers = [pid for pid in pids if pid != server.pid]
        data = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
        recorder = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", data,
                                     "-p", ",".join(map(str, workers)), "--", "sleep", str(duration)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if syscalls:
        counter = count_syscalls(pids, duration + 1)
        time.sleep(0.2)  # for perf to attach before the load starts
    result = run_wrk(server.url + "/", 100, duration, keep_alive)
    after = tree_cpu_seconds(server.pid, exclude)
    if result is None or not result["requests"]:
        sys.exit(f"per_request: wrk gave no result against {label}")
    user = (after[0] - before[0]) / result["requests"] * 1e6
    kernel = (after[1] - before[1]) / result["requests"] * 1e6
    row = {"server": label, "requests_per_s": round(result["requests_per_s"]),
           "user_us": round(user, 1), "kernel_us": round(kernel, 1)}
    line = (f"{label:<30} {result['requests_per_s']:>9,.0f} req/s   CPU per request: "
            f"{user:5.1f} µs user + {kernel:5.1f} µs kernel = {user + kernel:5.1f} µs")
    if counter:
        # The counter outlasts wrk by a second of idle server: nothing to count then.
        per = {call: count / result["requests"] for call, count in counter.read().items()}
        row["syscalls"] = {call: round(n, 2) for call, n in per.items() if n >= 0.01}
        row["syscalls_total"] = round(sum(row["syscalls"].values()), 1)
        line += f"   {row['syscalls_total']:.1f} system calls"
    print(line)
    if counter:
        print("    " + ", ".join(f"{call} {n:.2f}" for call, n in
                               sorted(row["syscalls"].items(), key=lambda item: -item[1])))
    if recorder:
        recorder.wait()
        for sort, lines in (("dso", 12), ("sym", 25)):
            report = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none", "--sort", sort,
                                     "--stdio", "--percent-limit", "1"],
                                    capture_output=True, text=True).stdout
            rows = [line for line in report.splitlines() if line.strip() and not line.startswith("#")
                    and "%" in line.split()[0]]
            print(f"  {label}, by {sort}:")
            for text in rows[:lines]:
                print("   ", text.strip()[:150])
        os.unlink(data)
    return row


def close_table(report):
    """The chapter's table: where a `Connection: close` request's time goes, server by server."""
    calls = [call for call in SERVER_CALLS if any(call in row.get("syscalls", {}) for row in report["rows"])]
    lines = [f"Measured {report['date']} on {report['machine']} with `{report['command']}`: "
             f"wrk `-t2 -c100 -H \"Connection: close\"`, {report['duration_s']} s per server, one "
             "after the other; CPU time from /proc, system calls counted by the kernel's tracepoints "
             "(`perf stat`). The servers and wrk share the machine's cores, so requests per second "
             "drift with whatever else runs (bench_vs_nginx.py compares them in interleaved runs); "
             "the CPU time a request costs and its calls hardly do.",
             "",
             "| server | CPU µs per request: user | kernel | system calls per request | "
             + " | ".join(f"`{call}`" for call in calls) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(calls)]
    for row in report["rows"]:
        counts = row.get("syscalls", {})
        lines.append(f"| {row['server']} | {row['user_us']:.1f} | {row['kernel_us']:.1f} | "
                     f"{row.get('syscalls_total', 0):.1f} | "
                     + " | ".join(f"{counts.get(call, 0):.2f}" for call in calls) + " |")
    return "\n".join(lines)


def proxy_table(meta, rows):
    """The proxies' table: CPU per request of step07 (both clients) and nginx, and the upstream."""
    lines = [
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}`: wrk `-t2 -c100`, "
        f"{meta['load']} between the clients and the proxy, {meta['duration_s']} s per run, {meta['workers']} proxy worker(s), each figure "
        f"the median of {meta['runs']} interleaved runs. The proxies, the upstream and wrk share the cores.",
        "",
        "| | req/s | user µs per request | kernel µs per request | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        total = row["user_us"] + row["kernel_us"]
        lines.append(f"| {row['label']} | {row['requests_per_s']:,.0f} | {row['user_us']:.1f} | "
                     f"{row['kernel_us']:.1f} | {total:.1f} |")
    return "\n".join(lines)


def proxy_cpu(args):
    """step07 with each client and nginx proxy_pass in front of one step06, then step06 alone."""
    build_release(["step06-master-worker", "step07-reverse-proxy"])
    load = "Connection: close" if args.new_connections else "keep-alive"
    keep_alive = not args.new_connections
    syscalls = args.syscalls and perf_counts_syscalls()
    if args.syscalls and not syscalls:
        print("per_request: no system call counts: perf cannot count them here (apt-get install linux-perf)")
    print(f"wrk -t2 -c100 {load}, {args.duration} s each, {args.runs} runs; {machine()}")
    results = {}
    with StepServer("step06-master-worker") as upstream:
        address = f"{upstream.host}:{upstream.port}"
        upstream_pids = set(process_tree(upstream.pid))
        config = write_proxy_config(os.path.join(ROOT, "target", "cpu-per-request.toml"), [address],
                                    keepalive=PROXY_KEEPALIVE)
        options = ["--config", config, "--workers", args.workers]
        proxies = [
            ("step07 → step06 (own client)", lambda: StepServer("step07-reverse-proxy", options)),
            ("step07 → step06 (reqwest)", lambda: StepServer(
                "step07-reverse-proxy", options + ["--upstream-client", "reqwest"])),
            ("nginx `proxy_pass` → step06", lambda: PeerServer(
                "nginx proxy_pass", nginx_proxy_peer(address, args.workers, PROXY_KEEPALIVE))),
        ]
        if args.before:
            proxies.insert(0, ("step07 → step06 (own client, before)", lambda: StepServer(
                "step07-reverse-proxy", options, path=args.before)))
        for run in range(args.runs):
            for i, (label, start) in enumerate(proxies):
                with start() as server:
                    perf = args.perf and run == 0 and label == "step07 → step06 (own client)"
                    results.setdefault(label, []).append(
                        cpu_of(label, server, args.duration, upstream_pids, perf, keep_alive, syscalls))
            results.setdefault("step06 alone", []).append(cpu_of("step06 alone", upstream, args.duration))
    keys = ("requests_per_s", "user_us", "kernel_us") + (("syscalls_total",) if syscalls else ())
    rows = [{"label": label, **{key: statistics.median(r.get(key, 0) for r in runs) for key in keys}}
            for label, runs in results.items()]
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "command": "python3 scripts/per_request.py " + " ".join(sys.argv[1:]),
            "runs": args.runs, "duration_s": args.duration, "workers": args.workers, "load": load}
    table = proxy_table(meta, rows)
    print("\n" + table)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
    if args.write_docs:
        region = "cpu_per_request_close" if args.new_connections else "cpu_per_request"
        write_region(PROXY_DOCS[0], region, table)
        if not args.new_connections:
            write_region(PROXY_DOCS[1], region, table)
        write_data(PROXY_DATA, region, {"meta": meta, "rows": rows})
    return 0


def cpu(args):
    if not nginx_peer(1):
        sys.exit("per_request: the cpu mode needs nginx (apt-get install nginx-light)")
    raise_fd_limit()
    syscalls = args.close and perf_counts_syscalls()
    if args.close and not syscalls:
        print("per_request: no system call counts: perf cannot count them here (apt-get install linux-perf)")
    rows = []
    if args.close:
        build_release(["step05-epoll-kqueue", "step06-master-worker"])
        print(f"wrk -t2 -c100, Connection: close, {args.duration} s each; {machine()}")
        contenders = [("step05", StepServer, "step05-epoll-kqueue", None),
                      ("nginx, worker_processes 1", PeerServer, "nginx", nginx_peer(1)),
                      ("step06, workers auto", StepServer, "step06-master-worker", None),
                      ("nginx, worker_processes auto", PeerServer, "nginx", nginx_peer("auto"))]
        if args.before:
            contenders.insert(0, ("step05, before", StepServer, "step05-epoll-kqueue", args.before))
        for label, kind, name, extra in contenders:
            server = kind(name, path=extra) if kind is StepServer else kind(name, extra)
            with server:
                rows.append(cpu_of(label, server, args.duration, keep_alive=False, syscalls=syscalls))
    else:
        return proxy_cpu(args)
    report = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "command": "python3 scripts/per_request.py " + " ".join(sys.argv[1:]),
              "duration_s": args.duration, "rows": rows}
    if args.json:
        print(json.dumps(report))
    if args.close:
        table = close_table(report)
        print("\n" + table)
        if args.write_docs:
            write_region(CHAPTER, "close_connection", table)
            write_data(CHAPTER_DATA, "close_connection", report)
    return 0


def main(argv=None):
    parser = command_line(__doc__)
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name, what in (("syscalls", "system calls per request, by name (strace)"),
                       ("instructions", "user-space instructions per keep-alive request (callgrind)")):
        mode = modes.add_parser(name, help=what, description=what)
        mode.add_argument("step", help="crate, e.g. step05-epoll-kqueue")
        mode.add_argument("-n", "--requests", type=int, default=5000 if name == "syscalls" else 20000,
                          help="requests (per phase)")
        mode.add_argument("--binary", help="run this executable instead of the step's release build "
                          "(an older build, to compare)")
        mode.add_argument("--json", action="store_true", help="print the result as one JSON object")
    modes.choices["syscalls"].add_argument(
        "--trace", action="store_true", help="list the calls of one Connection: close request, in order")
    modes.choices["instructions"].add_argument(
        "--top", type=int, default=0, help="also list the N costliest functions")
    mode = modes.add_parser("cpu", help="CPU time per request, user and kernel, against nginx (wrk)",
                            description="CPU time per request, user and kernel, ours against nginx")
    mode.add_argument("--duration", type=int, default=5, help="seconds of load (default 5)")
    mode.add_argument("--runs", type=int, default=3, help="proxies: interleaved runs, medians kept (default 3)")
    mode.add_argument("--workers", default="1", help="proxy workers, every proxy (default 1)")
    mode.add_argument("--perf", action="store_true", help="also profile step07's worker with perf")
    mode.add_argument("--new-connections", action="store_true",
                      help="the proxies with a new client connection per request")
    mode.add_argument("--close", action="store_true",
                      help="step05 and step06 against nginx, serving themselves, a connection per request")
    mode.add_argument("--before", metavar="PATH",
                      help="an older build measured first: of step05 with --close (`step05, before`), "
                      "else of step07 (`own client, before`)")
    mode.add_argument("--syscalls", action="store_true",
                      help="the proxies: also count each one's system calls per request (perf's tracepoints)")
    mode.add_argument("--write-docs", action="store_true",
                      help=f"put the table into {os.path.relpath(CHAPTER, ROOT)} (with --close) "
                      "or docs/performance.md and chapter 07 (the proxies)")
    mode.add_argument("--json", action="store_true", help="also print the rows as one JSON object")
    args = parser.parse_args(argv)
    if args.mode != "cpu" and not args.binary:
        build_release([args.step])
    return {"syscalls": syscalls, "instructions": instructions, "cpu": cpu}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
