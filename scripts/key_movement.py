#!/usr/bin/env python3
"""How many keys move when a consistent-hash group changes, measured through step 07 itself.

Starts --upstreams + 1 upstreams (step 05, on free ports) and step 07 with one
consistent_hash group of the first --upstreams, hashing the X-User header. It asks for / once
per key (user-0, user-1, ...) and notes which upstream answered (X-Upstream). Then:

  1. adds the last upstream to the group in the configuration file and sends SIGHUP to the
     master; once the new generation answers, asks again: how many keys moved, and where to;
  2. stops one of the original upstreams (SIGTERM) and asks again: where its keys went, and
     whether any other key moved.

For comparison it prints what `hash % n` would move for the same keys (crc32 of the key).

Examples:
  python3 scripts/key_movement.py
  python3 scripts/key_movement.py --keys 10000 --upstreams 4
"""

import http.client
import json
import os
import sys
import tempfile
import time
import zlib
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import StepServer, build_release, command_line  # noqa: E402


def config_text(upstreams):
    listed = ", ".join(f'"{address}"' for address in upstreams)
    return (
        "[proxy]\nupstream_header = true\n\n"
        '[[route]]\nprefix = "/"\ngroup = "sessions"\n\n'
        '[group.sessions]\nstrategy = "consistent_hash"\nhash_key = "header:X-User"\n'
        f"upstreams = [{listed}]\n"
    )


def homes(proxy, keys):
    """key -> the upstream that answered it (one keep-alive connection, opened now)."""
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=10)
    found = {}
    for key in keys:
        connection.request("GET", "/", headers={"X-User": key})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"key_movement: {key}: HTTP {response.status}")
        found[key] = response.getheader("X-Upstream")
    connection.close()
    return found


def generation(proxy):
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    connection.request("GET", "/stats")
    stats = json.loads(connection.getresponse().read())
    connection.close()
    return stats.get("generation")


def wait_for_generation(proxy, wanted, timeout=10.0):
    """Until several fresh connections in a row are served by generation `wanted`."""
    deadline, in_a_row = time.monotonic() + timeout, 0
    while in_a_row < 5:
        if time.monotonic() > deadline:
            sys.exit(f"key_movement: generation {wanted} did not take over within {timeout} s")
        in_a_row = in_a_row + 1 if generation(proxy) == wanted else 0
        time.sleep(0.05)


def moved(before, after):
    return {key: (before[key], after[key]) for key in before if before[key] != after[key]}


def main():
    parser = command_line(__doc__)
    parser.add_argument("--keys", type=int, default=1000, help="user keys (default 1000)")
    parser.add_argument("--upstreams", type=int, default=3, help="before the one added (default 3)")
    args = parser.parse_args()
    if args.upstreams < 2 or args.keys < 1:
        parser.error("--upstreams needs at least 2, --keys at least 1")
    build_release(["step05-epoll-kqueue", "step07-reverse-proxy"])
    keys = [f"user-{i}" for i in range(args.keys)]
    n = args.upstreams

    upstreams = [StepServer("step05-epoll-kqueue") for _ in range(n + 1)]
    addresses = [f"{u.host}:{u.port}" for u in upstreams]
    workdir = tempfile.mkdtemp(prefix="key-movement-")
    config = os.path.join(workdir, "proxy.toml")
    try:
        with open(config, "w") as out:
            out.write(config_text(addresses[:n]))
        with StepServer("step07-reverse-proxy", ["--config", config, "--workers", "2"]) as proxy:
            first = homes(proxy, keys)
            print(f"{n} upstreams, {len(keys)} keys: {dict(sorted(Counter(first.values()).items()))}")

            with open(config, "w") as out:
                out.write(config_text(addresses))
            os.kill(proxy.pid, 1)  # SIGHUP to the master
            wait_for_generation(proxy, 2)
            second = homes(proxy, keys)
            changes = moved(first, second)
            to_new = sum(1 for _, new in changes.values() if new == addresses[n])
            print(f"added {addresses[n]}: {len(changes)} of {len(keys)} keys moved "
                  f"({100 * len(changes) / len(keys):.1f} %; 1/{n + 1} would be "
                  f"{100 / (n + 1):.1f} %), {to_new} of them to the new upstream")
            modulo = sum(1 for key in keys
                         if zlib.crc32(key.encode()) % n != zlib.crc32(key.encode()) % (n + 1))
            print(f"  hash % n instead: {modulo} of {len(keys)} would move "
                  f"({100 * modulo / len(keys):.1f} %)")

            gone = addresses[0]
            upstreams[0].stop()
            third = homes(proxy, keys)
            changes = moved(second, third)
            from_gone = Counter(new for old, new in changes.values() if old == gone)
            others = sum(1 for old, _ in changes.values() if old != gone)
            print(f"stopped {gone}: its {sum(from_gone.values())} keys went to "
                  f"{dict(sorted(from_gone.items()))}; other keys moved: {others}")
    finally:
        for upstream in upstreams:
            upstream.stop()
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
