"""Sphinx extension for the book: load the ipywidgets HTML manager from the built site.

Pages with widgets load RequireJS and ``@jupyter-widgets/html-manager``, which draw
every widget from the state saved in the page, including the figure an output widget
showed when the book was built. myst-nb takes both from a CDN by default. When local
copies are in ``book/_static/widgets/`` (``python scripts/fetch_widget_js.py``; the
folder is part of ``html_static_path``, so Sphinx copies it into the site), the pages
load those instead and show their widgets without a network. Without the copies the
pages keep myst-nb's CDN default.
"""

from __future__ import annotations

from pathlib import Path

WIDGETS = Path(__file__).resolve().parent.parent / "_static" / "widgets"
FILES = ("require.js", "embed-amd.js")  # in this order: the manager is an AMD module


def local_copies(folder: Path | None = None) -> bool:
    folder = WIDGETS if folder is None else folder
    return all((folder / name).is_file() for name in FILES)


def _configure(app, config) -> None:
    if not local_copies():
        return
    # paths relative to _static; no CDN attribute: nothing comes from outside the site
    config.nb_ipywidgets_js = {f"widgets/{name}": {} for name in FILES}


def setup(app):
    app.connect("config-inited", _configure, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
