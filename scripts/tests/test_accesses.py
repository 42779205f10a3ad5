"""Tests for accesses.py, against a small server written with the standard library.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "accesses.py")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that --keep-alive can be observed

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests += 1
            server.client_ports.add(self.client_address[1])
            count = server.requests
        if self.path.startswith("/slow"):
            time.sleep(0.2)
        if self.path.startswith("/proxied"):
            self.answer(200, b"hello\n", "text/plain", upstream=f"10.0.0.{count % 3}:80")
        elif self.path.startswith("/fail"):
            self.answer(503, b"no\n", "text/plain")
        elif self.path.startswith("/stats"):
            body = json.dumps({"step": "fake", "pid": 100 + count % 3}).encode()
            self.answer(200, body, "application/json")
        else:
            self.answer(200, b"hello\n", "text/plain", worker=str(count % 2))

    def answer(self, status, body, content_type, worker=None, upstream=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if worker is not None:
            self.send_header("X-Worker", worker)
        if upstream is not None:
            self.send_header("X-Upstream", upstream)
        self.end_headers()
        self.wfile.write(body)

    def version_string(self):
        return "fake-step"

    def log_message(self, *args):
        pass


class AccessesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.server.daemon_threads = True
        cls.server.lock = threading.Lock()
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def setUp(self):
        with self.server.lock:
            self.server.requests = 0
            self.server.client_ports = set()

    def run_script(self, *args, timeout=60):
        return subprocess.run(
            [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout
        )

    def run_json(self, *args):
        done = self.run_script(*args, "--json")
        return done.returncode, json.loads(done.stdout)

    def test_counts_every_request_and_exits_0(self):
        code, summary = self.run_json(f"{self.base}/", "-n", "7", "-c", "3")
        self.assertEqual(code, 0)
        self.assertEqual((summary["requests"], summary["ok"], summary["failed"]), (7, 7, 0))
        self.assertEqual(self.server.requests, 7)
        self.assertEqual(summary["server"], "fake-step")
        latency = summary["latency_ms"]
        self.assertTrue(0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"])

    def test_failures_are_counted_by_status_and_exit_1(self):
        code, summary = self.run_json(f"{self.base}/fail", "-n", "4", "-c", "2")
        self.assertEqual(code, 1)
        self.assertEqual(summary["failures"], {"HTTP 503": 4})

    def test_connection_errors_are_failures(self):
        # Port 9 on loopback: nothing listens there on a test machine.
        code, summary = self.run_json("http://127.0.0.1:9/", "-n", "2", "-c", "1", "--timeout", "2")
        self.assertEqual(code, 1)
        self.assertEqual(summary["failed"], 2)
        self.assertIn("ConnectionRefusedError", summary["failures"])

    def test_with_no_answer_there_is_no_throughput_or_latency(self):
        code, summary = self.run_json("http://127.0.0.1:9/", "-n", "3", "-c", "1", "--timeout", "2")
        self.assertEqual((code, summary["ok"]), (1, 0))
        self.assertIsNone(summary["requests_per_s"])
        self.assertIsNone(summary["latency_ms"])
        done = self.run_script("http://127.0.0.1:9/", "-n", "3", "-c", "1", "--timeout", "2")
        self.assertIn("throughput  none: no request was answered", done.stdout)
        self.assertNotIn("requests/s", done.stdout)
        self.assertNotIn("p50", done.stdout)

    def test_distinct_pids_come_from_stats(self):
        code, summary = self.run_json(f"{self.base}/stats", "-n", "9", "-c", "3")
        self.assertEqual(code, 0)
        self.assertEqual(summary["distinct_pids"], 3)

    def test_distinct_workers_come_from_the_header(self):
        _, summary = self.run_json(f"{self.base}/", "-n", "6", "-c", "2")
        self.assertEqual(summary["distinct_workers"], 2)

    def test_a_proxys_upstreams_are_counted_from_x_upstream(self):
        _, summary = self.run_json(f"{self.base}/proxied", "-n", "9", "-c", "1")
        self.assertEqual(summary["upstreams"], {"10.0.0.0:80": 3, "10.0.0.1:80": 3, "10.0.0.2:80": 3})

    def test_a_new_connection_per_request_by_default(self):
        self.run_json(f"{self.base}/", "-n", "10", "-c", "2")
        self.assertEqual(len(self.server.client_ports), 10)

    def test_keep_alive_reuses_one_connection_per_client(self):
        code, _ = self.run_json(f"{self.base}/", "-n", "10", "-c", "2", "--keep-alive")
        self.assertEqual(code, 0)
        self.assertEqual(self.server.requests, 10)
        self.assertLessEqual(len(self.server.client_ports), 2)

    def test_clients_run_concurrently(self):
        # 4 requests of 0.2 s: about 0.2 s with 4 clients, about 0.8 s with one.
        _, together = self.run_json(f"{self.base}/slow", "-n", "4", "-c", "4")
        _, alone = self.run_json(f"{self.base}/slow", "-n", "4", "-c", "1")
        self.assertGreater(alone["wall_s"], 2 * together["wall_s"])
        self.assertGreaterEqual(alone["wall_s"], 0.75)

    def test_open_loop_starts_requests_at_the_rate(self):
        code, summary = self.run_json(f"{self.base}/", "--rate", "20", "--duration", "1", "-c", "5")
        self.assertEqual(code, 0)
        self.assertEqual(summary["mode"], "open")
        self.assertEqual(summary["requests"], 20)
        self.assertGreaterEqual(summary["wall_s"], 0.9)

    def test_idle_clients_ask_once_and_stay_open_during_the_load(self):
        code, summary = self.run_json(f"{self.base}/stats", "-n", "4", "-c", "2", "--idle", "3")
        self.assertEqual(code, 0)
        self.assertEqual((summary["idle_clients"], summary["idle_answered"]), (3, 3))
        self.assertEqual(summary["requests"], 4, "the idle clients' requests are not load")
        self.assertEqual(self.server.requests, 7)
        self.assertEqual(len(self.server.client_ports), 7)

    def test_the_text_summary_names_the_figures(self):
        done = self.run_script(f"{self.base}/stats", "-n", "3", "-c", "3")
        self.assertEqual(done.returncode, 0)
        for word in ["3 ok, 0 failed", "requests/s", "p50", "p99", "distinct pids"]:
            self.assertIn(word, done.stdout)
        self.assertEqual(done.stderr, "", "no progress line when stderr is not a terminal")

    def test_it_first_says_where_to_watch_the_server_live(self):
        # The first line, before any load: the server's /live page, at the address given.
        done = self.run_script(f"{self.base}/stats", "-n", "2", "-c", "1")
        self.assertEqual(done.returncode, 0)
        self.assertEqual(done.stdout.splitlines()[0], f"watch it live: {self.base}/live")
        # With --json, on stderr: stdout is the summary alone.
        done = self.run_script(f"{self.base}/slow?ms=5", "-n", "2", "-c", "1", "--json")
        self.assertEqual(done.returncode, 0)
        self.assertEqual(done.stderr.splitlines()[0], f"watch it live: {self.base}/live")
        self.assertEqual(json.loads(done.stdout)["requests"], 2)

    def test_bad_usage_exits_2(self):
        for args in (["-n", "0"], ["-c", "x"], ["ftp://127.0.0.1/"], ["--rate", "5"], ["--timeout", "0"]):
            done = self.run_script(*args)
            self.assertEqual(done.returncode, 2, args)
            self.assertIn("error", done.stderr)

    def test_help_explains_with_examples(self):
        done = self.run_script("--help")
        self.assertEqual(done.returncode, 0)
        self.assertIn("Examples:", done.stdout)
        self.assertIn("--keep-alive", done.stdout)


if __name__ == "__main__":
    unittest.main()
