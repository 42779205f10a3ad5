"""Tests for scripts/make-exercise: markers pair up, bodies become todo!(), nothing else moves.

Compiling a starter is .ci/run's job (it builds them all and checks that step 05's tests
fail where the solution's pass); these tests only read and write text.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import importlib.machinery
import importlib.util
import io
import os
import tempfile
import tomllib
import unittest
from contextlib import redirect_stderr, redirect_stdout

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = importlib.machinery.SourceFileLoader("make_exercise", os.path.join(SCRIPTS, "make-exercise"))
spec = importlib.util.spec_from_loader("make_exercise", loader)
make_exercise = importlib.util.module_from_spec(spec)
loader.exec_module(make_exercise)

SOURCE = '''use std::fmt;

// EXERCISE: tricky - braces in strings, chars and comments
/// Returns a brace.
pub fn brace<'a>(text: &'a str) -> Result<&'a str, fmt::Error> {
    let open = '{'; // not a } either
    let _ = r#"}"#;
    /* } */
    if text.is_empty() { return Ok("}") }
    Ok(text)
}

impl Widget {
    /// Makes one.
    fn new(callback: fn(u8) -> u8) -> Widget where Widget: Sized {
        Widget { callback }
    }
}
// EXERCISE END

trait Shape {
    fn area(&self) -> f64;
}
'''


class StubTest(unittest.TestCase):
    def test_bodies_become_todo_and_everything_else_stays(self):
        exercises, out = make_exercise.process_file(SOURCE, "src/lib.rs", lambda name: True)
        self.assertEqual([exercise.name for exercise in exercises], ["tricky"])
        exercise = exercises[0]
        self.assertEqual(exercise.task, "braces in strings, chars and comments")
        self.assertEqual([name for name, _ in exercise.functions], ["brace", "new"])
        self.assertEqual(exercise.functions[0][1], ["Returns a brace."])
        self.assertIn(
            "pub fn brace<'a>(text: &'a str) -> Result<&'a str, fmt::Error> {\n"
            '    todo!("exercise tricky")\n}\n',
            out,
        )
        self.assertIn(
            "    fn new(callback: fn(u8) -> u8) -> Widget where Widget: Sized {\n"
            '        todo!("exercise tricky")\n    }\n}\n// EXERCISE END',
            out,
        )
        self.assertNotIn("let open", out)
        self.assertIn("trait Shape {\n    fn area(&self) -> f64;\n}", out, "outside the region: untouched")

    def test_not_stubbing_leaves_the_file_as_it_was(self):
        _, out = make_exercise.process_file(SOURCE, "src/lib.rs", lambda name: False)
        self.assertEqual(out, SOURCE)

    def test_unpaired_markers_are_errors(self):
        for broken in (
            "// EXERCISE: a\nfn f() {}\n",
            "fn f() {}\n// EXERCISE END\n",
            "// EXERCISE: a\n// EXERCISE: b\nfn f() {}\n// EXERCISE END\n",
            "// EXERCISE: a\nconst X: u8 = 1;\n// EXERCISE END\n",
            "// EXERCISE: Bad Name\nfn f() {}\n// EXERCISE END\n",
        ):
            with self.assertRaises(make_exercise.MarkerError, msg=broken):
                make_exercise.process_file(broken, "x.rs", lambda name: True)


class RefusalTest(unittest.TestCase):
    """A step without an exercise has no starter: the tool says so in one line and exits 1,
    instead of handing out the finished step with an empty list of exercises."""

    def test_a_step_without_exercises_is_refused_in_one_line(self):
        with tempfile.TemporaryDirectory() as root:
            step = os.path.join(root, "step09-plain")
            os.makedirs(os.path.join(step, "src"))
            with open(os.path.join(step, "Cargo.toml"), "w") as manifest:
                manifest.write('[package]\nname = "step09-plain"\n')
            with open(os.path.join(step, "src", "main.rs"), "w") as source:
                source.write("fn main() {}\n")
            saved, make_exercise.ROOT = make_exercise.ROOT, root
            try:
                for argv in (["09", os.path.join(root, "out")], ["--list", "09"]):
                    err = io.StringIO()
                    with redirect_stderr(err), redirect_stdout(io.StringIO()):
                        self.assertEqual(make_exercise.main(argv), 1, argv)
                    self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())
                    self.assertIn("step09-plain has no exercise", err.getvalue())
                self.assertFalse(os.path.exists(os.path.join(root, "out")), "nothing is written")
                err = io.StringIO()
                with redirect_stderr(err):
                    self.assertEqual(make_exercise.main(["08", os.path.join(root, "out")]), 2)
                self.assertIn("the steps: step09-plain", err.getvalue())
            finally:
                make_exercise.ROOT = saved

    def test_the_help_example_names_a_real_exercise(self):
        for line in make_exercise.__doc__.splitlines():
            if "--only" in line and line.strip().startswith("scripts/make-exercise"):
                words = line.split()
                step, name = words[1], words[words.index("--only") + 1]
                if make_exercise.step_dir(step) is None:
                    self.skipTest(f"{step} is not in this workspace")
                names = [exercise.name for exercise in make_exercise.exercises_of(make_exercise.step_dir(step))]
                self.assertIn(name, names, line)


# A starter made by scripts/make-exercise holds one step and these scripts: the steps' own
# markers are the repository's business.
ALL_STEPS = all(make_exercise.step_dir(number) for number in ("01", "02", "03", "04", "05"))


@unittest.skipUnless(ALL_STEPS, "needs steps 01 to 05 (this is not the whole repository)")
class StepsTest(unittest.TestCase):
    def test_every_step_up_to_05_has_exercises(self):
        for number in ("01", "02", "03", "04", "05"):
            step = make_exercise.step_dir(number)
            self.assertIsNotNone(step, number)
            self.assertTrue(make_exercise.exercises_of(step), f"step {number} has no exercise")

    def test_a_starter_is_a_workspace_of_the_step_and_what_it_needs(self):
        with tempfile.TemporaryDirectory() as directory:
            out = os.path.join(directory, "starter")
            crate, exercises = make_exercise.write_starter(
                make_exercise.step_dir("04"), out, ["worker-loop"]
            )
            self.assertEqual(crate, "step04-threadpool")
            self.assertEqual([exercise.name for exercise in exercises], ["worker-loop"])
            with open(os.path.join(out, "Cargo.toml"), "rb") as manifest:
                workspace = tomllib.load(manifest)["workspace"]
            self.assertEqual(sorted(workspace["members"]), ["common", "step04-threadpool", "testkit"])
            for name, dependency in workspace["dependencies"].items():
                if isinstance(dependency, dict) and "path" in dependency:
                    self.assertTrue(os.path.isdir(os.path.join(out, dependency["path"])), name)
            with open(os.path.join(out, "step04-threadpool", "src", "pool.rs")) as pool:
                text = pool.read()
            self.assertIn('todo!("exercise worker-loop")', text)
            self.assertNotIn('todo!("exercise shutdown-by-drop")', text, "--only stubs only that one")
            for kept in ("Cargo.lock", "README.md", "scripts/accesses.py", "step04-threadpool/tests/threadpool.rs"):
                self.assertTrue(os.path.exists(os.path.join(out, kept)), kept)


if __name__ == "__main__":
    unittest.main()
