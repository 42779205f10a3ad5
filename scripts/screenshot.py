#!/usr/bin/env python3
"""Take the book's screenshot of the hello page, in a real browser.

Builds a step in release mode, starts it on a free loopback port, points headless Chromium
at it and saves what the browser drew: the hello page with "script.js: ran" and the `/stats`
answer that script.js fetched, which shows that a second request on the same page worked.
Then stops the browser and the server (by pid).

Needs Chromium (Debian: apt-get install chromium). The browser runs with a throwaway profile
and without any of its background network traffic, so the only requests it makes are to the
step.

Usage:
  python3 scripts/screenshot.py                                   # step01-fork -> images/hello-page.png
  python3 scripts/screenshot.py --step step05-epoll-kqueue --out /tmp/hello.png
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import ROOT, StepServer, adopt_orphans, build_release, stop_group  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_command(browser, url, out, size, profile):
    """The command line behind the screenshot (printed, so that it can be rerun by hand)."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        # Let script.js run and its fetch of /stats finish before the picture is taken.
        "--virtual-time-budget=3000",
        f"--window-size={size}",
        f"--screenshot={out}",
        url,
    ]


def stop_browser(process):
    """Stops what is left of the browser's process group, and reaps every child we have."""
    stop_group(process, timeout=0)
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", default="step01-fork", help="the step to photograph (default: step01-fork)")
    parser.add_argument("--out", default=os.path.join(ROOT, "images", "hello-page.png"))
    parser.add_argument("--size", default="900,460", help="window WIDTH,HEIGHT (default: 900,460)")
    args = parser.parse_args(argv)

    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        print("screenshot.py: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    build_release([args.step])
    out = os.path.abspath(args.out)
    adopt_orphans()
    with StepServer(args.step) as server, tempfile.TemporaryDirectory() as profile:
        command = chromium_command(browser, server.url + "/", out, args.size, profile)
        print(" ".join(command), flush=True)
        browser_process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        try:
            _, errors = browser_process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            errors = "(no answer within 60 s)"
    # The server is stopped (by pid) at the end of the `with`; now the browser's leftovers.
    stop_browser(browser_process)
    if browser_process.returncode != 0 or not os.path.isfile(out):
        print(f"screenshot.py: the browser failed:\n{errors}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
