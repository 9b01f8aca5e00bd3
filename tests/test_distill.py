"""End-to-end behaviour of the distillation loop: learning, resume exactness, NaN safety, generality."""

import json
import os
import signal

import pytest
import torch

from cpsc_lite import CpscError, checkpoint
from cpsc_lite.cli import main
from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.distill import Distiller
from cpsc_lite.engine import seed_everything
from cpsc_lite.runner import NonFiniteLossError, run_distill, train
from cpsc_lite.teacher import load_classifier

from conftest import make_colour_npz, saved_0_11

SMALL = dict(batch_size=32, ngf=16, nz=32, eval_every=4, log_every=2, ckpt_every=4)


def test_distillation_on_digits_learns_far_above_chance(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config(
        "cpsc",
        iters=60,
        batch_size=64,
        ngf=16,
        nz=64,
        eval_every=30,
        log_every=10,
        ckpt_every=60,
    )
    metrics = run_distill(digits_teacher, bundle, cfg, str(tmp_path), progress=False)
    assert metrics["teacher_acc"] > 0.85
    assert metrics["student_acc"] > 0.5, metrics  # chance is 0.1
    for name in (
        "student.pt",
        "generator.pt",
        "state.pt",
        "metrics.json",
        "log.jsonl",
        "samples.png",
        "curves.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"teacher_acc", "student_acc", "iters", "seconds"} <= set(saved)
    log = [
        json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
    ]
    # every log_every iterations, plus the evaluations at 25 % and 50 % of the budget (time to accuracy)
    assert [r["iter"] for r in log] == [10, 15, 20, 30, 40, 50, 60]
    assert all("seconds" in r and "lr_student" in r and "g/scl" in r for r in log)
    evaluated = {r["iter"]: r["student_acc"] for r in log if "student_acc" in r}
    assert sorted(evaluated) == [15, 30, 60]
    assert saved["accuracy_at"] == {
        "0.25": evaluated[15],
        "0.5": evaluated[30],
        "1.0": evaluated[60],
    }


def _weights(path):
    return checkpoint.load(path, "student")["state_dict"]


def test_resume_after_interruption_is_exact(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=10, **SMALL)
    full = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "full"), progress=False
    )
    part = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), stop_after=6, progress=False
    )
    assert part["iters"] == 6 and not part["complete"]
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), resume=True, progress=False
    )
    assert resumed["iters"] == 10 and resumed["complete"]
    assert resumed["student_acc"] == full["student_acc"]
    a, b = (
        _weights(str(tmp_path / "full" / "student.pt")),
        _weights(str(tmp_path / "cut" / "student.pt")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_full = [
        json.loads(x)["iter"]
        for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()
    ]
    log_cut = [
        json.loads(x)["iter"]
        for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    ]
    assert log_full == log_cut


def test_resume_after_a_crash_between_checkpoints(tmp_path, digits_teacher):
    """A crash after iteration 6 (checkpoint at 4): resuming redoes 5..10 and matches a clean run."""
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=10, **SMALL)
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    clean = Distiller(teacher, meta, cfg, bundle.test)
    train(clean, str(tmp_path / "clean"), progress=False)

    class Crash(Exception):
        pass

    def crash(d, record):
        if record["iter"] == 6:
            raise Crash()

    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    crashed = Distiller(teacher, meta, cfg, bundle.test)
    with pytest.raises(Crash):
        train(crashed, str(tmp_path / "crash"), progress=False, callback=crash)
    crashed.close()
    state = checkpoint.load(str(tmp_path / "crash" / "state.pt"), "resume")["state"]
    assert state["iteration"] == 4
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    again = Distiller(teacher, meta, cfg, bundle.test)
    again.load_state_dict(state)
    train(again, str(tmp_path / "crash"), progress=False)
    for k, v in clean.student.state_dict().items():
        assert torch.equal(v, again.student.state_dict()[k]), k
    iters = [
        json.loads(x)["iter"]
        for x in (tmp_path / "crash" / "log.jsonl").read_text().splitlines()
    ]
    # (5: half the budget) the log lines written after the checkpoint were replaced, not doubled
    assert iters == [2, 4, 5, 6, 8, 10]


def test_nan_keeps_last_good_checkpoint(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=10, **dict(SMALL, log_every=1))
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    d = Distiller(teacher, meta, cfg, bundle.test)

    def poison(dd, record):
        if record["iter"] == 5:  # after the checkpoint at 4
            with torch.no_grad():
                dd.teacher.classifier.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="kept"):
        train(d, str(tmp_path), progress=False, callback=poison)
    state = checkpoint.load(str(tmp_path / "state.pt"), "resume")["state"]
    assert state["iteration"] == 4
    assert all(
        torch.isfinite(v).all()
        for v in state["student"].values()
        if v.is_floating_point()
    )


