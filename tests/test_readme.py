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
    assert test_cmd in ci.splitlines(), "the README's test command must appear verbatim in .ci/run"


def test_demo_command_exists():
    from cpsc_lite.cli import build_parser
    args = build_parser().parse_args(["demo", "--out", "x"])
    assert args.command == "demo"
