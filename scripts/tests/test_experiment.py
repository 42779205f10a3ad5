"""Tests for scripts/experiment.py's --wait and --hold, run against a stand-in server
(fake_step.py) in place of a step's release binary, so that nothing is built.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import contextlib
import io
import os
import re
import subprocess
import sys
import unittest
import urllib.request
from unittest import mock

TESTS = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(TESTS)
FAKE = os.path.join(TESTS, "fake_step.py")
sys.path.insert(0, SCRIPTS)

import check_book  # noqa: E402
import experiment  # noqa: E402
import servers  # noqa: E402


class WaitTest(unittest.TestCase):
    def run_experiment(self, *argv):
        """experiment.main(argv) with the stand-in server for the step (no build), recording in
        order each pause (and whether the printed live page answered during it) and the load."""
        events, printed = [], io.StringIO()
        real_sleep = experiment.time.sleep

        def pause(seconds):
            if sys._getframe(1).f_code.co_filename != experiment.__file__:
                return real_sleep(seconds)  # servers.py's own waits, while it stops the server
            urls = re.findall(r"watch it live: (\S+)", printed.getvalue())
            answered = None
            if urls:
                with urllib.request.urlopen(urls[-1], timeout=5) as answer:
                    answered = answer.status
            events.append(("pause", seconds, answered))

        real_run = subprocess.run

        def load(command, **options):
            events.append(("load", command[2]))
            return real_run(command, capture_output=True, text=True, timeout=60)

        with mock.patch.object(experiment, "build_release", lambda crates: None), \
                mock.patch.object(servers, "binary", lambda crate: FAKE), \
                mock.patch.object(experiment.time, "sleep", pause), \
                mock.patch.object(experiment.subprocess, "run", load), \
                contextlib.redirect_stdout(printed):
            status = experiment.main(list(argv))
        return status, events, printed.getvalue()

    def test_wait_prints_the_live_page_and_waits_before_the_load(self):
        status, events, printed = self.run_experiment("--wait", "7", "--hold", "3", "fake", "--", "/", "-n", "2")
        self.assertEqual(status, 0)
        url = re.search(r"watch it live: (http://127\.0\.0\.1:(\d+)/live)", printed)
        self.assertIsNotNone(url, printed)
        self.assertNotEqual(url.group(2), "8090", "a free port, not the default")
        self.assertEqual([event[0] for event in events], ["pause", "load", "pause"])
        self.assertEqual(events[0], ("pause", 7.0, 200), "the printed page answers during the wait")
        self.assertTrue(events[1][1].startswith(url.group(1).removesuffix("/live")), events[1])
        self.assertEqual(events[2][:2], ("pause", 3.0))

    def test_without_wait_the_load_starts_at_once(self):
        status, events, printed = self.run_experiment("fake", "--", "/", "-n", "2")
        self.assertEqual(status, 0)
        self.assertEqual([event[0] for event in events], ["load"])
        self.assertNotIn("watch it live", printed)

    def test_a_wait_without_seconds_is_bad_usage(self):
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            self.assertEqual(experiment.main(["--wait", "soon", "fake"]), 2)
        self.assertIn("--wait: invalid float value: 'soon'", errors.getvalue())
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(experiment.main(["--hold"]), 2)

    def test_the_chapters_commands_do_not_wait_in_quick_mode(self):
        argv = check_book.quick("python3 scripts/experiment.py --wait 10 --hold 10 step05-epoll-kqueue "
                                "-- /sleep?ms=1000 -n 1000 -c 1000")
        self.assertEqual(argv[2:], ["--wait", "0", "--hold", "0", "step05-epoll-kqueue", "--",
                                    "/sleep?ms=50", "-n", "20", "-c", "20"])


if __name__ == "__main__":
    unittest.main()