@pytest.mark.parametrize("num_classes,size", [(4, 12), (7, 16)])
def test_colour_images_and_other_class_counts(tmp_path, capsys, num_classes, size):
    npz = make_colour_npz(tmp_path / "shapes.npz", num_classes=num_classes, size=size)
    out = tmp_path / "run"
    assert (
        main(
            [
                "teacher",
                "--dataset",
                f"npz:{npz}",
                "--epochs",
                "3",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    # Distil against a copy of the data WITHOUT a training split: only the test split may be needed.
    test_only = make_colour_npz(
        tmp_path / "test_only.npz", num_classes=num_classes, size=size, train=False
    )
    # not the teacher's folder: its metrics.json is the teacher's
    run = tmp_path / "distill"
    code = main(
        [
            "distill",
            "--teacher",
            str(out / "teacher.pt"),
            "--dataset",
            f"npz:{test_only}",
            "--out",
            str(run),
            "--iters",
            "4",
            "--batch-size",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["student_acc"] <= 1.0 and metrics["iters"] == 4
    # no training split to fit the pixel judge on
    assert metrics["pixel_recognition"] is None
    gen = checkpoint.load(str(run / "generator.pt"), "generator")["meta"]["generator"]
    assert (gen["num_classes"], gen["channels"], gen["img_size"]) == (
        num_classes,
        3,
        size,
    )
    assert (
        main(
            [
                "sample",
                "--generator",
                str(run / "generator.pt"),
                "--per-class",
                "3",
                "--out",
                str(tmp_path / "grid.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_checkpoints_load_with_weights_only(tmp_path, digits_teacher):
    obj = torch.load(digits_teacher, weights_only=True)
    meta = obj["meta"]
    assert {
        "model",
        "num_classes",
        "channels",
        "img_size",
        "mean",
        "std",
        "version",
    } <= set(meta)
    assert obj["kind"] == "teacher"


def test_seeded_runs_are_reproducible(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=3, **SMALL)
    # the global state before a run does not matter: the run seeds itself
    torch.manual_seed(123)
    run_distill(digits_teacher, bundle, cfg, str(tmp_path / "a"), progress=False)
    run_distill(digits_teacher, bundle, cfg, str(tmp_path / "b"), progress=False)
    wa, wb = (
        _weights(str(tmp_path / "a" / "student.pt")),
        _weights(str(tmp_path / "b" / "student.pt")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    run_distill(
        digits_teacher, bundle, cfg.replace(seed=1), str(tmp_path / "c"), progress=False
    )
    wc = _weights(str(tmp_path / "c" / "student.pt"))
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resuming_a_run_saved_before_adv_warmup_existed_keeps_its_schedule(
    tmp_path, digits_teacher, capsys
):
    """A state.pt without ``adv_warmup`` trained with the adversary on from the start; it must resume that way."""
    bundle = load_dataset("digits")
    # the new default would switch the adversary off until 6
    cfg = make_config("cpsc", iters=20, **SMALL)
    out = tmp_path / "old"
    run_distill(
        digits_teacher,
        bundle,
        cfg.replace(adv_warmup=0.0),
        str(out),
        stop_after=4,
        progress=False,
    )
    obj = checkpoint.load(str(out / "state.pt"), "resume")
    # what a checkpoint written by cpsc-lite before the setting holds
    old = saved_0_11("cpsc", iters=20, **SMALL)
    del old["adv_warmup"]
    obj["state"]["config"] = old
    checkpoint.save(obj, str(out / "state.pt"))
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(out), resume=True, progress=False
    )
    assert resumed["config"]["objective"]["adv_warmup"] == 0.0
    assert "ignoring changed objective.adv_warmup" in capsys.readouterr().out
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    # adversarial terms logged at every iteration, before and after
    assert all("g/adv_kd" in r for r in log)


def test_sigterm_checkpoints_the_current_iteration_and_resume_is_exact(
    tmp_path, digits_teacher
):
    """SIGTERM (SLURM, Colab) at iteration 6, between checkpoints (4, 8): the run saves iteration 6,
    stops with Terminated, and resuming gives exactly the uninterrupted result."""
    from cpsc_lite import Terminated

    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=10, **SMALL)
    clean = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "clean"), progress=False
    )

    def term(d, record):
        if record["iter"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    d = Distiller(teacher, meta, cfg, bundle.test)
    with checkpoint.stop_on_sigterm():
        with pytest.raises(Terminated, match="after iteration 6 of 10.*--resume"):
            train(d, str(tmp_path / "cut"), progress=False, callback=term)
    d.close()
    assert (
        checkpoint.load(str(tmp_path / "cut" / "state.pt"), "resume")["state"][
            "iteration"
        ]
        == 6
    )
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), resume=True, progress=False
    )
    assert resumed["student_acc"] == clean["student_acc"]
    a, b = (
        _weights(str(tmp_path / "clean" / "student.pt")),
        _weights(str(tmp_path / "cut" / "student.pt")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_through_the_cli_exits_143_with_the_resume_advice(
    tmp_path, digits_teacher, capsys, monkeypatch
):
    from cpsc_lite import runner

    real_train = runner.train

    def train_then_term(*args, **kwargs):
        def term(d, record):
            if record["iter"] == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        return real_train(*args, **dict(kwargs, callback=term))

    monkeypatch.setattr(runner, "train", train_then_term)
    code = main(
        [
            "distill",
            "--teacher",
            str(digits_teacher),
            "--out",
            str(tmp_path / "r"),
            "--iters",
            "6",
            "--batch-size",
            "16",
            "--set",
            "ngf=8",
            "--set",
            "nz=8",
            "--set",
            "log_every=1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 143, err
    assert (
        "stopped: Stopped by SIGTERM after iteration 2 of 6" in err
        and "--resume" in err
    )
    assert "Traceback" not in err
    assert (
        checkpoint.load(str(tmp_path / "r" / "state.pt"), "resume")["state"][
            "iteration"
        ]
        == 2
    )


def test_diverged_weights_never_replace_a_good_checkpoint(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=10, **SMALL)
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    d = Distiller(teacher, meta, cfg, bundle.test)

    # finite losses can hide weights of 1e28 for an iteration or two
    def blow_up(dd, record):
        if record["iter"] == 6:
            with torch.no_grad():
                next(dd.student.parameters()).fill_(1e28)

    with pytest.raises(
        NonFiniteLossError,
        match="Weights diverged by iteration 8.*student.*previous checkpoint",
    ):
        train(d, str(tmp_path), progress=False, callback=blow_up)
    state = checkpoint.load(str(tmp_path / "state.pt"), "resume")["state"]
    assert state["iteration"] == 4


def test_resume_refuses_another_teacher_or_other_test_data(
    tmp_path, digits_teacher, capsys
):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=6, **SMALL)
    run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "r"), stop_after=2, progress=False
    )
    other = checkpoint.load(digits_teacher, "teacher")
    other["state_dict"] = {
        k: (v + 0.01 if v.is_floating_point() else v)
        for k, v in other["state_dict"].items()
    }
    checkpoint.save(other, str(tmp_path / "other.pt"))
    with pytest.raises(CpscError, match="another teacher .*--teacher"):
        run_distill(
            str(tmp_path / "other.pt"),
            bundle,
            cfg,
            str(tmp_path / "r"),
            resume=True,
            progress=False,
        )
    fewer = load_dataset("digits")
    fewer.test = type(bundle.test)(
        bundle.test.images[:50], bundle.test.labels[:50], bundle.mean, bundle.std
    )
    with pytest.raises(CpscError, match="another evaluation data .*--dataset"):
        run_distill(
            digits_teacher, fewer, cfg, str(tmp_path / "r"), resume=True, progress=False
        )
    done = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "r"), resume=True, progress=False
    )
    assert done["iters"] == 6


def test_sample_pool_ring_buffer():
    from cpsc_lite.methods.base import SamplePool

    pool = SamplePool(10)
    for k in range(4):
        pool.add(
            torch.arange(4 * k, 4 * k + 4).float().view(4, 1),
            torch.arange(4 * k, 4 * k + 4),
        )
    # the oldest six replaced
    assert pool.size == 10 and sorted(pool.labels.tolist()) == list(range(6, 16))
    assert pool.latest(3)[1].tolist() == [13, 14, 15]
    x, y = pool.sample(50)
    assert torch.equal(x.flatten().long(), y) and set(y.tolist()) <= set(range(6, 16))
    again = SamplePool(10)
    again.load_state_dict(pool.state_dict(), "cpu")
    again.add(torch.tensor([[99.0]]), torch.tensor([99]))
    pool.add(torch.tensor([[99.0]]), torch.tensor([99]))
    assert torch.equal(again.latest(10)[1], pool.latest(10)[1])


def test_deepinversion_makes_images_the_teacher_recognises_and_resumes_exactly(
    tmp_path, digits_teacher
):
    """deepinv: no generator; each iteration optimises a batch of pixels into the pool; the teacher
    recognises most of them, the student learns from the pool, and a resumed run (pool in state.pt)
    equals an uninterrupted one."""
    bundle = load_dataset("digits")
    cfg = make_config(
        "deepinv",
        iters=6,
        batch_size=40,
        inversion_steps=25,
        eval_every=3,
        log_every=1,
        ckpt_every=3,
    )
    full = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "full"), progress=False
    )
    assert full["teacher_agreement"] > 0.8, full  # chance: 0.1
    assert full["student_acc"] > 0.3
    state = checkpoint.load(str(tmp_path / "full" / "state.pt"), "resume")["state"]
    assert state["pool"]["size"] == 6 * 40
    run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), stop_after=3, progress=False
    )
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), resume=True, progress=False
    )
    assert resumed["student_acc"] == full["student_acc"]
    a, b = (
        _weights(str(tmp_path / "full" / "student.pt")),
        _weights(str(tmp_path / "cut" / "student.pt")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "samples.png").stat().st_size > 0
    assert not (
        tmp_path / "full" / "generator.pt"
    ).exists()  # no generator: the images are the product
    kept = load_dataset(f"npz:{tmp_path / 'full' / 'transfer_set.npz'}")
    assert len(kept.test) == 6 * 40 and kept.num_classes == 10


def test_adaptive_deepinversion_uses_the_student(digits_teacher):
    """With adi_weight the pixel objective gains the competition term (and needs the student)."""
    bundle = load_dataset("digits")
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(
        teacher,
        meta,
        make_config("deepinv", batch_size=20, inversion_steps=2, adi_weight=1.0),
        bundle.test,
    )
    terms = d.method.invert()
    assert "competition" in terms and 0.0 <= float(terms["competition"]) <= 1.0
    assert (
        d.method.pool.size == 20
        and d.student.training
        and all(p.requires_grad for p in d.student.parameters())
    )


def test_a_resumed_run_keeps_the_precision_it_started_with(
    tmp_path, digits_teacher, monkeypatch
):
    """--amp auto picks by machine (bf16 on a CPU with native bf16); a run moved to another
    machine continues in the precision it started with, and an explicit --amp wins with a note."""
    from cpsc_lite.engine import Acceleration

    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=6, **SMALL)
    out = str(tmp_path / "run")
    native = {"bf16": False}
    monkeypatch.setattr(
        torch.cpu, "_is_avx512_bf16_supported", lambda: native["bf16"], raising=False
    )
    monkeypatch.setattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False
    )
    part = run_distill(digits_teacher, bundle, cfg, out, stop_after=2, progress=False)
    assert part["runtime"]["amp"] == "off"
    native["bf16"] = (
        True  # the same run, continued on a CPU that computes bf16 natively
    )
    notes = []
    resumed = run_distill(
        digits_teacher,
        bundle,
        cfg,
        out,
        resume=True,
        stop_after=4,
        progress=False,
        say=notes.append,
    )
    assert resumed["runtime"]["amp"] == "off"
    assert not any("precision" in n for n in notes)
    # asked explicitly: honoured, and said
    again = run_distill(
        digits_teacher,
        bundle,
        cfg,
        out,
        resume=True,
        progress=False,
        accel=Acceleration(amp="bf16"),
        say=notes.append,
    )
    assert again["runtime"]["amp"] == "bfloat16" and again["complete"]
    assert any("started in off and continues in --amp bf16" in n for n in notes), notes
    # and the other way round: started in bf16 where native, continued where it is not
    bf = str(tmp_path / "bf")
    first = run_distill(digits_teacher, bundle, cfg, bf, stop_after=2, progress=False)
    assert first["runtime"]["amp"] == "bfloat16"
    native["bf16"] = False
    second = run_distill(digits_teacher, bundle, cfg, bf, resume=True, progress=False)
    assert second["runtime"]["amp"] == "bfloat16"
