#!/usr/bin/env python3
"""Lists the functions in src/ longer than a limit (80 lines by default) that do not say
why next to them, and fails if there is any (ARCHITECTURE.md, "Rules the code keeps").

A long function is allowed when a plain comment (`// …`, not a doc comment) in the three
lines above its `fn` line says why it is long, with the word "long" in it. Test code is
left out: files named tests.rs or proptests.rs, and an inline `#[cfg(test)] mod … { … }`
(from there to the end of the file, where rustfmt'd code keeps it).

    python3 ci/long-functions.py            # check src/
    python3 ci/long-functions.py --limit 60 # list what is over 60 lines, without failing

It reads the code as text: braces inside strings and character literals are skipped, which
is enough for this code base (rustfmt-formatted); it is a guard, not a parser.
"""

import argparse
import os
import re
import sys

FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")
STRING = re.compile(r'"(\\.|[^"\\])*"')
CHAR = re.compile(r"b?'(\\.|[^'\\])'")
COMMENT = re.compile(r"//.*")
INLINE_MOD = re.compile(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
REASON = re.compile(r"^\s*//[^/!].*\blong\b", re.IGNORECASE)


def code_lines(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "#[cfg(test)]" and INLINE_MOD.match(lines[i + 1]):
            return lines[:i]
    return lines


def braces(line):
    s = COMMENT.sub("", CHAR.sub("''", STRING.sub('""', line)))
    return s.count("{") - s.count("}"), "{" in s


def long_functions(path, limit):
    lines = code_lines(path)
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m or lines[i].strip().startswith("//"):
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            delta, has_open = braces(lines[j])
            depth += delta
            opened = opened or has_open
            if opened and depth <= 0:
                break
            if not opened and lines[j].rstrip().endswith(";"):
                break
            j += 1
        length = j - i + 1
        if opened and length > limit:
            explained = any(REASON.match(line) for line in lines[max(0, i - 3):i])
            yield length, i + 1, m.group(6), explained
        i = j + 1 if opened else i + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("root", nargs="?", default="src")
    args = ap.parse_args()
    unexplained = 0
    for root, _, files in sorted(os.walk(args.root)):
        for name in sorted(files):
            if not name.endswith(".rs") or name in ("tests.rs", "proptests.rs"):
                continue
            path = os.path.join(root, name)
            for length, line, fn, explained in long_functions(path, args.limit):
                note = "says why" if explained else "NO REASON GIVEN"
                print(f"{path}:{line}: fn {fn} is {length} lines ({note})")
                unexplained += not explained
    if unexplained and args.limit == 80:
        sys.exit(f"{unexplained} function(s) over 80 lines without a comment saying why")


if __name__ == "__main__":
    main()
