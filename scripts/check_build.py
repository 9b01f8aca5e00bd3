#!/usr/bin/env python3
"""Fail unless every chapter of the built book executed cleanly.

    python scripts/check_build.py [BUILD_DIR]      # default: _build

Checks, for every page listed in ``_toc.yml``:

* its HTML page exists;
* for notebooks: the page shows the output of the set-up cell (``bc.setup`` prints
  ``cpsc-lite VERSION, torch VERSION, device ...``), so the notebook was really executed, not just rendered;
* no cell output on the page is an error traceback;
* myst-nb wrote no execution failure report (``BUILD_DIR/html/reports/*``).

``scripts/build_book.sh`` runs it after ``jupyter-book build``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What bookcache.setup() prints first: "cpsc-lite 0.1.0, torch 2.x, device cpu ..."
SETUP_OUTPUT = re.compile(r"cpsc-lite \d+\.\d+[^<]*, torch [^<]*, device ")


def toc_files(root: Path = ROOT) -> list[str]:
    """Every ``file:``/``root:`` entry of _toc.yml (paths without suffix)."""
    text = (root / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:-\s*file|root):\s*(\S+)\s*$", text, flags=re.M)


def problems(build: Path, root: Path = ROOT) -> list[str]:
    found = []
    html = build / "html"
    reports = html / "reports"
    if reports.is_dir():
        for report in sorted(reports.iterdir()):
            found.append(
                f"execution report {report.relative_to(build)} (a notebook failed): "
                + report.read_text(errors="replace")[-400:].strip()
            )
    for entry in toc_files(root):
        page = html / f"{entry}.html"
        if not page.exists():
            found.append(f"{entry}: no page {page.relative_to(build)}")
            continue
        text = page.read_text(errors="replace")
        if (root / f"{entry}.ipynb").exists() and not SETUP_OUTPUT.search(text):
            found.append(
                f"{entry}: the set-up cell's output is missing, so the notebook did not execute"
            )
        if (
            re.search(r'class="[^"]*\boutput traceback\b', text)
            or "Traceback (most recent call last)" in text
        ):
            found.append(f"{entry}: a cell output is an error traceback")
    return found


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    build = Path(argv[0]) if argv else ROOT / "_build"
    if not (build / "html").is_dir():
        print(
            f"no built book in {build}/html: run scripts/build_book.sh first",
            file=sys.stderr,
        )
        return 1
    found = problems(build)
    for p in found:
        print("FAIL:", p, file=sys.stderr)
    if found:
        return 1
    print(f"all {len(toc_files())} pages built; every chapter executed without errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
