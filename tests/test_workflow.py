"""The GitHub Actions workflow that publishes the book: it cannot run here, so its structure is checked."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _workflow():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def test_workflow_builds_with_the_ci_script_and_publishes_only_main():
    wf = _workflow()
    assert set(wf["on"]) >= {"push", "pull_request"} and wf["on"]["push"][
        "branches"
    ] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    assert "bash .ci/run" in runs, "the workflow must call the same script as CI"
    assert (ROOT / ".ci" / "run").exists()
    upload = [
        s
        for s in build["steps"]
        if s.get("uses", "").startswith("actions/upload-pages-artifact")
    ]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert (
        "github.event_name == 'push'" in deploy["if"]
        and "refs/heads/main" in deploy["if"]
    )
    assert any(
        s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"]
    )
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    # the build job (and pull requests) cannot write
    assert wf["permissions"] == {"contents": "read"}
    assert build["timeout-minutes"] <= 90


def test_ci_script_finds_a_browser_from_the_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    assert '[ -n "${CHROMIUM:-}" ]' in ci
    assert _workflow()["jobs"]["build"]["env"]["CHROMIUM"]
