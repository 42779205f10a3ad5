"""Tests for scripts/record: a command's output is kept in the page's data file, beside the
earlier runs, with the command, date, machine and exit status; --fresh replaces the earlier
runs of that command.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = importlib.machinery.SourceFileLoader("record", os.path.join(SCRIPTS, "record"))
spec = importlib.util.spec_from_loader("record", loader)
record = importlib.util.module_from_spec(spec)
loader.exec_module(record)


class RecordTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        os.makedirs(os.path.join(self.dir.name, "docs"))
        with open(os.path.join(self.dir.name, "docs", "09-demo.md"), "w") as page:
            page.write("# demo\n")
        self.saved = record.ROOT, record.DATA
        record.ROOT, record.DATA = self.dir.name, os.path.join(self.dir.name, "docs", "data")

    def tearDown(self):
        record.ROOT, record.DATA = self.saved
        self.dir.cleanup()

    def run_record(self, *argv):
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            return record.main(list(argv))

    def records(self):
        with open(os.path.join(record.DATA, "09-demo.json")) as data:
            return json.load(data)["records"]

    def test_the_output_is_kept_with_its_command(self):
        status = self.run_record("09-demo", "--", sys.executable, "-c", "print('wall time   1.02 s')")
        self.assertEqual(status, 0)
        [kept] = self.records()
        self.assertEqual(kept["output"], "wall time   1.02 s\n")
        self.assertEqual(kept["exit_status"], 0)
        self.assertIn("-c", kept["command"])
        self.assertTrue(kept["date"] and kept["machine"])

    def test_runs_accumulate_and_fresh_replaces_them(self):
        command = ("--", sys.executable, "-c", "import sys; print('x'); sys.exit(3)")
        self.assertEqual(self.run_record("09-demo", "--runs", "2", *command), 3, "the command's status")
        self.assertEqual(len(self.records()), 2, "a failed run is a result too")
        self.run_record("09-demo", "--fresh", *command)
        self.assertEqual(len(self.records()), 1)

    def test_a_page_that_does_not_exist_is_refused(self):
        with self.assertRaises(SystemExit) as exit_:
            self.run_record("99-nothing", "--", "true")
        self.assertEqual(exit_.exception.code, 2)


if __name__ == "__main__":
    unittest.main()
