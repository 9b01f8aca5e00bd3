"""checkpoint.py: atomic writes that say why they failed, safe loads that check what they load,
the output-folder check, stale temporary files, SIGTERM as a request to checkpoint and stop."""

import argparse
import errno
import os
import signal
import stat

import pytest
import torch

from cpsc_lite import CpscError, Terminated, checkpoint


def teacher_like(**meta_changes):
    meta = dict(
        model="cnn_small",
        num_classes=3,
        channels=1,
        img_size=8,
        mean=[0.3],
        std=[0.4],
        class_names=["a", "b", "c"],
    )
    meta.update(meta_changes)
    return checkpoint.make(
        "teacher", {"w": torch.ones(2)}, {k: v for k, v in meta.items() if v is not ...}
    )


# ------------------------------------------------------------------ writing
def test_atomic_write_uses_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.write_json({"a": 1}, str(tmp_path / "m.json"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o644


def test_failed_write_keeps_the_previous_file_and_names_the_cause(
    tmp_path, monkeypatch
):
    path = tmp_path / "state.pt"
    checkpoint.save({"v": 1}, str(path))

    def disk_full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CpscError, match="disk .*full.*unchanged"):
        checkpoint.atomic_write_bytes(str(path), disk_full)
    assert torch.load(path, weights_only=True) == {"v": 1}
    # no temporary file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]

    def torch_full(f):  # what torch.save reports on a full disk
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
            "data/0: file write failed, unexpected pos 12"
        )

    monkeypatch.setattr(
        checkpoint.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 10})()
    )
    with pytest.raises(CpscError, match="disk .*full"):
        checkpoint.atomic_write_bytes(str(path), torch_full)
    assert torch.load(path, weights_only=True) == {"v": 1}


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (
        ".state.pt.ab12cd34.tmp",
        ".student.pt.x_y9z8w7.tmp",
        "keep.tmp",
        ".hidden",
        "state.pt",
    ):
        (tmp_path / name).write_bytes(b"x")
    removed = checkpoint.remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == [".state.pt.ab12cd34.tmp", ".student.pt.x_y9z8w7.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hidden",
        "keep.tmp",
        "state.pt",
    ]
    assert checkpoint.remove_stale_temporaries(str(tmp_path / "missing")) == []


# ------------------------------------------------------------------ the output folder
def test_output_folder_check(tmp_path):
    assert checkpoint.check_output_dir(str(tmp_path / "new" / "run")) == str(
        tmp_path / "new" / "run"
    )
    assert (tmp_path / "new" / "run").is_dir()
    (tmp_path / "file").write_text("x")
    for bad, needle in (
        ("", "empty"),
        ("   ", "empty"),
        (str(tmp_path / "file"), "is a file"),
        (str(tmp_path / "file" / "sub"), "which is a file"),
    ):
        with pytest.raises(CpscError, match=needle):
            checkpoint.check_output_dir(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_output_folder_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(CpscError, match="Cannot write into"):
            checkpoint.check_output_dir(str(ro / "run"))
    finally:
        ro.chmod(0o700)


def test_output_folder_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(
        checkpoint.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 1000})()
    )
    with pytest.raises(CpscError, match="less than 1 MiB free"):
        checkpoint.check_output_dir(str(tmp_path))


# ------------------------------------------------------------------ loading
def test_load_refuses_a_folder_and_says_so(tmp_path):
    with pytest.raises(CpscError, match="is a folder, not a file"):
        checkpoint.load(str(tmp_path), what="teacher checkpoint")


def test_load_names_pickled_objects_as_the_reason(tmp_path):
    # an importable class
    torch.save({"format": "cpsc_lite", "x": argparse.Namespace(a=1)}, tmp_path / "p.pt")
    with pytest.raises(CpscError, match="pickled Python objects.*refuses"):
        checkpoint.load(str(tmp_path / "p.pt"))
    # not a pickle at all: corrupt, not refused
    (tmp_path / "g.pt").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CpscError, match="truncated, corrupt"):
        checkpoint.load(str(tmp_path / "g.pt"))


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(meta=None), "no metadata"),
        (dict(img_size=...), "img_size"),
        (dict(num_classes="ten"), "num_classes"),
        (dict(num_classes=True), "num_classes"),
        (dict(channels=5), "channels"),
        (dict(mean=[0.1, 0.2]), "mean"),
        (dict(std=[0.0]), "positive"),
        (dict(std=[float("nan")]), "std"),
        (dict(class_names=["a"]), "class_names"),
        (dict(model=3), "model"),
    ],
)
def test_load_validates_classifier_metadata(tmp_path, change, needle):
    if "meta" in change:
        obj = dict(format="cpsc_lite", kind="teacher", state_dict={})
    else:
        obj = teacher_like(**change)
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(CpscError, match=f"damaged or was edited.*{needle}"):
        checkpoint.load(str(tmp_path / "t.pt"), kind="teacher")


