"""Tests for book_links.py, the mdBook preprocessor that adjusts links leaving docs/.

Run: python3 -m unittest discover -s scripts/tests -v   (cargo test runs this too)
"""

import io
import json
import os
import sys
import unittest
from unittest import mock

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)

import book_links  # noqa: E402

ROOT = "/repo/docs"


class RewriterTest(unittest.TestCase):
    def setUp(self):
        self.local = book_links.Rewriter(ROOT, "../target/book", "")
        self.published = book_links.Rewriter(ROOT, "../target/book", "https://host/r/blob/main/")

    def test_images_come_from_the_book_itself(self):
        self.assertEqual(self.local.destination("01-fork.md", "../images/01-fork.svg"), "images/01-fork.svg")

    def test_sources_point_back_into_the_checkout_or_to_the_source_url(self):
        dest = "../step01-fork/src/main.rs"
        self.assertEqual(self.local.destination("01-fork.md", dest), "../../step01-fork/src/main.rs")
        self.assertEqual(
            self.published.destination("01-fork.md", dest),
            "https://host/r/blob/main/step01-fork/src/main.rs",
        )

    def test_the_course_index_is_index_in_the_book(self):
        self.assertEqual(self.local.destination("glossary.md", "README.md#what-to-read"), "index.md#what-to-read")

    def test_pages_urls_and_anchors_are_left_alone(self):
        for dest in ["02-threads.md", "02-threads.md#limit", "#questions", "https://example.org/"]:
            self.assertEqual(self.local.destination("01-fork.md", dest), dest)

    def test_code_is_left_alone(self):
        page = "![d](../images/a.svg) `](../images/a.svg)`\n```\n![d](../images/a.svg)\n```\n[r]: ../x.rs\n"
        self.assertEqual(
            self.local.page("a.md", page),
            "![d](images/a.svg) `](../images/a.svg)`\n```\n![d](../images/a.svg)\n```\n[r]: ../../x.rs\n",
        )


class ProtocolTest(unittest.TestCase):
    def test_supports_every_renderer(self):
        self.assertEqual(book_links.main(["supports", "html"]), 0)

    def test_rewrites_chapters_and_their_sub_chapters(self):
        chapter = {"name": "A", "path": "a.md", "content": "![x](../images/x.svg)", "sub_items": [
            {"Chapter": {"name": "B", "path": "b.md", "content": "[y](../y.rs)", "sub_items": []}},
        ]}
        context = {"root": ROOT, "config": {"build": {"build-dir": "../target/book"}}}
        book = {"items": [{"Chapter": chapter}, {"PartTitle": "Part"}, "Separator"]}
        stdin, stdout = io.StringIO(json.dumps([context, book])), io.StringIO()
        with mock.patch.object(sys, "stdin", stdin), mock.patch.object(sys, "stdout", stdout):
            self.assertEqual(book_links.main([]), 0)
        items = json.loads(stdout.getvalue())["items"]
        self.assertEqual(items[0]["Chapter"]["content"], "![x](images/x.svg)")
        self.assertEqual(items[0]["Chapter"]["sub_items"][0]["Chapter"]["content"], "[y](../../y.rs)")
        self.assertEqual(items[1:], [{"PartTitle": "Part"}, "Separator"])


if __name__ == "__main__":
    unittest.main()
