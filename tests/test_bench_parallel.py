"""The benchmark split over processes and machines (``--workers``, ``--first-seed``, ``--merge``),
its validation accuracy, and the selection rules of ``experiments/tune.py``."""

import json
import os
import sys

import pytest
import torch

from cpsc_lite.cli import main
from cpsc_lite.engine import native_bf16

from conftest import REPO, flat

sys.path.insert(0, os.path.join(REPO, "experiments"))
import tune  # noqa: E402


def common(teacher, out):
    return [
        "--dataset", "digits", "--teacher", teacher, "--iters", "2", "--batch-size", "16",
        "--out", str(out), "--no-progress", "--set", "ngf=8", "--set", "nz=16",
    ]  # fmt: skip


def test_workers_and_first_seed_give_one_row_per_method_with_val_acc(
    tmp_path, digits_teacher
):
    out = tmp_path / "par"
    args = ["bench", "--methods", "noise,cpsc", "--seeds", "2", "--first-seed", "7"]
    assert main(args + ["--workers", "2"] + common(digits_teacher, out)) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["seeds"] == [7, 8] and r["workers"] == 2
    assert list(r["methods"]) == ["noise", "cpsc"]  # the order asked for
    for row in r["methods"].values():
        val = row["per_seed"]["val_acc"]  # accuracy on the training split
        assert len(val) == 2 and all(0 <= v <= 1 for v in val)
    assert "diff_vs_cpsc" in r["methods"]["noise"]
    native = native_bf16(torch.device("cpu"))  # --amp auto: bf16 where the CPU has it
    assert r["runtime"]["amp"] == ("bfloat16" if native else "off")
    assert r["runtime"]["device"] == "cpu"


def test_a_serial_run_with_the_same_threads_gives_the_same_numbers(
    tmp_path, digits_teacher
):
    """One worker process per job changes nothing but the process: same seed, same numbers
    (the tests run torch with one thread, as each worker here does)."""
    args = ["bench", "--methods", "cpsc", "--seeds", "1", "--first-seed", "3"]
    assert main(args + common(digits_teacher, tmp_path / "a")) == 0
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        assert (
            main(args + ["--workers", "2"] + common(digits_teacher, tmp_path / "b"))
            == 0
        )
    finally:
        del os.environ["OMP_NUM_THREADS"]
    a, b = (
        json.loads((tmp_path / d / "results.json").read_text())["methods"]["cpsc"]
        for d in "ab"
    )
    assert a["student_accs"] == b["student_accs"]
    assert a["per_seed"]["val_acc"] == b["per_seed"]["val_acc"]


def test_data_has_no_validation_accuracy(tmp_path, digits_teacher):
    assert (
        main(
            ["bench", "--methods", "data", "--seeds", "1"]
            + common(digits_teacher, tmp_path)
        )
        == 0
    )
    row = json.loads((tmp_path / "results.json").read_text())["methods"]["data"]
    assert "val_acc" not in row["per_seed"]


