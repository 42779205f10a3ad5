"""Tests for check_links.py: it finds dead links, bad anchors and orphan pages, and only those.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import os
import sys
import tempfile
import unittest

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)

import check_links  # noqa: E402

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


class Repo:
    """A throwaway repository with README.md, docs/ and images/."""

    def __init__(self, files):
        self.directory = tempfile.TemporaryDirectory()
        self.root = self.directory.name
        for path, text in files.items():
            full = os.path.join(self.root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as out:
                out.write(text)

    def problems(self):
        return check_links.Checker(self.root).run()

    def close(self):
        self.directory.cleanup()


def good_repo(**changes):
    files = {
        "README.md": "See [the book](docs/README.md) and ![plot](images/a.svg).\n",
        "src/main.rs": "fn main() {}\n",
        "images/a.svg": SVG,
        "docs/SUMMARY.md": "# Summary\n\n[Intro](README.md)\n- [One](one.md)\n",
        "docs/README.md": "# Intro\n\nRead [one](one.md#why-fork-at-all) and [code](../src/main.rs).\n",
        "docs/one.md": (
            "# One\n\n## Why `fork` at all?\n\n## Questions\n\n## Questions\n\n"
            "![diagram](../images/a.svg)\n[again](#questions-1) [self](#one)\n"
            "```sh\n[not a link](nowhere.md)\n```\n"
            "Code: `[x](nowhere.md)`\n"
        ),
    }
    files.update(changes)
    return Repo(files)


class CheckLinksTest(unittest.TestCase):
    def problems(self, **changes):
        repo = good_repo(**changes)
        try:
            return repo.problems()
        finally:
            repo.close()

    def test_a_sound_repository_has_no_problem(self):
        self.assertEqual(self.problems(), [])

    def test_a_missing_file_is_reported_with_its_line(self):
        problems = self.problems(**{"docs/README.md": "# Intro\n\n[gone](two.md)\n[one](one.md)\n"})
        self.assertEqual(problems, ["docs/README.md:3: two.md: no such file"])

    def test_a_missing_image_is_reported(self):
        problems = self.problems(**{"README.md": "![plot](images/b.svg)\n"})
        self.assertEqual(problems, ["README.md:1: images/b.svg: no such file"])

    def test_a_broken_svg_is_reported(self):
        problems = self.problems(**{"images/a.svg": "<svg"})
        self.assertEqual(len(problems), 2)
        self.assertTrue(all("does not parse" in problem for problem in problems))

    def test_a_wrong_anchor_is_reported(self):
        problems = self.problems(**{"docs/README.md": "# Intro\n\n[one](one.md#why-fork)\n"})
        self.assertEqual(problems, ["docs/README.md:3: one.md#why-fork: no heading or id 'why-fork' there"])

    def test_an_orphan_page_is_reported(self):
        problems = self.problems(**{"docs/two.md": "# Two\n"})
        self.assertEqual(problems, ["docs/two.md:1: not listed in docs/SUMMARY.md, so not in the book"])

    def test_a_summary_entry_without_its_page_is_reported(self):
        problems = self.problems(
            **{"docs/SUMMARY.md": "# Summary\n\n[Intro](README.md)\n- [One](one.md)\n- [Six](06.md)\n"}
        )
        self.assertEqual(problems, ["docs/SUMMARY.md:5: 06.md: no such file"])

    def test_a_book_page_may_not_link_markdown_outside_docs(self):
        problems = self.problems(**{"docs/README.md": "# Intro\n\n[top](../README.md)\n[one](one.md)\n"})
        self.assertEqual(
            problems,
            ["docs/README.md:3: ../README.md: a page of the book cannot link a Markdown file outside docs/"],
        )

    def test_urls_and_code_are_not_checked(self):
        problems = self.problems(
            **{"docs/README.md": "# Intro\n\n[web](https://example.org/x.md) `[a](b.md)` [one](one.md)\n"}
        )
        self.assertEqual(problems, [])


class SlugTest(unittest.TestCase):
    def test_slugs_match_github_and_mdbook(self):
        cases = {
            "Why does the parent close the socket?": "why-does-the-parent-close-the-socket",
            "`select`, `poll`, `epoll`, `kqueue`": "select-poll-epoll-kqueue",
            "Blocking work, and `--blocking-sleep`": "blocking-work-and---blocking-sleep",
            "Keep-alive: a worker belongs to its connection": "keep-alive-a-worker-belongs-to-its-connection",
            "`serve_connection` and **friends**": "serve_connection-and-friends",
            "00: a socket server from nothing": "00-a-socket-server-from-nothing",
        }
        for heading, expected in cases.items():
            self.assertEqual(check_links.slug(heading), expected, heading)


if __name__ == "__main__":
    unittest.main()
