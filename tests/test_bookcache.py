"""cpsc_lite.bookcache: artefacts are computed once, then loaded; keys follow the settings.

Uses the tiny "test" profile (a one-epoch teacher, four distillation iterations) in a
temporary cache folder, so the whole file runs in seconds.
"""

import json

import pytest
import torch

from cpsc_lite import CpscError, reports
from cpsc_lite.diagnostics import class_separation, per_class_diversity
from cpsc_lite import bookcache as bc


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPSC_BOOK_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    bc.setup("test", quiet=True)
    bc._STATE["costs"].clear()
    yield tmp_path / "cache"
    bc.setup("quick", quiet=True)
    torch.set_num_threads(threads)


def _forbid(monkeypatch, target, name):
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} ran although its result was cached")

    monkeypatch.setattr(target, name, boom)


def test_teacher_is_trained_once_then_loaded(cache, monkeypatch):
    model, meta = bc.teacher()
    assert 0.0 <= meta["test_acc"] <= 1.0 and meta["epochs"] == 1
    assert len(list(cache.glob("teacher-digits-*/teacher.pt"))) == 1
    import cpsc_lite.teacher

    _forbid(monkeypatch, cpsc_lite.teacher, "run_teacher")
    again, meta2 = bc.teacher()
    assert meta2["test_acc"] == meta["test_acc"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )
    assert bc.compute_seconds() > 0


def test_cpsc_run_keeps_snapshots_and_is_cached(cache, monkeypatch):
    run = bc.cpsc_run()
    assert run.config.budget.iters == 4 and run.metrics["iters"] == 4
    assert run.snapshot_iters == [0, 2, 4] and len(run.snapshot_states) == 3
    assert [r["iter"] for r in run.records] == [1, 2, 3, 4]
    assert "student_acc" in run.records[-1]
    # A snapshot is a different generator from the final one, except the last.
    first, last = run.generator_at(0), run.generator_at(4)
    final = run.generator.state_dict()
    assert all(torch.equal(last.state_dict()[k], final[k]) for k in final)
    assert not all(torch.equal(first.state_dict()[k], final[k]) for k in final)
    # The untrained snapshot gets BN statistics estimated from its own samples (as chapter 3's
    # untrained generator), so in eval mode it draws what training drew, not flat images; its
    # weights stay as saved, and a trained snapshot keeps its statistics.
    saved = run.snapshot_states[0]
    assert all(
        int(v) == 0 for k, v in saved.items() if k.endswith("num_batches_tracked")
    )
    assert all(
        torch.equal(first.state_dict()[k], saved[k])
        for k in saved
        if "running" not in k and not k.endswith("num_batches_tracked")
    )
    assert not all(
        torch.equal(first.state_dict()[k], saved[k])
        for k in saved
        if "running_var" in k
    )
    assert not first.training and torch.equal(
        bc.samples(first)[0], bc.samples(run.generator_at(0))[0]
    )
    import cpsc_lite.runner

    _forbid(monkeypatch, cpsc_lite.runner, "train")
    assert bc.cpsc_run().metrics == run.metrics
    # A different setting is a different artefact (and would train).
    with pytest.raises(AssertionError, match="cached"):
        bc.cpsc_run("no_scl", use_scl=False)
    assert not list(cache.glob("run-no_scl-*")), (
        "a failed build must leave no half-written artefact"
    )


def test_config_caps_never_raise_package_defaults(cache):
    from cpsc_lite.methods import make_config

    bc.setup("quick", quiet=True)
    quick, default = bc.distill_config(), make_config("cpsc")
    assert (
        quick.budget.iters <= default.budget.iters
        and quick.budget.batch_size <= default.budget.batch_size
        and quick.generator.ngf <= default.generator.ngf
    )
    assert (
        quick.objective.alpha == default.objective.alpha
        and quick.objective.temperature == default.objective.temperature
    )
    bc.setup("full", quiet=True)
    full = bc.distill_config()
    assert (full.budget.iters, full.budget.batch_size, full.generator.ngf) == (
        default.budget.iters,
        default.budget.batch_size,
        default.generator.ngf,
    )
    with pytest.raises(Exception, match="PROFILE"):
        bc.setup("fast")


def test_generator_only_and_kd_baseline(cache):
    out = bc.generator_only(use_bn=True, teacher_ce=True)
    assert len(out["losses"]) == 3 and {"bn", "ce"} <= set(out["losses"][0])
    images, labels = bc.samples(out["generator"], 2)
    assert images.shape == (20, 1, 8, 8) and labels.tolist() == [
        c for c in range(10) for _ in range(2)
    ]
    conf = bc.teacher_confidence(bc.teacher()[0], images, labels, 10)
    assert len(conf["confidence"]) == 10 and 0 <= conf["mean_agreement"] <= 1
    kd = bc.kd_baseline("noise", steps=25, batch_size=16)
    assert (
        kd["accs"] == [dict(step=25, student_acc=kd["student_acc"])]
        and 0 <= kd["student_acc"] <= 1
    )
    # the engine's `data` method: reads the training split
    real = bc.kd_baseline("real", steps=50, batch_size=16)
    assert real["method"] == "data" and [a["step"] for a in real["accs"]] == [25, 50]
    with pytest.raises(CpscError, match="multiple of 25"):
        bc.kd_baseline("noise", steps=30)