def test_merge_joins_tables_of_one_budget_and_refuses_others(
    tmp_path, digits_teacher, capsys
):
    for name, method in (("a", "noise"), ("b", "cpsc")):
        argv = ["bench", "--methods", method, "--seeds", "2"]
        assert main(argv + common(digits_teacher, tmp_path / name)) == 0
    out = tmp_path / "merged"
    assert (
        main(
            [
                "bench",
                "--merge",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads((out / "results.json").read_text())
    assert list(r["methods"]) == ["noise", "cpsc"]
    assert [m["methods"] for m in r["merged_from"]] == [["noise"], ["cpsc"]]
    assert "--merge" in r["command"]
    # the paired difference is computed across the two source tables
    assert "student_acc" in r["methods"]["noise"]["diff_vs_cpsc"]
    assert "| cpsc |" in (out / "results.md").read_text()
    # another budget is refused, and so is replacing a table without --overwrite
    argv = ["bench", "--methods", "noise", "--seeds", "3"]
    assert main(argv + common(digits_teacher, tmp_path / "c")) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "bench",
                "--merge",
                str(tmp_path / "a"),
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "m2"),
            ]
        )
        != 0
    )
    assert "another budget: seeds" in flat(capsys.readouterr().err)
    assert (
        main(["bench", "--merge", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
        != 0
    )
    assert "--overwrite" in flat(capsys.readouterr().err)
    assert (
        main(
            [
                "bench",
                "--merge",
                str(tmp_path / "a"),
                "--out",
                str(tmp_path / "b"),
                "--overwrite",
            ]
        )
        == 0
    )
    assert list(
        json.loads((tmp_path / "b" / "results.json").read_text())["methods"]
    ) == ["noise"]
    assert main(["bench", "--merge", str(tmp_path / "nothing"), "--out", str(out)]) != 0
    assert "no results.json" in flat(capsys.readouterr().err)


def test_bench_refuses_bad_workers_and_seconds_with_workers(
    tmp_path, digits_teacher, capsys
):
    assert (
        main(
            ["bench", "--methods", "noise", "--workers", "0"]
            + common(digits_teacher, tmp_path)
        )
        != 0
    )
    assert "--workers must be at least 1" in flat(capsys.readouterr().err)
    argv = [
        "bench",
        "--methods",
        "noise",
        "--dataset",
        "digits",
        "--teacher",
        digits_teacher,
    ]
    assert (
        main(argv + ["--seconds", "5", "--workers", "2", "--out", str(tmp_path)]) != 0
    )
    assert "one worker" in flat(capsys.readouterr().err)


# ------------------------------------------------------------- the tuning rules
def _m(val, agreement, pixel, settings):
    return dict(
        val_acc=val,
        agreement=agreement,
        pixel=pixel,
        settings=settings,
        seeds=[100, 101],
    )


def test_tuning_choice_follows_its_written_rules():
    base = _m(97.0, 0.97, 0.40, {})
    a = _m(98.0, 0.96, 0.62, {"eta": 1.0})  # meets both goals
    b = _m(99.0, 0.96, 0.59, {"eta": 0.3})  # higher accuracy, pixel judge short of 0.60
    c = _m(96.0, 0.99, 0.58, {"eta": 2.0})  # below the defaults' accuracy
    assert tune.digits_choice({"a": a, "b": b, "c": c}, base)[0] == {"eta": 1.0}
    # nobody meets both: the best pixel judge among those at least as accurate as the defaults
    assert tune.digits_choice({"b": b, "c": c}, base)[0] == {"eta": 0.3}
    # nothing as accurate as the defaults
    assert tune.digits_choice({"c": c}, base) == (
        {},
        "no finalist qualified: the defaults stay",
    )
    # the defaults not measured (the first call's bug): nothing changes
    assert tune.digits_choice({"a": a}, None)[0] == {}


def test_tuning_names_one_configuration_once():
    assert tune.spec("cpsc", {}) == "cpsc"
    assert tune.spec("dafl", {"lr_generator": 1e-3}) == "dafl"  # its own preset value
    assert tune.spec("cpsc", {"eta": 2.0, "alpha": 0.5}) == "cpsc:alpha=0.5:eta=2.0"
    configs = tune.random_configs({"x": [0, 1], "y": [0, 1]}, 10, seed=1)
    assert len(configs) == 3 and {} not in configs  # only the distinct non-default ones


def test_tuning_finalists_start_with_the_defaults():
    m = {
        "cpsc": _m(97.0, 0.97, 0.40, {}),
        "x": _m(98.0, 0.96, 0.62, {"eta": 1.0}),
        "y": _m(96.0, 0.90, 0.70, {"eta": 2.0}),  # agreement too low
    }
    assert tune.digits_finalists(m) == [{}, {"eta": 1.0}]


def test_round3_shapes_choice_prefers_class_specific_settings():
    # agreement >= 0.95 first (issue 11's goal on shapes), then validation accuracy
    low = _m(99.9, 0.45, 0.27, {"lr_generator": 1e-3})
    high = _m(97.3, 0.95, 0.36, {"eta": 1.0})
    base = _m(57.2, 0.93, 0.36, {})
    assert tune.shapes_choice({"a": low, "b": high, "c": base}) == (
        {"eta": 1.0},
        "highest val_acc with agreement >= 0.95",
    )
    # none class-specific enough: the most accurate
    assert tune.shapes_choice({"a": low, "c": base})[0] == {"lr_generator": 1e-3}
    assert tune.shapes_choice({})[0] == {}


def test_round3_plans_every_job_once_with_its_own_teacher(tmp_path, capsys):
    # every lever named in the plan is a real config switch of its method (spec reads the
    # preset's value of each), and no configuration runs twice
    names = [tune.spec(m, s) for m, s in tune.SCENES_BASELINES]
    assert len(set(names)) == len(names)
    shapes = [tune.spec("cpsc", s) for s in tune.SHAPES_CANDIDATES]
    assert len(set(shapes)) == len(shapes)
    # --round3 needs the shapes and scenes teachers, not the digits one
    argv = ["--round3", "--out", str(tmp_path), "--dry-run"]
    with pytest.raises(SystemExit):
        tune.main(argv)
    assert "--shapes-teacher and --scenes-teacher" in capsys.readouterr().err
    t = ["--shapes-teacher", "s.pt", "--scenes-teacher", "c.pt"]
    assert tune.main(argv + t) == 0
    out = capsys.readouterr().out
    n = 3 * len(tune.SHAPES_CANDIDATES) + 2 * len(tune.SCENES_BASELINES)
    assert f"{n} jobs" in out
    assert out.splitlines()[0].split()[1] == "cmi"  # the expensive jobs first
