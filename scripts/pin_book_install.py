"""Point every chapter's install cell at this release: ``<repository url>@v<version>``.

The repository address is one setting, ``repository.url`` in ``_config.yml`` (also the Colab and
source buttons); the version is ``cpsc_lite.__version__``. Run after changing either, then tag the
release (``git tag v<version> && git push --tags``) so that Colab readers install the package the
pages were built with. ``--check`` only reports chapters that differ (a test runs it).

    python scripts/pin_book_install.py [--check]
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r'url = "cpsc-lite\[viz\] @ git\+[^"]*"')


def install_url() -> str:
    sys.path.insert(0, str(ROOT))
    from cpsc_lite import __version__

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"][
        "url"
    ].rstrip("/")
    return f"cpsc-lite[viz] @ git+{repo}@v{__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    wanted = f'url = "{install_url()}"'
    stale = []
    for path in sorted((ROOT / "book").glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text())
        changed = False
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            if (
                cell["cell_type"] == "code"
                and PATTERN.search(text)
                and wanted not in text
            ):
                cell["source"] = PATTERN.sub(wanted, text).splitlines(keepends=True)
                changed = True
        if changed:
            stale.append(path.name)
            if not args.check:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    if stale:
        print(
            ("not pinned to " if args.check else "pinned to ")
            + wanted
            + ": "
            + ", ".join(stale)
        )
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