def test_measures_on_hand_made_features():
    feats = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-3.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # class 0: identical directions; class 1: orthogonal directions (cosine distance 1)
    assert per_class_diversity(feats, labels, 2) == pytest.approx([0.0, 1.0])
    # centroids (1, 0) and (-1/2, 1/2) after normalising: cosine -1/sqrt(2)
    assert class_separation(feats, labels, 2) == pytest.approx(1 + 2**-0.5)


def test_bench_results_absent_or_read_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CPSC_BENCH_DIR", str(tmp_path))
    assert reports.bench_results("digits") is None
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "results.json").write_text(
        json.dumps({"command": "cpsc-lite bench", "methods": {}})
    )
    assert reports.bench_results("digits")["command"] == "cpsc-lite bench"


def test_published_results_load():
    pd = pytest.importorskip("pandas")
    table = reports.published_results()
    assert (
        isinstance(table, pd.DataFrame)
        and (table.source.str.contains("not ours")).all()
    )


def test_ablation_summary_compares_each_variant_with_its_spread():
    def row(mean, std):
        return dict(student_acc_mean=mean, student_acc_std=std)

    results = dict(
        methods=dict(
            cpsc=row(0.95, 0.01),
            dfad=row(0.5, 0.0),
            cpsc_no_bn=row(0.90, 0.02),
            cpsc_no_scl=row(0.955, 0.01),
            cpsc_paper=row(0.97, 0.005),
        )
    )
    text = reports.ablation_summary(results)
    assert "dfad" not in text
    assert "`cpsc_no_bn`: -5.00 points (worse; larger std 2.00)" in text
    assert "`cpsc_no_scl`: +0.50 points (within the seed-to-seed spread" in text
    assert "`cpsc_paper`: +2.00 points (better" in text
    assert reports.ablation_summary(None) == "(no results)"
    assert "no `cpsc` entry" in reports.ablation_summary(
        dict(methods=dict(dfad=row(0.5, 0)))
    )


def test_profile_report_reads_profile_files(tmp_path, monkeypatch):
    pytest.importorskip("pandas")  # the book's extra, not the tests'
    prof = dict(
        teacher="wrn40_2",
        student="wrn16_2",
        img_size=32,
        batch_size=64,
        g_steps=1,
        s_steps=5,
        threads=2,
        seconds_per_iter=1.1,
        floor_seconds=1.0,
        floor_ratio=1.1,
        command="cpsc-lite bench --profile --teacher-model wrn40_2",
    )
    (tmp_path / "data/bench/profile/wrn").mkdir(parents=True)
    (tmp_path / "data/bench/profile/wrn/profile.json").write_text(json.dumps(prof))
    monkeypatch.setattr(reports, "_repo_file", lambda rel: (tmp_path / rel, None))
    table, commands = reports.profile_report(names=("wrn", "missing"))
    assert commands == [prof["command"]]
    html = table.to_html()
    assert "wrn40_2 → wrn16_2" in html and "1.10" in html
    assert reports.profile_report(names=("missing",)) == (None, [])


def test_glue_prints_each_number_for_readers_without_myst(capsys):
    import numpy as np

    bc.glue("acc", np.float64(0.98223))
    bc.glue("iters", 300)
    bc.glue("name", "cnn_small")
    bc.glue("flag", True)  # not a number a sentence would quote: not printed
    bc.glue("fig", [1, 2, 3])  # not a scalar: not printed
    assert capsys.readouterr().out.splitlines() == [
        "acc = 0.9822",
        "iters = 300",
        "name = cnn_small",
    ]


def test_generator_only_takes_the_ce_weight_and_caches_each_weight_apart(cache):
    default = bc.generator_only(use_bn=True, teacher_ce=True)
    strong = bc.generator_only(use_bn=True, teacher_ce=True, eta=3.0)
    specs = sorted(
        json.loads(p.read_text())["spec"]["objective.eta"]
        for p in cache.glob("generator-bnce-*/metrics.json")
    )
    assert specs == sorted([bc.distill_config().objective.eta, 3.0])
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            default["generator"].state_dict().values(),
            strong["generator"].state_dict().values(),
        )
    )


def test_compare_grids_wraps_after_two_panels(cache):
    import matplotlib

    matplotlib.use("Agg")
    panel = bc.samples(bc.fresh_generator(), 2)
    fig = bc.compare_grids({"a": panel, "b": panel, "c": panel})
    grids = fig.axes
    assert len(grids) == 4 and [ax.get_title() for ax in grids[:3]] == ["a", "b", "c"]
    assert not grids[3].axison  # the empty fourth place
    # two fit on one row
    assert len(bc.compare_grids({"a": panel, "b": panel}).axes) == 2


def test_bench_jobs_reads_a_tuning_log_or_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CPSC_BENCH_DIR", str(tmp_path))
    assert reports.bench_jobs("tuning/callX") is None
    folder = tmp_path / "tuning" / "callX"
    folder.mkdir(parents=True)
    (folder / "jobs.jsonl").write_text(
        '{"spec": "cpsc", "val_acc": 0.9}\n\n{"spec": "dafl"}\n'
    )
    assert [j["spec"] for j in reports.bench_jobs("tuning/callX")] == ["cpsc", "dafl"]


def test_glue_prints_nothing_while_the_book_is_built(capsys, monkeypatch):
    """In the built pages a glued number stands in its sentence; a printed ``name = value``
    line would only repeat it as noise."""
    monkeypatch.setenv("CPSC_BOOK_BUILD", "1")
    bc.glue("acc", 0.98223)
    assert capsys.readouterr().out == ""
