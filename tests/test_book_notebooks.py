"""The book's notebooks as files: stripped, structured, in sync with the student versions.

Fast, standard library + pyyaml only: no notebook is executed here (scripts/build_book.sh does that).
"""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import make_student_notebooks as students  # noqa: E402

BOOK = ROOT / "book"
CHAPTERS = students.chapters()
ALL_NOTEBOOKS = sorted(BOOK.glob("*.ipynb")) + sorted(
    (ROOT / "student_notebooks").glob("*.ipynb")
)


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def markdown(nb):
    return "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")


def code(nb):
    return "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "code")


def toc_entries():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    for part in toc["parts"]:
        entries += [c["file"] for c in part["chapters"]]
    return entries


def test_there_are_eight_chapters_and_all_are_in_the_toc():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(1, 9)]
    entries = toc_entries()
    for path in CHAPTERS:
        assert f"book/{path.stem}" in entries, f"{path.name} is not in _toc.yml"
    for entry in entries:
        assert (ROOT / f"{entry}.ipynb").exists() or (ROOT / f"{entry}.md").exists(), (
            entry
        )


@pytest.mark.parametrize(
    "path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_committed_notebooks_have_no_outputs(path):
    nb = load(path)
    for i, cell in enumerate(nb["cells"]):
        assert "execution" not in cell.get("metadata", {}), (
            f"cell {i} keeps execution timing metadata"
        )
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], (
                f"cell {i} has outputs: run python scripts/strip_notebooks.py"
            )
            assert cell["execution_count"] is None, f"cell {i} has an execution count"
    assert "widgets" not in nb.get("metadata", {}), (
        "saved widget state: run python scripts/strip_notebooks.py"
    )


