"""Tests for proxy_experiments.py's pure parts: the example configuration moved to other ports,
and the lines its results are printed in. (The experiments themselves need the release
binaries and take seconds each: chapter 07 records their runs.)

Run: python3 -m unittest discover -s scripts/tests -v
"""

import os
import socket
import sys
import unittest

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)

import accesses  # noqa: E402
import proxy_experiments  # noqa: E402


class ExampleConfigTest(unittest.TestCase):
    def test_the_example_moves_to_the_given_ports_in_both_groups(self):
        with open(proxy_experiments.EXAMPLE, encoding="utf-8") as source:
            text = source.read()
        moved = proxy_experiments.example_config(text, ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"])
        self.assertNotIn('"127.0.0.1:9001"', moved)
        # both groups, web and slow, list the three
        self.assertEqual(moved.count('"127.0.0.1:4003"'), text.count('"127.0.0.1:9003"'))
        self.assertGreaterEqual(moved.count('"127.0.0.1:4003"'), 2)
        # nothing else changed: the same settings, the same length give or take the digits
        self.assertIn("read_timeout_ms = 10000", moved)
        self.assertEqual(len(moved), len(text))

    def test_an_example_without_its_upstreams_is_refused(self):
        with self.assertRaises(ValueError):
            proxy_experiments.example_config('upstreams = ["127.0.0.1:9001"]', ["a:1", "b:2", "c:3"])
        with self.assertRaises(ValueError):
            proxy_experiments.example_config("", ["a:1"])


class ResultsTest(unittest.TestCase):
    def test_spread_keeps_the_order_and_names_the_missing_and_the_unexpected(self):
        line = proxy_experiments.spread({"b:2": 7, "c:3": 1, "z:9": 2}, ["a:1", "b:2", "c:3"], {"c:3": "slow"})
        self.assertEqual(line, "a:1 0, b:2 7, c:3 (slow) 1, z:9 2")

    def test_outcomes_split_the_answered_from_each_kind_of_failure(self):
        results = [accesses.Result(True, "HTTP 200", 0.001), accesses.Result(False, "HTTP 504", 10.0),
                   accesses.Result(True, "HTTP 200", 0.002), accesses.Result(False, "HTTP 504", 10.1)]
        answered, failed = proxy_experiments.outcomes(results)
        self.assertEqual(answered, [0.001, 0.002])
        self.assertEqual(failed, {"HTTP 504": [10.0, 10.1]})

    def test_log_counts_know_step07s_lines(self):
        lines = [
            "[28197] upstream 127.0.0.1:43475: cannot connect: Connection refused (os error 111); trying 127.0.0.1:39747",
            "worker 1: upstream 127.0.0.1:43475 ejected for 10000 ms after 5 failures in a row",
            "health: upstream 127.0.0.1:43475 (group demo) is down after 3 failed checks (cannot connect)",
            "health: upstream 127.0.0.1:43475 (group demo) is up again after 2 good checks",
        ]
        self.assertEqual(set(proxy_experiments.log_counts(lines).values()), {1})

    def test_upstream_port_finds_a_listening_socket(self):
        if not os.path.exists("/proc/net/tcp"):
            self.skipTest("needs Linux's /proc/net/tcp")
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            self.assertEqual(proxy_experiments.upstream_port(os.getpid()), listener.getsockname()[1])


if __name__ == "__main__":
    unittest.main()
