#!/usr/bin/env python3
"""Write the student versions of the book's chapters: solutions removed.

The book's notebooks (``book/*.ipynb``) mark every solution cell with the cell
tag ``solution``. This script copies each chapter to ``student_notebooks/`` with
those cells removed and all outputs cleared, and puts a one-line note at the top.

    python scripts/make_student_notebooks.py           # (re)write student_notebooks/
    python scripts/make_student_notebooks.py --check   # exit 1 if they are out of date

``tests/test_book_notebooks.py`` runs the check, so a chapter edited without
regenerating its student version fails the tests. Only the standard library is
used, so the check runs wherever the tests run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
STUDENT = ROOT / "student_notebooks"
SOLUTION_TAG = "solution"

NOTE = (
    "**Student version.** The solutions to the exercises are removed from this copy; the book's "
    "version of this chapter has them."
)


def chapters(book: Path = BOOK) -> list[Path]:
    """The book's chapter notebooks (numbered files ``NN_*.ipynb``)."""
    return sorted(p for p in book.glob("[0-9][0-9]_*.ipynb"))


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell: dict) -> bool:
    return SOLUTION_TAG in tags(cell)


def clear_outputs(nb: dict) -> dict:
    """Outputs, execution counts, execution timing metadata and saved widget state removed (a copy)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def student_version(nb: dict) -> dict:
    """The notebook without its solution cells and outputs, with a note cell first."""
    nb = clear_outputs(nb)
    note = {
        "cell_type": "markdown",
        "id": "student-version-note",
        "metadata": {"tags": ["student-note"]},
        "source": [NOTE],
    }
    nb["cells"] = [note] + [c for c in nb["cells"] if not is_solution(c)]
    return nb


def dumps(nb: dict) -> str:
    """Serialise as Jupyter does (nbformat's writer: indent 1, sorted keys, UTF-8)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(book: Path = BOOK) -> dict[str, str]:
    """File name -> text of every student notebook the current chapters imply."""
    out = {}
    for path in chapters(book):
        nb = json.loads(path.read_text(encoding="utf-8"))
        out[path.name] = dumps(student_version(nb))
    return out


def out_of_date(book: Path = BOOK, student: Path = STUDENT) -> list[str]:
    """Names of student notebooks that are missing, stale, or have no chapter any more."""
    want = expected_files(book)
    have = {p.name for p in student.glob("*.ipynb")} if student.is_dir() else set()
    stale = [
        name
        for name, text in want.items()
        if not (student / name).exists()
        or (student / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + sorted(have - set(want)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether student_notebooks/ is up to date",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = out_of_date()
        if stale:
            print(
                "student notebooks out of date: "
                + ", ".join(stale)
                + "\nrun: python scripts/make_student_notebooks.py",
                file=sys.stderr,
            )
            return 1
        print(f"student notebooks up to date ({len(chapters())} chapters)")
        return 0
    STUDENT.mkdir(exist_ok=True)
    want = expected_files()
    for name, text in want.items():
        (STUDENT / name).write_text(text, encoding="utf-8")
    for path in STUDENT.glob("*.ipynb"):
        if path.name not in want:
            path.unlink()
    print(f"wrote {len(want)} student notebooks to {STUDENT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
