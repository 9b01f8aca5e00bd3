"""Teacher training: the per-dataset recipes, exact resume (also after SIGTERM), diverged weights refused."""

import json
import os

import pytest
import torch

from cpsc_lite import checkpoint
from cpsc_lite.config import TeacherConfig
from cpsc_lite.data import load_dataset
from cpsc_lite.models import available_models
from cpsc_lite.teacher import TEACHER_RECIPES, run_teacher, teacher_recipe

from conftest import make_colour_npz, run_cli


# ----------------------------------------------------------------- teachers
def test_teacher_recipes():
    # today's recipes for the built-in digits (0.10.0) and shapes (0.11.0): the defaults without
    # random shifts; the other procedural set keeps them
    assert teacher_recipe("digits") == TeacherConfig(shifts=False)
    assert teacher_recipe("shapes") == TeacherConfig(shifts=False)
    assert teacher_recipe("scenes") == TeacherConfig()
    c10 = teacher_recipe("cifar10")
    assert (
        c10.model,
        c10.epochs,
        c10.batch_size,
        c10.lr,
        c10.momentum,
        c10.weight_decay,
    ) == ("resnet34", 200, 128, 0.1, 0.9, 5e-4)
    assert teacher_recipe("tiny-imagenet").model == "resnet34_64"
    assert set(TEACHER_RECIPES) == {
        "digits",
        "shapes",
        "cifar10",
        "cifar100",
        "svhn",
        "tiny-imagenet",
    }
    assert (
        teacher_recipe("cifar100", epochs=5, lr=None).epochs == 5
        and teacher_recipe("cifar100").lr == 0.1
    )
    for recipe in TEACHER_RECIPES.values():
        assert recipe.get("model", "cnn_base") in available_models()


@pytest.mark.parametrize("shifts, expected_pad", [(True, 1), (False, 0)])
def test_teacher_shifts_switch(monkeypatch, shifts, expected_pad):
    """``shifts=False`` trains on the images as they are; True shifts by the data set's pad."""
    import cpsc_lite.teacher as teacher_module
    from cpsc_lite.teacher import train_teacher

    pads = []
    real = teacher_module.augment_batch

    def spy(x, pad, flip):
        pads.append(pad)
        return real(x, pad, flip)

    monkeypatch.setattr(teacher_module, "augment_batch", spy)
    bundle = load_dataset("digits")
    assert bundle.augment_pad == 1
    cfg = TeacherConfig(epochs=1, batch_size=256, device="cpu", shifts=shifts)
    train_teacher(bundle, cfg, progress=False, say=lambda _: None)
    assert pads and set(pads) == {expected_pad}


def test_teacher_command_reports_and_overrides_the_shifts(tmp_path, capsys):
    # the digits recipe has none; --shifts brings them back
    for flags, said, stored in (
        ([], "no random shifts", False),
        (["--shifts"], "cosine schedule, random shifts", True),
    ):
        out_dir = tmp_path / ("on" if flags else "off")
        args = ["teacher", "--dataset", "digits", "--epochs", "1", *flags]
        code, out, _ = run_cli(capsys, *args, "--out", out_dir, "--no-progress")
        assert code == 0 and said in out
        meta = checkpoint.load(str(out_dir / "teacher.pt"), kind="teacher")["meta"]
        assert meta["train_config"]["shifts"] is stored


