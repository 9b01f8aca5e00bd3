#!/usr/bin/env python3
"""Fail unless every chapter of the built book executed cleanly.

    python scripts/check_build.py [BUILD_DIR]      # default: _build

Checks, for every page listed in ``_toc.yml``:

* its HTML page exists;
* for notebooks: the page shows the output of the set-up cell (``bc.setup`` prints
  ``device ... ; profile ...``), so the notebook was really executed, not just rendered;
* no cell output on the page is an error traceback;
* myst-nb wrote no execution failure report (``BUILD_DIR/html/reports/*``);
* a chapter reads as a textbook: its prose names no package version (``0.9.0``) and no issue
  (``issue 11``), no cell prints a glued variable (``name = value`` lines are for readers outside
  the book) or a path of the machine that built it, and the experiments chapter stays under
  :data:`MAX_WORDS` words of prose (``book/appendix_defaults`` holds how the defaults were chosen).

``scripts/build_book.sh`` runs it after ``jupyter-book build``.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What bookcache.setup() prints first: "device cpu (CPU ...); profile 'quick': ..."
SETUP_OUTPUT = re.compile(
    r"device \S+ \(.*?\); profile &#39;\w+&#39;|device \S+ \(.*?\); profile '\w+'"
)
#: Chapters (the numbered part of the book) and the prose limit of the experiments chapter.
CHAPTER = re.compile(r"book/\d\d_")
MAX_WORDS = {"book/07_experiments": 3000}
VERSION = re.compile(r"(?<![\w.])(?:v)?0\.\d{1,2}\.\d(?![\w.])")
ISSUE = re.compile(r"\bissue (?:#)?\d+", re.I)
GLUE_PRINT = re.compile(r"^\s*ch\d_\w+ = ", re.M)
MACHINE_PATHS = ("/tmp/", "/root/", "/home/", "/work/", "_cache/")


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
        if CHAPTER.match(entry):
            found += [f"{entry}: {p}" for p in textbook_problems(entry, text)]
    return found


def _prose_and_outputs(page: str) -> tuple[str, str]:
    """The visible prose of a built page (its paragraphs, list items, headings, admonitions: no
    code cells, outputs or navigation) and the text of its cell outputs."""
    body = re.split(r"<main\b[^>]*>", page, maxsplit=1)[-1].split("</main>", 1)[0]
    outputs = " ".join(
        re.findall(r'<div class="cell_output[^"]*".*?</div>\s*</div>', body, flags=re.S)
    )
    body = re.sub(r'<div class="cell_input.*?</div>\s*</div>', " ", body, flags=re.S)
    body = re.sub(r'<div class="cell_output.*?</div>\s*</div>', " ", body, flags=re.S)
    body = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", body, flags=re.S)
    strip = lambda t: html.unescape(re.sub(r"<[^>]+>", " ", t))  # noqa: E731
    return strip(body), strip(outputs)


def textbook_problems(entry: str, page: str) -> list[str]:
    prose, outputs = _prose_and_outputs(page)
    found = []
    for name, pattern in (("a package version", VERSION), ("an issue number", ISSUE)):
        hits = sorted(set(pattern.findall(prose)))
        if hits:
            found.append(f"its prose names {name}: {', '.join(hits[:5])}")
    if GLUE_PRINT.search(outputs):
        found.append("a cell prints a glued variable (name = value)")
    paths = [p for p in MACHINE_PATHS if p in outputs]
    if paths:
        found.append(f"a cell prints a path of the build machine ({', '.join(paths)})")
    limit = MAX_WORDS.get(entry)
    words = len(prose.split())
    if limit and words > limit:
        found.append(f"{words} words of prose, more than {limit}")
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
