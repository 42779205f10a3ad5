"""Tests for fairness.py's client loop: it counts the answers one keep-alive client gets.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import os
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)

import fairness  # noqa: E402


class KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Silent(KeepAlive):
    def do_GET(self):
        time.sleep(2)  # longer than the run: this client is never answered in time


class AnswersTest(unittest.TestCase):
    def serve(self, handler):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address

    def test_a_served_client_counts_many_answers_on_one_connection(self):
        host, port = self.serve(KeepAlive)
        sockets = []
        count = fairness.answers(host, port, time.monotonic() + 0.3, sockets)
        self.assertGreaterEqual(count, 3)  # (http.server answers in two writes: slow, but many)
        self.assertEqual(len(sockets), 1, "one connection, kept open after the run")
        sockets[0].close()

    def test_a_client_never_answered_counts_zero(self):
        host, port = self.serve(Silent)
        sockets = []
        self.assertEqual(fairness.answers(host, port, time.monotonic() + 0.3, sockets), 0)
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    unittest.main()
