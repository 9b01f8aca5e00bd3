"""The README's two set-up commands stay true: CI runs the test one verbatim, the CLI has the demo."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks():
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = [b for b in _bash_blocks() if b.startswith("python3 -m venv .venv")]
    assert len(setup) == 2, setup
    main_cmd, test_cmd = setup
    assert "cpsc-lite demo" in main_cmd
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), (
        "the README's test command must appear verbatim in .ci/run"
    )


def test_demo_command_exists():
    from cpsc_lite.cli import build_parser

    args = build_parser().parse_args(["demo", "--out", "x"])
    assert args.command == "demo"


def test_python_api_imports_exist():
    """Every name the README's Python API block imports is where it says (the block follows the modules)."""
    import importlib

    block = re.search(
        r"## Python API\n\n```python\n(.*?)```",
        (ROOT / "README.md").read_text(),
        flags=re.S,
    ).group(1)
    imports = re.findall(
        r"^from (cpsc_lite[\w.]*) import (.+?)(?:\s+#.*)?$", block, flags=re.M
    )
    assert len(imports) >= 6, block
    for module, names in imports:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"README: {module} has no {name}"


def test_layout_block_names_every_module():
    block = re.search(
        r"## Layout\n.*?```\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S
    ).group(1)
    modules = {p.name for p in (ROOT / "cpsc_lite").glob("*.py")} - {
        "__init__.py",
        "__main__.py",
    }
    missing = sorted(m for m in modules if m not in block)
    assert not missing, f"README's layout block does not mention {missing}"
