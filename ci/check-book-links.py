#!/usr/bin/env python3
"""Checks the internal links of the book (docs/src/) and of README.md.

Every relative markdown link must name a file that exists, and a `#anchor` must name a
heading of its page (GitHub's and mdBook's spelling of heading ids: lower case, spaces
as hyphens, punctuation dropped, a repeated heading numbered -1, -2, ...). Every page of
docs/src/ must be listed in SUMMARY.md, and every page SUMMARY.md lists must exist.
Links inside code blocks and inline code are not links. Exits 1 with one line per
broken link.

    python3 ci/check-book-links.py
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "docs" / "src"

# [text](target) or [text](target "title"); images too. Reference-style links are not
# used in these pages.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*(?:href|src)="([^"]+)\"""")


def prose(text, keep_code=False):
    """The lines outside fenced code blocks, numbered; inline code blanked unless keep_code."""
    out = []
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        out.append((number, line if keep_code else re.sub(r"`[^`]*`", "``", line)))
    return out


def slug(heading):
    text = heading.strip().lower()
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    kept = []
    for ch in text:
        if ch.isalnum() or ch in "-_":
            kept.append(ch)
        elif ch == " ":
            kept.append("-")
    return "".join(kept)


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen = {}
        ids = set()
        for _, line in prose(path.read_text(encoding="utf-8"), keep_code=True):
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            ids.add(base if n == 0 else f"{base}-{n}")
        _anchors[path] = ids
    return _anchors[path]


def check_file(path, errors):
    # Prose only: fenced code blocks become empty lines (so offsets keep their line
    # numbers) and inline code is blanked. A link's text may span lines.
    lines = dict(prose(path.read_text(encoding="utf-8")))
    total = max(lines, default=0)
    text = "\n".join(lines.get(n, "") for n in range(1, total + 1))
    found = [(m.start(), m.group(1)) for m in LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in HTML_LINK.finditer(text)]
    for offset, target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:, ...
        where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / unquote(file_part)).resolve()
        if not dest.exists():
            errors.append(f"{where}: {target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            errors.append(f"{where}: {target}: no heading #{anchor} in {dest.relative_to(ROOT)}")


def summary_pages(errors):
    listed = set()
    summary = BOOK / "SUMMARY.md"
    for number, line in prose(summary.read_text(encoding="utf-8")):
        for m in LINK.finditer(line):
            page = (BOOK / m.group(1).partition("#")[0]).resolve()
            listed.add(page)
            if not page.exists():
                errors.append(f"docs/src/SUMMARY.md:{number}: {m.group(1)}: no such page")
    for page in sorted(BOOK.rglob("*.md")):
        if page.name != "SUMMARY.md" and page.resolve() not in listed:
            errors.append(f"{page.relative_to(ROOT)}: not listed in docs/src/SUMMARY.md")


def main():
    errors = []
    summary_pages(errors)
    for path in [ROOT / "README.md", *sorted(BOOK.rglob("*.md"))]:
        check_file(path, errors)
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} broken link(s) in the book or README.md")
        return 1
    print(f"book links: {sum(1 for _ in BOOK.rglob('*.md')) + 1} pages checked, no broken link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
