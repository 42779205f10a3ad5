"""Tests for plot_trace.py: it reads step03's trace lines and writes a well-formed SVG.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ElementTree

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(SCRIPTS, "plot_trace.py")
sys.path.insert(0, SCRIPTS)

import plot_trace  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"

# A trace as it appears on stdout: the start, growth, the access log in between, shrinking.
MIXED = """listening on http://127.0.0.1:8090
0 1 0
120 2 8
1234 127.0.0.1:5555 "GET / HTTP/1.1" 200 512 0.3ms
121 3 9
900 2 0
1400 1 0
"""


class PlotTraceTest(unittest.TestCase):
    def test_reads_only_trace_lines(self):
        events = plot_trace.read_trace(MIXED.splitlines())
        self.assertEqual(
            events, [(0.0, 1, 0), (0.12, 2, 8), (0.121, 3, 9), (0.9, 2, 0), (1.4, 1, 0)]
        )

    def test_writes_a_step_line_and_a_dot_per_event(self):
        with tempfile.TemporaryDirectory() as directory:
            trace = os.path.join(directory, "trace.txt")
            svg = os.path.join(directory, "plot.svg")
            with open(trace, "w") as target:
                target.write(MIXED)
            result = subprocess.run(
                [sys.executable, SCRIPT, trace, svg, "--capacity", "10", "--title", "a <burst>"],
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("peak 3 workers", result.stdout)
            root = ElementTree.parse(svg).getroot()
        self.assertEqual(root.tag, f"{SVG}svg")
        self.assertEqual(len(root.findall(f"{SVG}circle")), 5)
        line = root.find(f"{SVG}polyline")
        # Each event after the first adds a horizontal and a vertical segment, plus the tail.
        self.assertEqual(len(line.get("points").split()), 1 + 2 * 4 + 1)
        self.assertIn("a <burst>", root.find(f"{SVG}title").text)

    def test_a_file_without_trace_lines_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as directory:
            trace = os.path.join(directory, "empty.txt")
            with open(trace, "w") as target:
                target.write("listening on http://127.0.0.1:8090\n")
            result = subprocess.run(
                [sys.executable, SCRIPT, trace, os.path.join(directory, "x.svg")],
                capture_output=True,
                text=True,
            )
        self.assertEqual(result.returncode, 1)
        self.assertIn("no `t_ms workers queue_len` lines", result.stderr)


if __name__ == "__main__":
    unittest.main()
