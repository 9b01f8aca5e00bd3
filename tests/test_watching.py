"""What a person watching a long run gets (TensorBoard events, sample grids and curves while it
trains), and a run whose folder is on a mount such as Google Drive on Colab, which offers neither
fsync nor chmod: it checkpoints, stops and resumes exactly as on a local disk."""

import errno
import os

import pytest
import torch

from cpsc_lite import CpscError, checkpoint
from cpsc_lite.data import load_dataset
from cpsc_lite.methods import make_config
from cpsc_lite.runner import run_distill

SMALL = dict(batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1, ckpt_every=2)


def test_tensorboard_events_and_progress_figures_are_written_while_training(
    tmp_path, digits_teacher
):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    out = tmp_path / "run"
    cfg = make_config("cpsc", iters=4, samples_every=2, **SMALL)
    run_distill(digits_teacher, load_dataset("digits"), cfg, str(out), progress=False)
    board = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    accuracy = board.Scalars("student_acc")
    # at 25 %, 50 % and 100 % of the run and every eval_every
    assert [e.step for e in accuracy] == [1, 2, 4]
    assert {"s/kd", "g/total", "lr_student"} <= set(board.Tags()["scalars"])
    assert sorted(os.listdir(out / "samples")) == [
        "iter_0000002.png",
        "iter_0000004.png",
    ]
    assert (out / "curves.png").stat().st_size > 0


def test_no_tensorboard_package_is_a_note_not_a_failure(
    tmp_path, digits_teacher, monkeypatch, capsys
):
    import builtins

    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    cfg = make_config("cpsc", iters=2, **SMALL)
    m = run_distill(
        digits_teacher, load_dataset("digits"), cfg, str(tmp_path / "r"), progress=False
    )
    assert m["complete"] and not (tmp_path / "r" / "tensorboard").exists()
    assert "pip install tensorboard" in capsys.readouterr().out


@pytest.fixture
def drive_like_mount(monkeypatch):
    """os.fsync and os.chmod as a FUSE mount without them answers (Google Drive in Colab)."""

    def no_fsync(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    def no_chmod(path, mode, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fsync", no_fsync)
    monkeypatch.setattr(os, "chmod", no_chmod)


def test_a_run_on_a_drive_like_mount_stops_and_resumes_exactly(
    tmp_path, digits_teacher, drive_like_mount
):
    bundle = load_dataset("digits")
    cfg = make_config("cpsc", iters=6, **SMALL)
    full = run_distill(digits_teacher, bundle, cfg, str(tmp_path / "a"), progress=False)
    cut = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "b"), stop_after=3, progress=False
    )
    assert cut["iters"] == 3 and (tmp_path / "b" / "state.pt").exists()
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "b"), resume=True, progress=False
    )
    assert resumed["complete"] and resumed["student_acc"] == full["student_acc"]
    a = checkpoint.load(str(tmp_path / "a" / "student.pt"), "student")["state_dict"]
    b = checkpoint.load(str(tmp_path / "b" / "student.pt"), "student")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_real_write_failure_at_fsync_is_still_reported(tmp_path, monkeypatch):
    """A network or FUSE file system may report a full disk only at fsync: that is no missing
    feature, and the previous file must stay."""
    path = tmp_path / "x.json"
    checkpoint.write_json({"a": 1}, str(path))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CpscError, match="full"):
        checkpoint.write_json({"a": 2}, str(path))
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
