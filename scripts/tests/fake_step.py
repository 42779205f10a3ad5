#!/usr/bin/env python3
"""A stand-in for a step's binary, for the scripts' tests: it takes the contract's options
(and ignores the others), prints the `listening on` line and serves `/` and `/sleep?ms=N` with
keep-alive, a thread per connection. With `--fail`, it prints an error line and exits 1, as a
step whose port is taken does."""

import argparse
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        body = b"hello\n"
        if url.path == "/sleep":
            milliseconds = int(parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(milliseconds / 1000)
            body = f"slept {milliseconds} ms\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--fail", action="store_true")
    args, _ = parser.parse_known_args()
    if args.fail:
        print(f"error: cannot listen on {args.host}:{args.port}: Address already in use", file=sys.stderr)
        return 1
    ThreadingHTTPServer.request_queue_size = 1024  # a real backlog, as the steps have
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
