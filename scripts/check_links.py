#!/usr/bin/env python3
"""Check that every relative link and image in the course resolves.

Reads README.md and every Markdown page under docs/ (the book), and for each link or image
that is not a URL (`[text](path)`, `![alt](path)`, `[name]: path`, `src="path"`,
`href="path"`), outside code blocks and code spans, checks that:

- the file or directory it names exists, relative to the page (as a code host resolves it);
- a `#fragment` names a heading of the target page (GitHub's and mdBook's ids agree: lower
  case, punctuation dropped, spaces as hyphens, `-1`, `-2` for repeats) or an explicit
  `id="..."`;
- an image is a non-empty file, and an SVG parses as XML;
- a page of docs/ links no Markdown file outside docs/ (the book could not render it: see
  scripts/book_links.py);
- every page of docs/ is listed in docs/SUMMARY.md, and every entry there exists: a page
  left out of SUMMARY.md is missing from the book.

Prints one line per problem, `file:line: what`, and exits 1 if there is any, else prints a
one-line summary and exits 0.

Usage: python3 scripts/check_links.py [--root DIR]
"""

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

INLINE = re.compile(r"(!?)\[(?:[^\[\]]|\[[^\]]*\])*\]\((<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
HTML_ATTR = re.compile(r"\b(src|href)=\"([^\"]+)\"")
HTML_ID = re.compile(r"\b(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
SUMMARY_ENTRY = re.compile(r"\]\(([^)]+)\)")


def markdown_lines(text):
    """(line number, line) for every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def without_code_spans(line):
    """`line` with the contents of code spans blanked out."""
    return re.sub(r"`[^`]*`", lambda match: "`" + " " * (len(match.group(0)) - 2) + "`", line)


def slug(heading):
    """The id GitHub and mdBook give a heading with this Markdown text."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        # Outside code spans: emphasis markers are not text.
        parts[index] = re.sub(r"\*+", "", parts[index])
        parts[index] = re.sub(r"(^|\W)_+|_+(\W|$)", r"\1\2", parts[index])
    text = "".join(parts)
    text = re.sub(r"<[^>]+>", "", text)
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch in "-_ ")
    return kept.replace(" ", "-")


def anchors(text):
    """Every fragment a page answers to: its headings' ids and its explicit ids."""
    found, seen = set(), {}
    for _, line in markdown_lines(text):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ID.findall(line))
    return found


def links(text):
    """(line number, destination, is_image) for every link and image of a page."""
    for number, raw in markdown_lines(text):
        line = without_code_spans(raw)
        reference = REFERENCE.match(line)
        if reference:
            yield number, reference.group(1), False
            continue
        for match in INLINE.finditer(line):
            dest = match.group(2)
            if dest.startswith("<") and dest.endswith(">"):
                dest = dest[1:-1]
            yield number, dest, match.group(1) == "!"
        for attribute, dest in HTML_ATTR.findall(line):
            yield number, dest, attribute == "src"


class Checker:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.docs = os.path.join(self.root, "docs")
        self.problems = []
        self.checked = 0
        self._anchors = {}

    def problem(self, path, number, message):
        self.problems.append(f"{os.path.relpath(path, self.root)}:{number}: {message}")

    def pages(self):
        """README.md and the pages of docs/ (not following symlinked directories)."""
        found = []
        readme = os.path.join(self.root, "README.md")
        if os.path.isfile(readme):
            found.append(readme)
        for directory, subdirectories, files in os.walk(self.docs):
            subdirectories[:] = sorted(
                name for name in subdirectories
                if not os.path.islink(os.path.join(directory, name))
            )
            found.extend(
                os.path.join(directory, name) for name in sorted(files) if name.endswith(".md")
            )
        return found

    def anchors_of(self, path):
        if path not in self._anchors:
            with open(path, encoding="utf-8") as page:
                self._anchors[path] = anchors(page.read())
        return self._anchors[path]

    def check_page(self, path):
        with open(path, encoding="utf-8") as page:
            text = page.read()
        in_docs = os.path.commonpath([path, self.docs]) == self.docs
        for number, dest, is_image in links(text):
            if SCHEME.match(dest) or dest.startswith("//"):
                continue
            self.checked += 1
            target_path, _, fragment = dest.partition("#")
            if dest.startswith("/"):
                self.problem(path, number, f"{dest}: use a path relative to the page")
                continue
            if target_path:
                target = os.path.normpath(os.path.join(os.path.dirname(path), target_path))
            else:
                target = path
            if target_path and not os.path.exists(target):
                self.problem(path, number, f"{dest}: no such file")
                continue
            if is_image:
                self.check_image(path, number, dest, target)
            if (
                in_docs
                and target.endswith(".md")
                and os.path.commonpath([target, self.docs]) != self.docs
            ):
                self.problem(
                    path, number,
                    f"{dest}: a page of the book cannot link a Markdown file outside docs/",
                )
            if fragment:
                if not target.endswith(".md"):
                    self.problem(path, number, f"{dest}: a #fragment on a file that is not a page")
                elif fragment not in self.anchors_of(target):
                    self.problem(path, number, f"{dest}: no heading or id '{fragment}' there")

    def check_image(self, path, number, dest, target):
        if not os.path.isfile(target) or os.path.getsize(target) == 0:
            self.problem(path, number, f"{dest}: the image is empty or not a file")
        elif target.endswith(".svg"):
            try:
                ElementTree.parse(target)
            except ElementTree.ParseError as error:
                self.problem(path, number, f"{dest}: the SVG does not parse: {error}")

    def check_summary(self):
        summary = os.path.join(self.docs, "SUMMARY.md")
        if not os.path.isfile(summary):
            return
        with open(summary, encoding="utf-8") as source:
            text = source.read()
        listed = set()
        for number, line in markdown_lines(text):
            for entry in SUMMARY_ENTRY.findall(line):
                listed.add(os.path.normpath(os.path.join(self.docs, entry.partition("#")[0])))
        for page in self.pages():
            if os.path.commonpath([page, self.docs]) != self.docs or page == summary:
                continue
            if page not in listed:
                self.problem(page, 1, "not listed in docs/SUMMARY.md, so not in the book")

    def run(self):
        for page in self.pages():
            self.check_page(page)
        self.check_summary()
        return self.problems


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--root", default=default_root, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    checker = Checker(args.root)
    problems = checker.run()
    for line in problems:
        print(line)
    pages = len(checker.pages())
    if problems:
        print(f"check_links: {len(problems)} problem(s) in {pages} pages", file=sys.stderr)
        return 1
    print(f"check_links: {checker.checked} links and images in {pages} pages, all resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
