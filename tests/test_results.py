"""Provenance of runs (sessions in state.pt and metrics.json) and `cpsc-lite record` into data/results/."""

import json

import pytest

from cpsc_lite import reports
import torch

from cpsc_lite import CpscError, __version__
from cpsc_lite.cli import main
from cpsc_lite.results import load_recorded, record_run

TINY = [
    "--iters",
    "4",
    "--batch-size",
    "16",
    "--set",
    "ngf=8",
    "--set",
    "nz=16",
    "--set",
    "eval_every=2",
    "--set",
    "log_every=2",
    "--set",
    "ckpt_every=2",
    "--no-progress",
    "--device",
    "cpu",
]


def _distill(teacher, out, *extra):
    argv = ["distill", "--teacher", teacher, "--out", str(out), *TINY, *extra]
    assert main(argv) == 0
    return "cpsc-lite " + " ".join(argv)


@pytest.fixture(scope="module")
def two_session_run(tmp_path_factory, digits_teacher):
    """A 4-iteration run made in two sessions: --stop-after 2, then --resume."""
    out = tmp_path_factory.mktemp("run") / "r"
    first = _distill(digits_teacher, out, "--stop-after", "2")
    second = _distill(digits_teacher, out, "--resume")
    return out, first, second


def test_every_session_is_recorded_with_its_command_hardware_and_versions(
    two_session_run,
):
    out, first, second = two_session_run
    metrics = json.loads((out / "metrics.json").read_text())
    sessions = metrics["sessions"]
    assert [s["command"] for s in sessions] == [first, second]
    assert [(s["from_iter"], s["to_iter"]) for s in sessions] == [(0, 2), (2, 4)]
    for s in sessions:
        assert s["cpsc_lite"] == __version__ and s["torch"] == torch.__version__
        assert (
            s["device"] == "cpu"
            and s["device_name"].startswith("CPU (")
            and s["world_size"] == 1
        )
        assert s["wall_seconds"] > 0 and s["finished_utc"] >= s["started_utc"]
    assert metrics["wall_seconds"] == pytest.approx(
        sum(s["wall_seconds"] for s in sessions), abs=0.15
    )
    # state.pt carries them too (plain data: loads with weights_only=True), so a killed session is not lost
    state = torch.load(out / "state.pt", weights_only=True)["state"]
    assert [s["command"] for s in state["sessions"]] == [first, second]


