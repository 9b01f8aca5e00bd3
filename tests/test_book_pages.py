"""The built book in a real browser: every chapter's figures load and are non-empty.

Skipped unless the book has been built (``bash scripts/build_book.sh`` -> ``_build/html``)
and Debian's Chromium is installed (``apt-get install -y chromium``). CI runs
``scripts/check_book_pages.py`` directly after building; this test lets a developer
run the same check through pytest.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import check_book_pages  # noqa: E402
import check_build  # noqa: E402

BUILT = (ROOT / "_build" / "html" / "book" / "intro.html").exists()

pytestmark = [
    pytest.mark.skipif(not BUILT, reason="book not built (run scripts/build_book.sh)"),
    pytest.mark.skipif(
        check_book_pages.find_chromium() is None, reason="chromium not installed"
    ),
]


def test_build_has_every_chapter_executed():
    assert check_build.problems(ROOT / "_build") == []


def test_every_chapter_renders_its_figures_in_chromium(capsys):
    status = check_book_pages.main(["--build", str(ROOT / "_build")])
    out = capsys.readouterr()
    assert status == 0, out.out + out.err