def test_load_validates_generator_and_resume_metadata(tmp_path):
    gen = dict(num_classes=3, img_size=8, channels=1, nz=4, ngf=2, conditional=True)
    good = checkpoint.make("generator", {"w": torch.zeros(1)}, dict(generator=gen))
    torch.save(good, tmp_path / "g.pt")
    assert (
        checkpoint.load(str(tmp_path / "g.pt"), kind="generator")["meta"]["generator"]
        == gen
    )
    for bad in (dict(gen, img_size=2), dict(gen, nz="4"), dict(gen, conditional=1)):
        torch.save(
            checkpoint.make("generator", {}, dict(generator=bad)), tmp_path / "g.pt"
        )
        with pytest.raises(CpscError, match="generator"):
            checkpoint.load(str(tmp_path / "g.pt"), kind="generator")
    torch.save(
        checkpoint.make("resume", {}, {}, state={"iteration": 3}), tmp_path / "s.pt"
    )
    with pytest.raises(CpscError, match="resume state"):
        checkpoint.load(str(tmp_path / "s.pt"), kind="resume")


def test_load_refuses_non_finite_weights(tmp_path):
    obj = teacher_like()
    obj["state_dict"] = {"w": torch.tensor([1.0, float("nan")]), "n": torch.tensor(3)}
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(CpscError, match="NaN, infinite or absurdly large .*w"):
        checkpoint.load(str(tmp_path / "t.pt"), kind="teacher")
    # finite, but a diverged training's
    obj["state_dict"] = {"w": torch.tensor([1.0, 1e28])}
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(CpscError, match="absurdly large"):
        checkpoint.load(str(tmp_path / "t.pt"), kind="teacher")


def test_diverged_weights_and_fingerprint():
    sd = {
        "a": torch.ones(3),
        "b": torch.tensor([1e13]),
        "c": torch.tensor([float("inf")]),
        "i": torch.tensor(7),
    }
    assert checkpoint.diverged_weights(sd, "m") == ["m.b", "m.c"]
    one = checkpoint.fingerprint(
        {"x": torch.arange(6).view(2, 3), "n": torch.tensor(1)}
    )
    assert one == checkpoint.fingerprint(
        {"n": torch.tensor(1), "x": torch.arange(6).view(2, 3)}
    )
    # shape counts
    assert one != checkpoint.fingerprint(
        {"x": torch.arange(6).view(3, 2), "n": torch.tensor(1)}
    )
    assert one != checkpoint.fingerprint(
        {"x": torch.arange(6).view(2, 3), "n": torch.tensor(2)}
    )


# ------------------------------------------------------------------ SIGTERM
def test_sigterm_becomes_a_request_then_a_hard_stop():
    assert not checkpoint.termination_requested()
    with checkpoint.stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        assert checkpoint.termination_requested()
        with pytest.raises(Terminated, match="second SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert not checkpoint.termination_requested()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_immediate_mode_stops_at_once_outside_a_polling_loop():
    """The command line's mode: SIGTERM where no loop saves first stops at once; inside a loop
    that polls for it, it is a request the loop honours after saving."""
    with checkpoint.stop_on_sigterm(immediate=True):
        with pytest.raises(checkpoint.StopNow):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # noqa: BLE001 - what `except Exception` on the way would do
                pytest.fail("an `except Exception` caught the stop")
    with checkpoint.stop_on_sigterm(immediate=True):
        with checkpoint.polling_for_termination():
            os.kill(os.getpid(), signal.SIGTERM)
            assert checkpoint.termination_requested()
    assert not checkpoint.termination_requested()


def test_a_write_that_must_not_replace_leaves_an_existing_file(tmp_path):
    path = str(tmp_path / "s.png")
    checkpoint.atomic_write_bytes(path, lambda f: f.write(b"new"), replace=False)
    assert open(path, "rb").read() == b"new"
    with pytest.raises(CpscError, match="appeared while"):
        checkpoint.atomic_write_bytes(path, lambda f: f.write(b"other"), replace=False)
    assert open(path, "rb").read() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["s.png"]  # no temporary left
