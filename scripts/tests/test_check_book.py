"""Tests for scripts/check_book.py: a small tree and book that agree pass; each planted
disagreement (a name the code lost, a figure no data file holds, a command that assumes
target/release/) fails with the page and line. And the real book passes, where there is one.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import importlib.util
import json
import os
import sys
import tempfile
import textwrap
import unittest

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)
spec = importlib.util.spec_from_file_location("check_book", os.path.join(SCRIPTS, "check_book.py"))
check_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_book)

MAIN_RS = """
use std::time::Duration;

/// How long an idle connection may stay.
const IDLE: Duration = Duration::from_millis(250);

#[derive(Parser)]
struct Args {
    /// At most this many children.
    #[arg(long, default_value_t = 512)]
    max_children: u32,
}

pub struct Children;

impl Children {
    // EXERCISE: reap-children - collect every exited child
    pub fn reap(&mut self) {}
    // EXERCISE END
}

#[test]
fn no_zombie_is_left() {}
"""

TOOL_PY = """
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("step")
parser.add_argument("--rounds", type=int)
"""

PAGE = """
# 09: a step

The parent calls `Children::reap` (in `src/main.rs`), started with `--max-children`; the test
`no_zombie_is_left` checks it, and `scripts/tool.py` measures it:
`python3 scripts/tool.py step09-demo --rounds 3`. Write it yourself: the exercise
`reap-children`. Idle connections close after 250 ms.

It answered 12,345 requests a second, 1.25× the other, in 20.02 s.

