#!/usr/bin/env python3
"""Watch a step's live page (/live) in headless Chromium, and report what it drew.

Opens URL/live in a headless Chromium driven over its DevTools pipe (--remote-debugging-pipe,
so no port is opened), lets it poll /stats for --seconds, and prints what the page drew: the
data-* attributes of its <body> (for step 03: workersNow, workersMax, queuePercentMax, ...),
read every half second. With --screenshot FILE it also saves a picture of the page at the end.
Meanwhile run your load against the same server (python3 scripts/accesses.py ...).

The browser runs with a throwaway profile and without its background traffic, so the only
requests it makes are to the server. Needs Chromium (Debian: apt-get install chromium).

Usage:
  python3 scripts/live.py http://127.0.0.1:8090 --seconds 20
  python3 scripts/live.py http://127.0.0.1:8090 --seconds 8 --screenshot images/live-step03.png --json

Exit status: 0 when the page drew at least one answer of /stats, 1 when it did not or the
browser failed, 2 when Chromium is missing.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot import BROWSERS, adopt_orphans, stop_browser  # noqa: E402
from servers import command_line  # noqa: E402


def find_browser():
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


class DevTools:
    """The Chrome DevTools Protocol over the pipe Chromium reads on fd 3 and writes on fd 4:
    JSON messages, each ended by a NUL byte."""

    def __init__(self, browser, profile, size):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={size}", "--remote-debugging-pipe", "about:blank",
        ]

        def plumb():
            # Chromium's fds 3 and 4, inheritable (dup2 onto another fd clears close-on-exec;
            # the fresh copies first, as a pipe end may itself be fd 3 or 4). Our other fds
            # are close-on-exec, so nothing else of ours reaches the browser.
            reads, writes = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        # close_fds=False: subprocess would close fds 3 and 4 after plumb() otherwise.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=plumb, start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.buffer = b""

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self.next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self.buffer += chunk
        raise RuntimeError(f"{method}: no answer within {timeout} s")

    def close(self):
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        stop_browser(self.process)


def watch(url, seconds, screenshot=None, size="1100,760"):
    """Opens URL/live for `seconds`; returns {"samples": [...], "last": {...}}."""
    browser = find_browser()
    if browser is None:
        return None
    adopt_orphans()
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(browser, profile, size)
        try:
            target = tools.call("Target.createTarget", {"url": url.rstrip("/") + "/live"})
            session = tools.call("Target.attachToTarget",
                                 {"targetId": target["targetId"], "flatten": True})["sessionId"]
            samples = []
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                time.sleep(0.5)
                result = tools.call("Runtime.evaluate", {
                    "expression": "JSON.stringify(Object.assign({}, document.body.dataset))",
                    "returnByValue": True,
                }, session)
                drawn = json.loads(result.get("result", {}).get("value") or "{}")
                drawn["t"] = round(time.monotonic() - start, 2)
                samples.append(drawn)
            if screenshot:
                shot = tools.call("Page.captureScreenshot", {"format": "png"}, session)
                with open(screenshot, "wb") as out:
                    out.write(base64.b64decode(shot["data"]))
        finally:
            tools.close()
    return {"url": url.rstrip("/") + "/live", "samples": samples,
            "last": samples[-1] if samples else {}}


def main(argv):
    parser = command_line(__doc__)
    parser.add_argument("url", help="the server, such as http://127.0.0.1:8090")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to watch (default 10)")
    parser.add_argument("--screenshot", metavar="FILE", help="save the page as a PNG at the end")
    parser.add_argument("--size", default="1100,760", help="window WIDTH,HEIGHT (default 1100,760)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = watch(args.url, args.seconds, args.screenshot, args.size)
    except (OSError, RuntimeError) as error:
        print(f"live.py: the browser failed: {error}", file=sys.stderr)
        return 1
    if report is None:
        print("live.py: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        for sample in report["samples"]:
            print(" ".join(f"{key}={value}" for key, value in sample.items()))
    if args.screenshot:
        print(f"wrote {args.screenshot}", file=sys.stderr)
    return 0 if int(report["last"].get("samples", 0)) > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