def test_record_copies_the_run_and_writes_its_provenance(
    two_session_run, tmp_path, capsys
):
    out, first, second = two_session_run
    into = tmp_path / "results"
    assert main(["record", str(out), "--name", "digits_tiny", "--into", str(into)]) == 0
    dest = into / "digits_tiny"
    assert sorted(p.name for p in dest.iterdir()) == [
        "RUN.md",
        "curves.png",
        "log.jsonl",
        "metrics.json",
        "run.json",
        "samples.png",
    ]
    assert (dest / "log.jsonl").read_bytes() == (out / "log.jsonl").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((dest / "run.json").read_text())
    assert run["commands"] == [first, second]
    assert (
        run["student_acc"] == metrics["student_acc"]
        and run["teacher_acc"] == metrics["teacher_acc"]
    )
    assert run["iters"] == run["planned_iters"] == 4 and run["complete"]
    assert run["wall_seconds"] == pytest.approx(metrics["wall_seconds"], abs=0.15)
    assert run["cpsc_lite_versions"] == [__version__] and run["device_names"][
        0
    ].startswith("CPU")
    text = (dest / "RUN.md").read_text()
    assert (
        first in text
        and second in text
        and f"{100 * metrics['student_acc']:.2f} %" in text
    )
    assert "wrote" in capsys.readouterr().out
    [loaded] = load_recorded(into)
    assert loaded["name"] == "digits_tiny" and loaded["folder"] == str(dest)
    # a second record under the same name needs --overwrite; with it, the record is replaced,
    # but never a file that record did not write
    assert main(["record", str(out), "--name", "digits_tiny", "--into", str(into)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (dest / "stray.txt").write_text("x")
    again = ["record", str(out), "--name", "digits_tiny", "--into", str(into)]
    assert main(again + ["--overwrite"]) == 2
    assert "stray.txt" in capsys.readouterr().err and (dest / "stray.txt").exists()
    (dest / "stray.txt").unlink()
    (dest / "RUN.md").write_text("edited")
    assert (
        main(
            [
                "record",
                str(out),
                "--name",
                "digits_tiny",
                "--into",
                str(into),
                "--overwrite",
            ]
        )
        == 0
    )
    assert (dest / "RUN.md").read_text() != "edited" and (dest / "run.json").exists()
    # no temporary folders left behind
    assert [p.name for p in into.iterdir()] == ["digits_tiny"]


def test_record_refuses_what_it_cannot_vouch_for(
    tmp_path, digits_teacher, two_session_run
):
    out, _, _ = two_session_run
    with pytest.raises(CpscError, match="no metrics.json"):
        record_run(str(tmp_path), "x", into=str(tmp_path / "res"))
    with pytest.raises(CpscError, match="folder name"):
        record_run(str(out), "../escape", into=str(tmp_path / "res"))
    partial = tmp_path / "partial"
    _distill(digits_teacher, partial, "--stop-after", "2")
    with pytest.raises(CpscError, match="unfinished run .*--partial"):
        record_run(str(partial), "p", into=str(tmp_path / "res"))
    dest = record_run(str(partial), "p", into=str(tmp_path / "res"), partial=True)
    run = json.loads((dest / "run.json").read_text())
    assert not run["complete"] and "PARTIAL" in (dest / "RUN.md").read_text()
    old = tmp_path / "old"  # a run written before sessions were kept
    old.mkdir()
    for name in ("log.jsonl", "samples.png"):
        (old / name).write_bytes((out / name).read_bytes())
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["sessions"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(CpscError, match="no session records.*--resume"):
        record_run(str(old), "old", into=str(tmp_path / "res"))


def test_load_recorded_without_results_is_empty(tmp_path):
    assert load_recorded(tmp_path / "nothing") == []


def test_the_book_shows_recorded_runs_from_their_files(
    two_session_run, tmp_path, monkeypatch
):
    pytest.importorskip("pandas")  # the book's extras, not the tests'
    ipd = pytest.importorskip("IPython.display")

    shown = []
    monkeypatch.setattr(ipd, "display", lambda *objs: shown.extend(objs))
    monkeypatch.setenv("CPSC_RESULTS_DIR", str(tmp_path / "results"))
    assert reports.recorded_runs_report() == []
    assert "No full-scale run has been recorded yet" in shown[0].data
    out, first, second = two_session_run
    record_run(str(out), "digits_tiny", into=str(tmp_path / "results"))
    shown.clear()
    [run] = reports.recorded_runs_report()
    html = shown[1].to_html()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        "digits_tiny" in html
        and f"{100 * metrics['student_acc']:.2f}" in html
        and "4 of 4" in html
    )
    assert first in shown[2].data and second in shown[2].data
    # samples.png and curves.png
    assert sum(isinstance(o, ipd.Image) for o in shown) == 2


def _tables_of(dataset):
    """A data set's benchmark tables in data/bench: its main table and its equal-compute ones."""
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "data" / "bench"
    folders = [bench / dataset, *sorted((bench / f"{dataset}_compute").glob("*"))]
    return [f for f in folders if (f / "results.json").is_file()]


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_every_table_of_a_data_set_has_one_teacher_and_one_version(dataset):
    """The experiments chapter compares rows across a data set's tables: they must come from the
    same teacher (the same training record, copied beside each table) and the same package."""
    folders = _tables_of(dataset)
    if not folders:
        pytest.skip(f"no {dataset} tables in data/bench")
    versions, teachers = set(), set()
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        teacher = json.loads((folder / "teacher_metrics.json").read_text())
        assert results["dataset"] == dataset, folder
        assert results["teacher"]["test_acc"] == teacher["test_acc"], folder
        versions.add(results["package_version"])
        teachers.add(json.dumps(teacher, sort_keys=True))
    assert len(versions) == 1, f"{dataset} tables from versions {sorted(versions)}"
    assert len(teachers) == 1, (
        f"{dataset} tables from {len(teachers)} different teachers"
    )