```sh
cargo run --release -p step09-demo -- --max-children 4 &
python3 scripts/tool.py step09-demo --rounds 3
kill %1
```
"""

DATA = {"records": [{"command": "python3 scripts/tool.py step09-demo --rounds 3",
                     "output": "requests/s 12345.2\nratio 1.2503\nwall time 20.017 s\n"}]}


class Book:
    """A temporary repository: one step, one script, one page and its data."""

    def __init__(self, page=PAGE, data=DATA):
        self.dir = tempfile.TemporaryDirectory()
        root = self.root = self.dir.name
        self.write("step09-demo/Cargo.toml", '[package]\nname = "step09-demo"\n')
        self.write("step09-demo/src/main.rs", MAIN_RS)
        self.write("scripts/tool.py", TOOL_PY)
        self.write("README.md", "# demo\n")
        self.write("docs/09-demo.md", textwrap.dedent(page))
        if data is not None:
            self.write("docs/data/09-demo.json", json.dumps(data))
        self.tree = check_book.Tree(root)
        self.pages = check_book.book_pages(root)

    def write(self, path, text):
        full = os.path.join(self.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as out:
            out.write(text)

    def problems(self):
        return (check_book.check_names(self.tree, self.pages)
                + check_book.check_figures(self.pages, root=self.root)
                + check_book.check_commands(self.tree, self.pages))

    def close(self):
        self.dir.cleanup()


class CheckBookTest(unittest.TestCase):
    def assert_fails(self, old, new, expected, data=DATA):
        self.assertIn(old, PAGE)
        book = Book(PAGE.replace(old, new), data)
        try:
            problems = book.problems()
        finally:
            book.close()
        self.assertTrue(problems, f"planting {new!r} went unnoticed")
        self.assertTrue(any(expected in problem for problem in problems), problems)
        self.assertTrue(all(problem.startswith("docs/09-demo.md:") for problem in problems), problems)

    def test_a_book_that_agrees_with_its_tree_and_data_passes(self):
        book = Book()
        try:
            self.assertEqual(book.problems(), [])
        finally:
            book.close()

    def test_a_function_the_code_no_longer_has(self):
        self.assert_fails("`Children::reap`", "`Children::reap_all`", "`reap_all` is not defined")

    def test_an_option_no_program_has(self):
        self.assert_fails("`--max-children`", "`--max-kids`", "no program of ours has an option --max-kids")

    def test_a_test_that_was_renamed(self):
        self.assert_fails("`no_zombie_is_left`", "`no_zombie_left_behind`", "no test or function")

    def test_a_file_that_moved(self):
        self.assert_fails("`src/main.rs`", "`src/lib.rs`", "no file or directory `src/lib.rs`")

    def test_an_exercise_that_was_renamed(self):
        self.assert_fails("`reap-children`", "`reap-the-children`", "no exercise `reap-the-children`")

    def test_a_script_option_that_does_not_exist(self):
        self.assert_fails("`python3 scripts/tool.py step09-demo --rounds 3`",
                          "`python3 scripts/tool.py step09-demo --laps 3`", "has no option --laps")

    def test_a_figure_no_run_printed(self):
        self.assert_fails("12,345 requests", "12,354 requests", "the figure 12,354")

    def test_a_ratio_rounded_otherwise(self):
        self.assert_fails("1.25×", "1.26×", "the figure 1.26×")

    def test_the_first_figure_of_a_range_is_checked_too(self):
        self.assert_fails("in 20.02 s", "in 19.50 to 20.02 s", "the figure 19.50 s")

    def test_a_figure_without_its_data_file(self):
        self.assert_fails("in 20.02 s", "in 20.02 s", "the figure 20.02 s", data=None)

    def test_a_setting_the_code_changed(self):
        self.assert_fails("after 250 ms", "after 300 ms", "the figure 300 ms")

    def test_an_unrecorded_region_is_not_checked(self):
        page = PAGE.replace("It answered 12,345", "<!-- unrecorded: begin a later run -->\nIt answered 99,999") \
                   .replace("in 20.02 s.", "in 20.02 s.\n<!-- unrecorded: end -->")
        book = Book(page)
        try:
            self.assertEqual(book.problems(), [])
        finally:
            book.close()

    def test_a_command_that_assumes_target_release(self):
        self.assert_fails("cargo run --release -p step09-demo -- --max-children 4 &",
                          "target/release/step09-demo --max-children 4 &", "CARGO_TARGET_DIR")

    def test_a_kill_of_every_job(self):
        self.assert_fails("kill %1", "kill $(jobs -p)", "kill $(jobs -p)")

    def test_a_crate_that_does_not_exist(self):
        self.assert_fails("cargo run --release -p step09-demo", "cargo run --release -p step09-demos",
                          "no crate step09-demos")

    def test_quick_mode_cuts_the_costs_and_keeps_the_options(self):
        argv = check_book.quick("python3 scripts/experiment.py --hold 15 step03-queue-autoscale --trace /tmp/t.txt "
                                "-- /sleep?ms=200 --rate 100 --duration 5 -c 200")
        self.assertEqual(argv[2:], ["--hold", "0", "step03-queue-autoscale", "--trace", "/tmp/t.txt", "--",
                                    "/sleep?ms=50", "--rate", "50", "--duration", "1", "-c", "20"])
        self.assertIsNone(check_book.quick("cargo run --release -p step01-fork &"))
        self.assertIn("--quick", check_book.quick("python3 scripts/compare --steps step01-fork --runs 3 --out-dir /tmp/c"))
        self.assertIsNone(check_book.quick("python3 scripts/compare --peers"), "it rewrites the docs: not run")


@unittest.skipUnless(os.path.isdir(os.path.join(check_book.ROOT, "docs")),
                     "no docs/ here (a starter holds the scripts, not the book)")
class TheRealBookTest(unittest.TestCase):
    """The book of this repository agrees with its tree and its data (CI runs the same check,
    `python3 scripts/check_book.py`)."""

    def test_the_book_passes(self):
        tree, pages = check_book.Tree(check_book.ROOT), check_book.book_pages()
        problems = (check_book.check_names(tree, pages) + check_book.check_figures(pages)
                    + check_book.check_commands(tree, pages))
        self.assertEqual(problems, [], "\n".join(problems))


if __name__ == "__main__":
    unittest.main()
