"""Tests for scripts/stepdiff: it finds steps by number and shows the lesson's diff.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import importlib.machinery
import importlib.util
import io
import os
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = importlib.machinery.SourceFileLoader("stepdiff", os.path.join(SCRIPTS, "stepdiff"))
spec = importlib.util.spec_from_loader("stepdiff", loader)
stepdiff = importlib.util.module_from_spec(spec)
loader.exec_module(stepdiff)


# A starter made by scripts/make-exercise holds one step and these scripts: nothing to diff.
ALL_STEPS = all(stepdiff.step_dir(number) for number in ("01", "02", "03", "04"))


@unittest.skipUnless(ALL_STEPS, "needs steps 01 to 04 (this is not the whole repository)")
class StepdiffTest(unittest.TestCase):
    def test_steps_are_found_by_number_or_name(self):
        for name in ("2", "02", "step02", "step02-threads"):
            self.assertEqual(os.path.basename(stepdiff.step_dir(name)), "step02-threads")
        self.assertIsNone(stepdiff.step_dir("99"))

    def test_the_diff_of_01_and_02_shows_fork_becoming_spawn(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(stepdiff.main(["01", "02"]), 0)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[:2], ["--- step01-fork/src/main.rs", "+++ step02-threads/src/main.rs"])
        self.assertTrue(any(line.startswith("-") and "signals.fork()" in line for line in lines))
        self.assertTrue(any(line.startswith("+") and ".spawn(move ||" in line for line in lines))

    def test_all_shows_files_only_one_step_has(self):
        lines = stepdiff.diff(stepdiff.step_dir("03"), stepdiff.step_dir("04"), everything=True)
        self.assertIn("--- step03-queue-autoscale/src/queue.rs\n", lines)
        self.assertIn("+++ step04-threadpool/src/pool.rs\n", lines)

    def test_lines_counts_each_crate_without_its_unit_tests(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(stepdiff.main(["--lines"]), 0)
        counts = dict(line.split() for line in out.getvalue().splitlines())
        self.assertEqual(list(counts)[:3], ["common", "step01-fork", "step02-threads"])
        with tempfile.TemporaryDirectory() as crate:
            os.makedirs(os.path.join(crate, "src", "nested"))
            with open(os.path.join(crate, "src", "lib.rs"), "w") as lib:
                lib.write("//! doc\npub fn one() {}\n\n#[cfg(test)]\nmod tests {\n}\n")
            with open(os.path.join(crate, "src", "nested", "two.rs"), "w") as two:
                two.write("fn two() {}\n")
            self.assertEqual(stepdiff.non_test_lines(crate), 4)

    def test_an_unknown_step_is_exit_status_2_and_the_steps_come_from_the_tree(self):
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(stepdiff.main(["01", "99"]), 2)
        self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())
        on_disk = sorted(name for name in os.listdir(stepdiff.ROOT)
                         if name.startswith("step") and os.path.isfile(os.path.join(stepdiff.ROOT, name, "Cargo.toml")))
        for name in on_disk:
            self.assertIn(name, err.getvalue())


if __name__ == "__main__":
    unittest.main()