def test_teacher_training_resumes_exactly(tmp_path, monkeypatch, capsys):
    npz = make_colour_npz(
        tmp_path / "shapes.npz", num_classes=4, size=8, n_train=96, n_test=32
    )
    bundle = load_dataset(f"npz:{npz}")
    cfg = TeacherConfig(epochs=4, batch_size=32, device="cpu")
    full = run_teacher(
        bundle, cfg, str(tmp_path / "full"), progress=False, eval_every=1, ckpt_every=1
    )
    assert [h["epoch"] for h in full["history"]] == [1, 2, 3, 4] and all(
        "test_acc" in h for h in full["history"]
    )
    assert not (
        tmp_path / "full" / "teacher_state.pt"
    ).exists()  # cleaned up once teacher.pt is written

    import cpsc_lite.teacher as teacher_module

    real_evaluate, calls = teacher_module.evaluate, []

    def interrupt_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "evaluate", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_teacher(
            bundle,
            cfg,
            str(tmp_path / "cut"),
            progress=False,
            eval_every=1,
            ckpt_every=1,
        )
    monkeypatch.setattr(teacher_module, "evaluate", real_evaluate)
    assert (tmp_path / "cut" / "teacher_state.pt").exists() and not (
        tmp_path / "cut" / "teacher.pt"
    ).exists()
    # The command line refuses to silently restart it, then continues it with --resume.
    code, _, err = run_cli(
        capsys,
        "teacher",
        "--dataset",
        f"npz:{npz}",
        "--out",
        tmp_path / "cut",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--eval-every",
        "1",
        "--ckpt-every",
        "1",
        "--no-progress",
    )
    assert code == 2 and "--resume" in err
    code, out, err = run_cli(
        capsys,
        "teacher",
        "--dataset",
        f"npz:{npz}",
        "--out",
        tmp_path / "cut",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--eval-every",
        "1",
        "--ckpt-every",
        "1",
        "--no-progress",
        "--resume",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "resuming teacher training after epoch 2" in out
    a = checkpoint.load(str(tmp_path / "full" / "teacher.pt"), "teacher")["state_dict"]
    b = checkpoint.load(str(tmp_path / "cut" / "teacher.pt"), "teacher")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == [h["loss"] for h in full["history"]]


def test_teacher_sigterm_saves_the_epoch_and_resume_is_exact(tmp_path, monkeypatch):
    """SIGTERM during epoch 2 (checkpoints every 3 epochs): the epoch finishes, its state is saved, the
    training stops with Terminated, and --resume ends with exactly the uninterrupted teacher."""
    import signal
    from cpsc_lite import Terminated

    npz = make_colour_npz(
        tmp_path / "shapes.npz", num_classes=4, size=8, n_train=96, n_test=32
    )
    bundle = load_dataset(f"npz:{npz}")
    cfg = TeacherConfig(epochs=4, batch_size=32, device="cpu")
    full = run_teacher(
        bundle, cfg, str(tmp_path / "full"), progress=False, eval_every=1, ckpt_every=3
    )
    import cpsc_lite.teacher as teacher_module

    real_evaluate, calls = teacher_module.evaluate, []

    def term_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "evaluate", term_in_epoch_2)
    with (
        checkpoint.stop_on_sigterm(),
        pytest.raises(Terminated, match="after epoch 2 of 4.*--resume"),
    ):
        run_teacher(
            bundle,
            cfg,
            str(tmp_path / "cut"),
            progress=False,
            eval_every=1,
            ckpt_every=3,
        )
    monkeypatch.setattr(teacher_module, "evaluate", real_evaluate)
    state = checkpoint.load(
        str(tmp_path / "cut" / "teacher_state.pt"), "teacher_resume"
    )["state"]
    assert state["epoch"] == 2
    again = run_teacher(
        bundle,
        cfg,
        str(tmp_path / "cut"),
        progress=False,
        eval_every=1,
        ckpt_every=3,
        resume=True,
    )
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in full["history"]]
    a = checkpoint.load(str(tmp_path / "full" / "teacher.pt"), "teacher")["state_dict"]
    b = checkpoint.load(str(tmp_path / "cut" / "teacher.pt"), "teacher")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_with_nan_weights_is_refused_not_evaluated(
    tmp_path, capsys, digits_teacher
):
    obj = checkpoint.load(digits_teacher, "teacher")
    obj["state_dict"] = {
        k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
        for k, v in obj["state_dict"].items()
    }
    checkpoint.save(obj, str(tmp_path / "nan.pt"))
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "nan.pt")
    assert code == 2 and "NaN, infinite or absurdly large" in " ".join(err.split()), err
    assert "accuracy" not in out.lower()


def test_epoch_order_crosses_to_the_data_device_once_not_per_batch():
    """On a GPU every per-batch copy of indices from pageable host memory is a host sync. The epoch's
    order goes to the data's device once; batches index it with slices of that one tensor. (The meta
    device stands in for a GPU: a copy to it is a new tensor, a slice is a view of the moved order.)"""
    from cpsc_lite.teacher import _train_batches

    data = load_dataset("digits").train.to("meta")
    seen = []
    batch = data.batch

    def recording_batch(index):
        seen.append(index)
        return batch(index)

    data.batch = recording_batch
    n = sum(
        1 for _ in _train_batches(data, 256, torch.device("meta"), torch.Generator())
    )
    assert n == len(seen) == -(-len(data) // 256) > 1
    bases = {id(index._base) for index in seen}
    assert len(bases) == 1 and seen[0]._base is not None
    assert seen[0]._base.device.type == "meta"
