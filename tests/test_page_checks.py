"""scripts/check_book_pages.py's browser probe on a small page made here: a code cell wider than
its column is reported, one that fits is not. Needs Chromium (skipped without it)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import check_book_pages  # noqa: E402

pytestmark = pytest.mark.skipif(
    check_book_pages.find_chromium() is None, reason="chromium not installed"
)

PAGE = """<!doctype html><html><head><title>t</title><style>
div.cell_input pre {{ width: 500px; font: 12px monospace; overflow-x: auto; }}
</style></head><body>
<div class="cell_input"><pre>{fits}</pre></div>
<div class="cell_input"><pre>{wide}</pre></div>
</body></html>"""


def test_a_code_cell_wider_than_its_column_is_reported(tmp_path):
    html_dir = tmp_path / "html"
    (html_dir / "book").mkdir(parents=True)
    wide = "x = " + "'too wide' + " * 12 + "''"
    (html_dir / "book" / "page.html").write_text(
        PAGE.format(fits="y = 1  # fits", wide=wide)
    )
    server = check_book_pages.serve(html_dir)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        problems, report = check_book_pages.check_page(
            check_book_pages.find_chromium(), base, html_dir, "book/page"
        )
    finally:
        server.shutdown()
    assert report["code_cells"] == 2
    assert report["wide_code"] == [wide[:60]]
    assert any("scroll sideways" in p for p in problems), problems
