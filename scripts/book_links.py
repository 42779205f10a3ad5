#!/usr/bin/env python3
"""mdBook preprocessor: makes the links of docs/ work in the rendered book too.

Every page under docs/ is written to be read as plain Markdown on a code host, so its links
are relative to the page: `../images/01-fork.svg`, `../step01-fork/src/main.rs`,
`README.md`. In the book (built into target/book), three kinds need adjusting:

- `../images/X`: the book holds the images itself (docs/images is a symlink to ../images,
  which mdBook copies into the book), so the link becomes `images/X`.
- `README.md` (the course's first page): mdBook renders it as index.html, so the link
  becomes `index.md`, which mdBook then turns into `index.html`.
- anything else outside docs/ (a source file, a script): the link points back into the
  checkout the book was built from (`../../step01-fork/src/main.rs` from target/book), or,
  when book.toml sets `[preprocessor.repo-links] source-url`, to that URL plus the path.

Only the book is changed; the Markdown files are not. A Markdown file outside docs/ cannot
be linked from a page (mdBook would turn `.md` into `.html`); scripts/check_links.py refuses
such links.

mdBook runs this as `python3 ../scripts/book_links.py` from docs/ (book.toml), first with
`supports <renderer>` (every renderer is fine), then with `[context, book]` as JSON on stdin,
expecting the book as JSON on stdout.
"""

import json
import os
import posixpath
import re
import sys

# An inline link or image destination: `](dest)` or `](dest "title")`.
INLINE = re.compile(r"(\]\()(<[^>]*>|[^)\s]+)((?:\s+\"[^\"]*\")?\))")
# A reference definition: `[name]: dest`.
REFERENCE = re.compile(r"^(\s{0,3}\[[^\]]+\]:\s*)(\S+)(.*)$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")


class Rewriter:
    """Rewrites one page's link destinations for the book."""

    def __init__(self, book_root, build_dir, source_url):
        self.book_root = os.path.abspath(book_root)
        self.repo_root = os.path.dirname(self.book_root)
        self.build_dir = os.path.abspath(os.path.join(self.book_root, build_dir))
        self.source_url = source_url.rstrip("/")

    def destination(self, chapter_path, dest):
        """The book's version of `dest`, a link found in the page at `chapter_path`."""
        if not dest or dest.startswith("#") or SCHEME.match(dest) or dest.startswith("/"):
            return dest
        path, hash_, anchor = dest.partition("#")
        page_dir = posixpath.dirname(chapter_path)
        target = posixpath.normpath(posixpath.join(page_dir, path))
        if not target.startswith("../"):
            # Inside the book. README.md is rendered as index.html.
            if posixpath.basename(target) == "README.md":
                renamed = posixpath.join(posixpath.dirname(target), "index.md")
                return posixpath.relpath(renamed, page_dir or ".") + hash_ + anchor
            return dest
        in_repo = target[len("../"):]
        if in_repo.startswith("images/"):
            return posixpath.relpath(in_repo, page_dir or ".") + hash_ + anchor
        if self.source_url:
            return f"{self.source_url}/{in_repo}" + hash_ + anchor
        page_out = os.path.join(self.build_dir, page_dir)
        back = os.path.relpath(os.path.join(self.repo_root, in_repo), page_out)
        return back.replace(os.sep, "/") + hash_ + anchor

    def page(self, chapter_path, text):
        """`text` with every link destination outside code blocks rewritten."""
        out, fenced = [], False
        for line in text.split("\n"):
            if FENCE.match(line):
                fenced = not fenced
            elif not fenced:
                line = self._line(chapter_path, line)
            out.append(line)
        return "\n".join(out)

    def _line(self, chapter_path, line):
        reference = REFERENCE.match(line)
        if reference:
            head, dest, tail = reference.groups()
            return head + self.destination(chapter_path, dest) + tail
        pieces = line.split("`")
        # Even pieces are outside code spans.
        for index in range(0, len(pieces), 2):
            pieces[index] = INLINE.sub(
                lambda match: match.group(1)
                + self._bracketed(chapter_path, match.group(2))
                + match.group(3),
                pieces[index],
            )
        return "`".join(pieces)

    def _bracketed(self, chapter_path, dest):
        if dest.startswith("<") and dest.endswith(">"):
            return "<" + self.destination(chapter_path, dest[1:-1]) + ">"
        return self.destination(chapter_path, dest)


def rewrite_items(items, rewriter):
    """Rewrites every chapter in `items` (and their sub-chapters) in place."""
    for item in items:
        chapter = item.get("Chapter") if isinstance(item, dict) else None
        if not chapter:
            continue
        if chapter.get("path") and isinstance(chapter.get("content"), str):
            chapter["content"] = rewriter.page(chapter["path"], chapter["content"])
        rewrite_items(chapter.get("sub_items", []), rewriter)


def main(argv):
    if len(argv) >= 1 and argv[0] == "supports":
        return 0
    context, book = json.load(sys.stdin)
    config = context.get("config", {})
    settings = config.get("preprocessor", {}).get("repo-links", {})
    build_dir = config.get("build", {}).get("build-dir", "book")
    rewriter = Rewriter(context["root"], build_dir, settings.get("source-url", ""))
    # mdBook 0.5 calls the list `items`; 0.4 called it `sections`.
    for key in ("items", "sections"):
        if key in book:
            rewrite_items(book[key], rewriter)
    json.dump(book, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
