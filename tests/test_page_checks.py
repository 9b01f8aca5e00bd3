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


def test_make_pdf_joins_the_pages_in_toc_order_with_a_bookmark_each(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    import make_pdf

    html_dir = tmp_path / "_build" / "html"
    (html_dir / "book").mkdir(parents=True)
    for name, title in (("a", "1. First"), ("b", "2. Second")):
        (html_dir / "book" / f"{name}.html").write_text(
            f"<html><head><title>{title} &#8212; The book</title></head>"
            f"<body><h1>{title}</h1><p>text</p></body></html>"
        )
    out = tmp_path / "book.pdf"
    status = make_pdf.main(
        [
            "--build",
            str(tmp_path / "_build"),
            "--out",
            str(out),
            "--pages",
            "book/b",
            "book/a",
        ]
    )
    assert status == 0 and out.exists()
    reader = pypdf.PdfReader(str(out))
    assert len(reader.pages) == 2
    assert [o.title for o in reader.outline] == ["2. Second", "1. First"]
    assert "Second" in reader.pages[0].extract_text()
    assert not out.with_suffix(".pdf.partial").exists()
    missing = make_pdf.main(["--build", str(tmp_path / "nothing"), "--out", str(out)])
    assert missing == 2


def test_a_widget_the_manager_did_not_draw_is_reported(tmp_path):
    view = '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "m"}</script>'
    html_dir = tmp_path / "html"
    (html_dir / "book").mkdir(parents=True)
    (html_dir / "book" / "page.html").write_text(
        "<!doctype html><html><head><title>t</title></head><body>"
        f'<div><div class="jupyter-widgets">drawn</div>{view}</div>'
        f"<div>{view}</div></body></html>"
    )
    server = check_book_pages.serve(html_dir)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        problems, report = check_book_pages.check_page(
            check_book_pages.find_chromium(), base, html_dir, "book/page"
        )
    finally:
        server.shutdown()
    assert report["widgets"] == 2 and report["blank_widgets"] == 1
    assert any("1 of 2 widget(s) were not drawn" in p for p in problems), problems


def test_the_build_check_finds_what_a_textbook_page_must_not_show():
    """Version strings and issue numbers in prose, printed glue lines, the build machine's paths, and
    an experiments chapter past its length; prose inside code does not count."""
    import check_build

    cell = '<div class="cell_output docutils container"><div class="output stream">{}</div></div>'
    good = (
        "<main><p>The student reaches 98 % (cpsc_lite.methods.cpsc).</p>"
        "<pre>pip install cpsc-lite==0.11.0</pre>" + cell.format("acc 0.98") + "</main>"
    )
    assert check_build.textbook_problems("book/06_full_loop", good) == []
    bad = (
        "<main><p>Since 0.9.0, as issue 11 asked, the defaults changed.</p>"
        + cell.format("ch7_cmi_diff = 1.2\ncache: /tmp/bookcache")
        + "</main>"
    )
    found = " ".join(check_build.textbook_problems("book/06_full_loop", bad))
    assert "package version: 0.9.0" in found and "issue number: issue 11" in found
    assert "glued variable" in found and "/tmp/" in found
    long = "<main><p>" + "word " * 3001 + "</p></main>"
    assert "3001 words" in " ".join(
        check_build.textbook_problems("book/07_experiments", long)
    )
    assert check_build.textbook_problems("book/06_full_loop", long) == []