def test_student_notebooks_are_in_sync_with_the_book():
    # The committed student versions must equal what the script makes from the current chapters:
    # editing a chapter without regenerating them fails here, with the command to fix it.
    stale = students.out_of_date()
    assert not stale, (
        f"out of date: {stale}; run python scripts/make_student_notebooks.py"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_version_drops_exactly_the_solutions(path):
    book_nb = load(path)
    student_nb = students.student_version(book_nb)
    kept = [
        c["id"]
        for c in book_nb["cells"]
        if "solution" not in c.get("metadata", {}).get("tags", [])
    ]
    assert [c["id"] for c in student_nb["cells"][1:]] == kept
    assert "{solution}" not in markdown(student_nb)
    assert sum(students.is_solution(c) for c in book_nb["cells"]) >= 2, (
        "each chapter has solved exercises"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_structure(path):
    nb = load(path)
    cells = nb["cells"]
    first_code = next(c for c in cells if c["cell_type"] == "code")
    text = source(first_code)
    # First cell: install from the repository only when the package is missing; leave torch alone.
    assert 'find_spec("cpsc_lite") is None' in text
    assert "cpsc-lite[viz] @ git+https://github.com/cpsc-dfkd/cpsc-dfkd" in text
    install = text[text.index('"pip"') : text.index("import torch")]
    assert "torch" not in install, "the install command must not touch torch"
    assert "cuda" in text  # reports the GPU
    # A clearly marked settings cell with the one value to change.
    settings = [
        c
        for c in cells
        if c["cell_type"] == "code"
        and re.search(r'^PROFILE = "quick"', source(c), re.M)
    ]
    assert len(settings) == 1 and "Settings" in source(settings[0])
    assert "bc.setup(PROFILE)" in source(settings[0])
    # Title with a label, Summary then Exercises at the end, every exercise solved.
    assert re.match(r"\(ch-[a-z-]+\)=\n# ", source(cells[0]))
    md = markdown(nb)
    assert md.index("## Summary") < md.index("## Exercises")
    exercises = re.findall(r":label: (\S+)", md)
    solved = re.findall(r"\{solution\} (\S+)", md)
    assert exercises and sorted(exercises) == sorted(solved)
    for cell in cells:
        if "{solution}" in source(cell):
            assert students.is_solution(cell), (
                "a solution cell must carry the 'solution' tag"
            )
            assert ":class: dropdown" in source(cell), (
                "solutions are hidden behind a toggle"
            )


def _glue_keys(nb):
    return set(re.findall(r'bc\.glue\(\s*f?"([^"]+)"', code(nb)))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_glued_number_in_the_prose_is_computed_in_the_chapter(path):
    nb = load(path)
    defined = _glue_keys(nb)
    # f-string keys such as f"ch4_conf_{key}" are expanded by the loops next to them; accept their prefix.
    prefixes = {k.split("{")[0] for k in defined if "{" in k}
    for key in re.findall(r"\{glue:\w+\}`([^`:]+)", markdown(nb)):
        assert key in defined or any(key.startswith(p) for p in prefixes), (
            f"{key} is never glued"
        )


def test_landing_page_glues_exist_in_the_chapters():
    text = (BOOK / "intro.md").read_text()
    refs = re.findall(r"\{glue:\w+\}`([^`]+?)::([^`:]+)", text)
    assert refs
    for doc, key in refs:
        assert key in _glue_keys(load(BOOK / doc)), f"{doc} does not glue {key}"


def test_citations_exist_in_the_bibliography():
    bib = (BOOK / "references.bib").read_text()
    known = set(re.findall(r"@\w+\{([^,]+),", bib))
    texts = [markdown(load(p)) for p in CHAPTERS] + [
        p.read_text() for p in BOOK.glob("*.md")
    ]
    cited = {
        k.strip()
        for t in texts
        for group in re.findall(r"\{cite:\w+\}`([^`]+)`", t)
        for k in group.split(",")
    }
    assert cited, "the book cites nothing?"
    assert cited <= known, f"unknown citation keys: {sorted(cited - known)}"


def test_config_builds_offline_with_colab_buttons_and_excludes():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["repository"]["url"] == "https://github.com/cpsc-dfkd/cpsc-dfkd"
    assert cfg["repository"]["branch"] == "main"
    assert cfg["execute"]["execute_notebooks"] in ("force", "cache")
    assert {"README.md", ".venv", "student_notebooks", "_build"} <= set(
        cfg["exclude_patterns"]
    )
    assert "sphinx_exercise" in cfg["sphinx"]["extra_extensions"]
    assert "sphinx_togglebutton" in cfg["sphinx"]["extra_extensions"]
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"]


def test_published_results_are_labelled_with_their_source():
    import csv

    rows = list(csv.DictReader((ROOT / "data" / "published_results.csv").open()))
    assert rows
    assert {
        "dataset",
        "teacher",
        "student",
        "method",
        "metric",
        "value",
        "source",
        "cite_key",
    } <= set(rows[0])
    for row in rows:
        assert "not ours" in row["source"] and row["cite_key"] == "fang2021cmi"
        float(row["value"])


#: Import name -> distribution name, where they differ.
_DISTRIBUTION = {
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "yaml": "pyyaml",
    "IPython": "ipykernel",
}


def test_install_cells_pin_the_release_and_the_extras_bring_every_import():
    import subprocess

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pin_book_install.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {re.split(r"[<>=\[ ;]", r)[0].lower() for r in reqs}  # noqa: E731
    core, extras = names(project["dependencies"]), project["optional-dependencies"]
    imported = set()
    for path in CHAPTERS:
        for line in code(load(path)).splitlines():
            m = re.match(r"\s*(?:from|import)\s+(\w+)", line)
            if (
                m
                and m.group(1) not in sys.stdlib_module_names
                and m.group(1) != "cpsc_lite"
            ):
                imported.add(_DISTRIBUTION.get(m.group(1), m.group(1)).lower())
    assert imported, "no imports found?"
    # a notebook runs in a kernel already
    colab = core | names(extras["viz"]) | {"ipykernel"}
    assert imported <= colab, (
        f"the install cell's cpsc-lite[viz] lacks {sorted(imported - colab)}"
    )
    assert imported <= core | names(extras["book"]), (
        f"the [book] extra lacks {sorted(imported - core)}"
    )


@pytest.mark.parametrize(
    "path", [*CHAPTERS, ROOT / "book" / "status.ipynb"], ids=lambda p: p.name
)
def test_every_book_runtime_name_a_page_uses_exists(path):
    """``bc.NAME`` in a page's code or prose (exercises included) is in the book runtime; moved
    helpers must not leave a chapter calling a name that is gone."""
    from cpsc_lite import bookcache as bc

    text = "\n".join(source(c) for c in load(path)["cells"])
    missing = sorted(
        {n for n in re.findall(r"\bbc\.([A-Za-z_]\w*)", text) if not hasattr(bc, n)}
    )
    assert not missing, (
        f"{path.name} uses bc.{', bc.'.join(missing)}, which cpsc_lite.bookcache does not have"
    )


def test_the_book_serves_mathjax_itself(tmp_path, monkeypatch):
    """book/_ext/offline_mathjax.py: with a MathJax folder available, the pages load MathJax 2 from
    _static/mathjax (the TeX macros of _config.yml carried over) and the build copies what it needs."""
    import importlib.util
    import types

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["sphinx"]["local_extensions"] == {
        "offline_mathjax": "book/_ext",
        "offline_widgets": "book/_ext",
    }
    spec = importlib.util.spec_from_file_location(
        "offline_mathjax", ROOT / "book" / "_ext" / "offline_mathjax.py"
    )
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    source = tmp_path / "static"
    for name in (
        "MathJax.js",
        "config/TeX-AMS-MML_HTMLorMML-full.js",
        "jax/input/TeX/config.js",
        "extensions/TeX/AMSmath.js",
        "extensions/a11y/big-map.js",
        "jax/output/SVG/fonts.js",
        "localization/de/de.js",
        "localization/en/en.js",
    ):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("//")
    monkeypatch.setattr(ext, "mathjax_source", lambda: source)
    config = types.SimpleNamespace(
        mathjax3_config=cfg["sphinx"]["config"]["mathjax3_config"],
        mathjax_path=None,
        mathjax2_config=None,
    )
    ext._configure(None, config)
    assert config.mathjax_path == "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
    assert config.mathjax2_config["TeX"]["Macros"]["KL"] == "\\operatorname{KL}"
    assert (
        "math" in config.mathjax2_config["tex2jax"]["processClass"]
        and config.mathjax3_config is None
    )
    app = types.SimpleNamespace(
        outdir=str(tmp_path / "html"), builder=types.SimpleNamespace(format="html")
    )
    ext._copy(app, None)
    copied = {
        p.relative_to(tmp_path / "html" / "_static" / "mathjax").as_posix()
        for p in (tmp_path / "html").rglob("*")
        if p.is_file()
    }
    assert copied == {
        "MathJax.js",
        "config/TeX-AMS-MML_HTMLorMML-full.js",
        "jax/input/TeX/config.js",
        "extensions/TeX/AMSmath.js",
        "localization/en/en.js",
    }
    # without the package: Sphinx's default (a CDN)
    monkeypatch.setattr(ext, "mathjax_source", lambda: None)
    config = types.SimpleNamespace(
        mathjax3_config={}, mathjax_path=None, mathjax2_config=None
    )
    ext._configure(None, config)
    assert config.mathjax_path is None and config.mathjax2_config is None


def test_figures_have_numbered_captions_with_unique_names():
    """Cells that draw one figure carry ``mystnb.figure`` metadata (a caption and a name), which
    the book renders as a numbered figure; names must be unique across the book."""
    names = []
    for path in CHAPTERS:
        for cell in load(path)["cells"]:
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
            if figure is None:
                continue
            assert cell["cell_type"] == "code", (path.name, cell.get("id"))
            assert figure.get("caption", "").strip(), (path.name, cell.get("id"))
            assert re.fullmatch(r"fig-ch\d-[a-z0-9-]+", figure.get("name", "")), figure
            draws = ("plt.show()", "compare_grids(", "show_class(")
            assert any(d in source(cell) for d in draws), (
                f"{path.name} {cell.get('id')}: a caption on a cell that draws no figure"
            )
            names.append(figure["name"])
    assert len(names) >= 20 and len(names) == len(set(names)), names
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["sphinx"]["config"].get("numfig", True), "figures are numbered"


def test_the_book_serves_the_widget_manager_itself(tmp_path, monkeypatch):
    """book/_ext/offline_widgets.py: with local copies in book/_static/widgets the widget pages
    load RequireJS and the HTML manager from the site; without them myst-nb's CDN default stays."""
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location(
        "offline_widgets", ROOT / "book" / "_ext" / "offline_widgets.py"
    )
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "book/_static" in cfg["sphinx"]["config"]["html_static_path"]
    assert ext.WIDGETS == ROOT / "book" / "_static" / "widgets"
    cdn = {"https://cdn.example/require.min.js": {}}
    config = types.SimpleNamespace(nb_ipywidgets_js=dict(cdn))
    monkeypatch.setattr(ext, "WIDGETS", tmp_path)
    ext._configure(None, config)
    assert config.nb_ipywidgets_js == cdn  # no copies: unchanged
    for name in ("require.js", "embed-amd.js"):
        (tmp_path / name).write_text("//")
    ext._configure(None, config)
    assert list(config.nb_ipywidgets_js) == [
        "widgets/require.js",
        "widgets/embed-amd.js",
    ]
    assert all(
        not attrs for attrs in config.nb_ipywidgets_js.values()
    )  # no CDN attribute


def test_fetch_widget_js_reads_myst_nb_versions_and_keeps_what_the_pages_need(tmp_path):
    import importlib.util
    import io
    import tarfile

    import fetch_widget_js as fw

    urls = (
        "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js "
        "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js"
    )
    assert fw.parse_versions(urls) == ("2.3.4", "1.0.6")
    with pytest.raises(ValueError, match="versions"):
        fw.parse_versions("https://cdn.example/x.js")
    if importlib.util.find_spec("myst_nb") is not None:  # the [book] extra
        assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in fw.default_versions())

    def tarball(path, files):  # npm pack's format: a gzipped tar with a package/ folder
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    tarball(tmp_path / "r.tgz", {"require.js": b"define", "bin/r.js": b"x"})
    tarball(
        tmp_path / "m.tgz",
        {
            "dist/embed-amd.js": b"amd",
            "dist/embed.js": b"other bundle",
            "dist/330.embed.js": b"chunk",
            "dist/embed-amd.js.map": b"map",
            "dist/abc.woff2": b"font",
            "dist/embed.js.LICENSE.txt": b"licence",
            "README.md": b"readme",
        },
    )
    dest = tmp_path / "widgets"
    fw.unpack(tmp_path / "r.tgz", tmp_path / "m.tgz", dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "abc.woff2",
        "embed-amd.js",
        "embed.js.LICENSE.txt",
        "require.js",
    ]
    assert fw.present(dest) and not fw.present(tmp_path)
    assert fw.main(["--check", "--dest", str(tmp_path / "none")]) == 1
