#!/usr/bin/env python3
"""Local copies of the JavaScript that shows the book's widgets on the static pages.

    python scripts/fetch_widget_js.py          # -> book/_static/widgets/ (git-ignored)
    python scripts/fetch_widget_js.py --check  # only say whether the copies are there

Pages with ipywidgets (the sliders of chapters 5 and 6) load RequireJS and the ipywidgets HTML
manager, which draws each widget from the state saved in the page (with the figure it showed
when the book was built). By default the pages load both from a CDN, so without a network the
widgets stay blank. This script fetches the same versions that myst-nb would load
(``myst_nb``'s defaults) with ``npm pack`` from the npm registry, an install step like
``pip install``, and keeps the files the manager needs. When they are present, the book's
extension ``book/_ext/offline_widgets.py`` points the pages at them and the build itself stays
offline. Needs ``npm``. Exit status: 0 present, 1 missing (``--check``), 2 npm failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "book" / "_static" / "widgets"
# what the pages load; the icon fonts the manager refers to sit next to it
FILES = ("require.js", "embed-amd.js")
KEEP_SUFFIXES = (".woff", ".woff2", ".ttf", ".eot", ".svg", "LICENSE.txt")


def default_versions() -> tuple[str, str]:
    """(RequireJS, HTML manager) versions of the CDN URLs myst-nb puts into widget pages."""
    from myst_nb.core.config import ipywidgets_js_factory

    urls = " ".join(ipywidgets_js_factory())
    return parse_versions(urls)


def parse_versions(urls: str) -> tuple[str, str]:
    require = re.search(r"require\.js/(\d+\.\d+\.\d+)/", urls)
    manager = re.search(r"@jupyter-widgets/html-manager@(\d+\.\d+\.\d+)/", urls)
    if not (require and manager):
        raise ValueError(
            f"cannot find the RequireJS and html-manager versions in {urls!r}"
        )
    return require.group(1), manager.group(1)


def present(dest: Path = DEST) -> bool:
    return all(
        (dest / name).is_file() and (dest / name).stat().st_size > 0 for name in FILES
    )


def unpack(require_tgz: Path, manager_tgz: Path, dest: Path) -> None:
    """Keep RequireJS, the manager's AMD bundle, the icon fonts it refers to and its licence
    notice (not the other bundles, their chunks or the source maps)."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(require_tgz) as tar:
        member = tar.getmember("package/require.js")
        (staging / "require.js").write_bytes(tar.extractfile(member).read())
    with tarfile.open(manager_tgz) as tar:
        for member in tar.getmembers():
            name = member.name
            keep = Path(name).name == "embed-amd.js" or name.endswith(KEEP_SUFFIXES)
            if member.isfile() and name.startswith("package/dist/") and keep:
                (staging / Path(name).name).write_bytes(tar.extractfile(member).read())
    if not present(staging):
        raise RuntimeError(f"the npm packages did not contain {', '.join(FILES)}")
    shutil.rmtree(dest, ignore_errors=True)
    staging.replace(dest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check or present(args.dest):
        ok = present(args.dest)
        print(f"widget JavaScript {'present' if ok else 'missing'} in {args.dest}")
        return 0 if ok else 1
    npm = shutil.which("npm")
    if npm is None:
        print(
            "npm not found: install Node.js (e.g. apt-get install -y npm), then run this again",
            file=sys.stderr,
        )
        return 2
    require, manager = default_versions()
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"requirejs@{require}", f"@jupyter-widgets/html-manager@{manager}"]
        proc = subprocess.run(
            [npm, "pack", "--silent", *specs], cwd=tmp, capture_output=True, text=True
        )
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 2:
            print(f"npm pack {' '.join(specs)} failed:\n{proc.stderr}", file=sys.stderr)
            return 2
        req = next(t for t in tarballs if t.name.startswith("requirejs"))
        man = next(t for t in tarballs if t is not req)
        unpack(req, man, args.dest)
    print(
        f"RequireJS {require} and @jupyter-widgets/html-manager {manager} in {args.dest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
