"""Tests for the scripts' shared modules (servers.py, load.py) and the measuring tools built on
them (memory.py, per_request.py, before_after.py), run against a stand-in server
(fake_step.py) so that no step has to be built.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

TESTS = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(TESTS)
FAKE = os.path.join(TESTS, "fake_step.py")
sys.path.insert(0, SCRIPTS)

import load  # noqa: E402
import servers  # noqa: E402


def needs(tool):
    """Skips the test without `tool`, or fails it where FTP_REQUIRE_TOOLS says tools must be
    there (.ci/run installs them)."""
    if shutil.which(tool):
        return
    if os.environ.get("FTP_REQUIRE_TOOLS"):
        raise AssertionError(f"{tool} is not installed (FTP_REQUIRE_TOOLS is set)")
    raise unittest.SkipTest(f"{tool} not found")


def run(script, *args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, script), *args],
                          capture_output=True, text=True, timeout=timeout)


class HelpersTest(unittest.TestCase):
    def test_the_server_options_come_after_two_dashes(self):
        self.assertEqual(servers.split_server_options(["a", "--", "--x", "1"]), (["a"], ["--x", "1"]))
        self.assertEqual(servers.split_server_options(["a", "-n", "3"]), (["a", "-n", "3"], []))

    def test_percentile_is_the_nearest_rank(self):
        self.assertEqual(servers.percentile([5, 1, 4, 2, 3], 0.5), 3)
        self.assertEqual(servers.percentile([5, 1, 4, 2, 3], 0.99), 5)
        self.assertEqual(servers.percentile([7], 0.01), 7)
        self.assertEqual(servers.percentile([], 0.5), 0.0)

    def test_the_machine_line_names_the_cores(self):
        self.assertIn(f"{os.cpu_count()} cores", servers.machine())

    def test_same_run_interleaves_and_alternates(self):
        order = []
        results = load.same_run(["a", "b"], 3, lambda entry: order.append(entry) or entry, alternate=True)
        self.assertEqual(order, ["a", "b", "b", "a", "a", "b"])
        self.assertEqual(results, [["a", "a", "a"], ["b", "b", "b"]])
        self.assertEqual(load.same_run(["a"], 2, lambda entry: None), [[None, None]])

    def test_a_ratio_pairs_the_runs_of_one_round(self):
        # Round 2 was slow for both: their own medians would give 20 / 30, the rounds say 2.
        ours = [{"r": 40}, {"r": 10}, {"r": 20}, None]
        theirs = [{"r": 20}, {"r": 5}, {"r": 30}, {"r": 30}]
        self.assertEqual(load.paired_ratio(ours, theirs, "r"), 2)
        self.assertIsNone(load.paired_ratio([None], [{"r": 1}], "r"))

    def test_medians_sum_the_failures(self):
        runs = [{"requests_per_s": 10, "failed": 1}, {"requests_per_s": 30, "failed": 2},
                {"requests_per_s": 20, "failed": 0}]
        self.assertEqual(load.medians(runs), {"requests_per_s": 20, "failed": 3})
        self.assertEqual(load.medians(runs, summed=())["failed"], 1)
        self.assertIsNone(load.medians([]))
        self.assertEqual(load.medians([None, {"failed": 1}]), {"failed": 1})


class StepServerTest(unittest.TestCase):
    def test_a_server_that_cannot_start_says_why(self):
        with self.assertRaises(RuntimeError) as failed:
            servers.StepServer("fake", ["--fail"], path=FAKE)
        self.assertIn("error: cannot listen on 127.0.0.1:0: Address already in use", str(failed.exception))

    def test_a_server_starts_on_a_free_port_and_stops(self):
        with servers.StepServer("fake", path=FAKE) as server:
            self.assertTrue(server.url.startswith("http://127.0.0.1:"))
            self.assertIsNone(server.process.poll())
        self.assertIsNotNone(server.process.poll())


@unittest.skipUnless(os.path.isdir("/proc"), "needs Linux's /proc")
class MemoryTest(unittest.TestCase):
    def test_idle_reports_bytes_per_connection(self):
        done = run("memory.py", "idle", "fake", "--binary", FAKE, "-n", "20", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual((report["connections"], report["processes"]), (20, 1))
        self.assertIn("bytes_per_connection", report)

    def test_inflight_sees_the_requests_threads(self):
        done = run("memory.py", "inflight", "fake", "--binary", FAKE, "-n", "5", "--hold-ms", "1500",
                   "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        # The stand-in gives each connection a thread, as step 02 does.
        self.assertGreaterEqual(report["in_flight"]["threads"], report["idle"]["threads"] + 5)

    def test_a_mode_is_required(self):
        done = run("memory.py", "fake")
        self.assertEqual(done.returncode, 2)


class PerRequestTest(unittest.TestCase):
    def test_syscalls_are_counted_per_request(self):
        needs("strace")
        done = run("per_request.py", "syscalls", "fake", "--binary", FAKE, "-n", "20", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        for phase in ("keep_alive", "close"):
            self.assertGreater(report[phase]["total"], 1, report)
        # A connection per request: each is accepted.
        self.assertGreaterEqual(report["close"]["calls"].get("accept4", 0) + report["close"]["calls"].get("accept", 0), 1)

    def test_every_mode_explains_itself(self):
        for mode in ("syscalls", "instructions", "cpu"):
            done = run("per_request.py", mode, "--help")
            self.assertEqual(done.returncode, 0, mode)
        self.assertEqual(run("per_request.py", "bogus").returncode, 2)


class BeforeAfterTest(unittest.TestCase):
    def test_two_builds_in_one_interleaved_run(self):
        needs("wrk")
        done = run("before_after.py", FAKE, FAKE, "--runs", "1", "--duration", "1", "--clients", "4",
                   "--modes", "close", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        self.assertGreater(report["close"]["before"]["requests_per_s"], 0)
        self.assertGreater(report["close"]["after"]["requests_per_s"], 0)
        self.assertIn("ratio", report["close"])


if __name__ == "__main__":
    unittest.main()
