"""Sphinx extension for the book: serve MathJax from the built site instead of a CDN.

The maths of every page then renders offline (on the build machine, in CI's browser
check, on a laptop without network) and on the published site alike. MathJax 2.7 comes
from the ``jupyter-server-mathjax`` package (the copy the Jupyter project ships; a
dependency of the ``[book]`` extra); its files are found without importing it and the
needed part (about 5 MB) is copied to ``_static/mathjax``. Without the package the book
falls back to Sphinx's default, MathJax 3 from a CDN. The TeX macros of
``mathjax3_config`` (``_config.yml``) are carried over.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

TARGET = "mathjax"  # under _static
CONFIG = "TeX-AMS-MML_HTMLorMML-full"
# What MathJax needs for TeX input and HTML-CSS output with its STIX web fonts (not the
# SVG output, the accessibility maps or the other languages).
KEEP = [
    "MathJax.js",
    "LICENSE",
    "config",
    "jax/input",
    "jax/element",
    "jax/output/HTML-CSS",
    "fonts/HTML-CSS/STIX-Web",
    "extensions",
    "localization/en",
]
SKIP = shutil.ignore_patterns("a11y")


def mathjax_source() -> Path | None:
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    return static if (static / "MathJax.js").is_file() else None


def _configure(app, config) -> None:
    if mathjax_source() is None:
        return
    macros = ((config.mathjax3_config or {}).get("tex") or {}).get("macros", {})
    config.mathjax_path = f"{TARGET}/MathJax.js?config={CONFIG}"
    config.mathjax2_config = {
        # Only the elements MyST marks as maths (the rest of a page is tex2jax_ignore).
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": False,
            "processEnvironments": False,
            "processRefs": False,
            "processClass": "tex2jax_process|mathjax_process|math|output_area",
        },
        "TeX": {"Macros": macros, "equationNumbers": {"autoNumber": "none"}},
        "HTML-CSS": {
            "availableFonts": [],
            "preferredFont": None,
            "webFont": "STIX-Web",
            "imageFont": None,
        },
        "showMathMenu": False,
        "messageStyle": "none",
    }
    config.mathjax3_config = None


def _copy(app, exception) -> None:
    source = mathjax_source()
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / TARGET
    for part in KEEP:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, ignore=SKIP, dirs_exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def setup(app):
    app.connect("config-inited", _configure, priority=900)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
