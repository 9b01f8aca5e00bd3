#!/usr/bin/env python3
"""Remove outputs, execution counts and saved widget state from notebooks, in place.

    python scripts/strip_notebooks.py                  # every notebook in book/ and student_notebooks/
    python scripts/strip_notebooks.py PATH.ipynb ...   # just these
    python scripts/strip_notebooks.py --check          # exit 1 if any notebook still has outputs

Committed notebooks carry no outputs: the book's build executes them, and diffs
stay readable. ``tests/test_book_notebooks.py`` enforces it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_student_notebooks import BOOK, STUDENT, clear_outputs, dumps  # noqa: E402


def notebooks() -> list[Path]:
    return sorted(BOOK.glob("*.ipynb")) + sorted(STUDENT.glob("*.ipynb"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or notebooks():
        text = path.read_text(encoding="utf-8")
        clean = dumps(clear_outputs(json.loads(text)))
        if clean != text:
            dirty.append(str(path))
            if not args.check:
                path.write_text(clean, encoding="utf-8")
    if args.check and dirty:
        print(
            "notebooks with outputs or unnormalised JSON: "
            + ", ".join(dirty)
            + "\nrun: python scripts/strip_notebooks.py",
            file=sys.stderr,
        )
        return 1
    print(
        ("would strip: " if args.check else "stripped: ")
        + (", ".join(dirty) or "nothing to do")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
