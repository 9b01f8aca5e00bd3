#!/usr/bin/env python3
"""The whole book as one PDF, made from the built HTML pages, offline.

    python scripts/make_pdf.py                   # _build/html -> _build/html/cpsc-dfkd-book.pdf
    python scripts/make_pdf.py --out book.pdf

Jupyter Book's own ``pdfhtml`` builder downloads a browser at build time, which fails without a
network, and its LaTeX builder needs a TeX installation. This script uses the same headless
Chromium as ``check_book_pages.py``: it serves ``_build/html`` on 127.0.0.1, prints every page
of ``_toc.yml`` in order with the pages' own print style (maths rendered by the MathJax the
build serves, figures as executed, exercises' solutions folded), and joins the pages into one
file with a bookmark per page (pypdf, in the ``[book]`` extra). Build the book first
(``bash scripts/build_book.sh``). Exit status: 0 written, 2 Chromium, pypdf or the build is
missing, 1 a page could not be printed.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_book_pages import FLAGS, ROOT, browser_and_build, serve  # noqa: E402
from check_build import toc_files  # noqa: E402

NAME = "cpsc-dfkd-book.pdf"


def page_title(html_file: Path) -> str:
    """The page's title without the site name Sphinx appends (``Title — Book``)."""
    match = re.search(r"<title>(.*?)</title>", html_file.read_text(), flags=re.S)
    title = html.unescape(match.group(1)) if match else html_file.stem
    return re.split(r"\s+[—–]\s+", " ".join(title.split()))[0]


def print_page(binary: str, url: str, out: Path, timeout: int = 120) -> bool:
    cmd = [
        binary,
        *FLAGS,
        "--virtual-time-budget=8000",
        "--no-pdf-header-footer",
        f"--print-to-pdf={out}",
        url,
    ]
    subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out.exists() and out.stat().st_size > 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=ROOT / "_build")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"default: BUILD/html/{NAME}"
    )
    parser.add_argument(
        "--pages", nargs="*", default=None, help="only these toc entries"
    )
    args = parser.parse_args(argv)
    html_dir = args.build / "html"
    out = args.out or html_dir / NAME
    try:
        from pypdf import PdfWriter
    except ImportError:
        print(
            "pypdf is missing: pip install -e '.[book]' (or pip install pypdf)",
            file=sys.stderr,
        )
        return 2
    binary, problem = browser_and_build(html_dir)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    pages = args.pages or toc_files()
    server = serve(html_dir)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    writer, failed = PdfWriter(), []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, entry in enumerate(pages):
                part = Path(tmp) / f"{i:03d}.pdf"
                if not print_page(binary, f"{base}/{entry}.html", part):
                    failed.append(entry)
                    continue
                start = len(writer.pages)
                writer.append(str(part))
                title = page_title(html_dir / f"{entry}.html")
                writer.add_outline_item(title=title, page_number=start)
            if failed:
                for entry in failed:
                    print(f"FAIL: {entry} could not be printed", file=sys.stderr)
                return 1
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_suffix(".pdf.partial")
            with open(partial, "wb") as f:
                writer.write(f)
            partial.replace(out)  # a reader never sees half a file
    finally:
        server.shutdown()
    print(f"wrote {out}: {len(writer.pages)} pages from {len(pages)} book pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
