"""One linter, one formatter and one line length for the package, tests, scripts and the book's
notebooks (``[tool.ruff]`` in pyproject.toml, ``book/ruff.toml``): unused or undefined names,
pycodestyle errors, and code laid out as ``ruff format`` lays it out."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff():
    try:
        import ruff  # noqa: F401  (the test extra installs it)

        return [sys.executable, "-m", "ruff"]
    except ImportError:
        path = shutil.which("ruff")
        if path is None:
            pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
        return [path]


def test_ruff_finds_nothing():
    proc = subprocess.run(
        [*_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_code_is_formatted_by_ruff_format():
    proc = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, "run `ruff format .`:\n" + proc.stdout + proc.stderr


def _setting(path: str, name: str) -> str:
    shown = subprocess.run(
        [*_ruff(), "check", "--show-settings", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    return next(
        line.split("=", 1)[1].strip()
        for line in shown.splitlines()
        if line.startswith(name + " ")
    )


def test_one_line_length_and_the_book_keeps_strings_and_comments_to_it():
    # the formatter's width is the same everywhere; only the package may leave a string or comment
    # the formatter cannot break longer, the chapters' cells must fit the page's code column
    assert _setting("cpsc_lite/distill.py", "formatter.line_width") == "88"
    assert _setting("book/06_full_loop.ipynb", "formatter.line_width") == "88"
    assert (
        _setting("book/06_full_loop.ipynb", "linter.pycodestyle.max_line_length")
        == "88"
    )
    assert (
        _setting("cpsc_lite/distill.py", "linter.pycodestyle.max_line_length") == "120"
    )


def test_ruff_checks_notebooks_and_would_catch_an_unused_import(tmp_path):
    """The check is real: the configuration includes notebooks, and a planted problem is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    proc = subprocess.run(
        [
            *_ruff(),
            "check",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            str(bad),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "F401" in proc.stdout
    listed = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--show-files", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "06_full_loop.ipynb" in listed and "cpsc_lite/distill.py" in listed
    assert "student_notebooks/" not in listed  # generated from the chapters
