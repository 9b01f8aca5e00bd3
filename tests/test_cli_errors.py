"""Every bad input exits with status 2 and a one-paragraph message naming problem and fix."""

import numpy as np
import pytest
import torch

from cpsc_lite import checkpoint
from cpsc_lite.cli import main

from conftest import make_colour_npz


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: ")
    flat = " ".join(err.split()).lower()  # the CLI wraps long messages
    for needle in needles:
        assert needle.lower() in flat, err


def test_missing_teacher(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "distill", "--teacher", tmp_path / "nope.pt", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "does not exist", "cpsc-lite teacher")


def test_corrupt_teacher(tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"\x00garbage" * 50)
    code, _, err = run_cli(capsys, "distill", "--teacher", bad, "--out", tmp_path / "o")
    assert_clean_error(code, err, "corrupt", "re-create")


def test_truncated_teacher(tmp_path, capsys, digits_teacher):
    data = open(digits_teacher, "rb").read()
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "evaluate", bad)
    assert_clean_error(code, err, "truncated")


def test_foreign_file_is_not_loaded_as_teacher(tmp_path, capsys):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    code, _, err = run_cli(
        capsys, "distill", "--teacher", path, "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "not a cpsc_lite")


def test_generator_passed_as_teacher(tmp_path, capsys):
    path = tmp_path / "generator.pt"
    checkpoint.save(checkpoint.make("generator", {}, {}), str(path))
    code, _, err = run_cli(
        capsys, "distill", "--teacher", path, "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "'generator'", "teacher")


def test_class_count_mismatch(tmp_path, capsys, digits_teacher):
    npz = make_colour_npz(tmp_path / "four.npz", num_classes=4, size=8)
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--dataset",
        f"npz:{npz}",
        "--out",
        tmp_path / "o",
    )
    assert_clean_error(code, err, "10 classes", "has 4")


def test_input_shape_mismatch(tmp_path, capsys, digits_teacher):
    rng = np.random.default_rng(0)
    npz = tmp_path / "big.npz"
    np.savez(
        npz,
        x_test=rng.integers(0, 255, (20, 16, 16), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--dataset",
        f"npz:{npz}",
        "--out",
        tmp_path / "o",
    )
    assert_clean_error(code, err, "8x8", "16x16")


def test_unknown_dataset_and_model(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", "imagenet-42", "--out", tmp_path
    )
    assert_clean_error(code, err, "unknown dataset", "digits")
    code, _, err = run_cli(
        capsys, "teacher", "--model", "resnet9000", "--out", tmp_path
    )
    assert_clean_error(code, err, "unknown model", "cnn_base")
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--student",
        "nope",
        "--out",
        tmp_path / "o",
    )
    assert_clean_error(code, err, "unknown model")


@pytest.mark.parametrize(
    "arrays,needle",
    [
        (dict(x_test=np.zeros((4, 8, 8), np.uint8)), "y_test is missing"),
        (
            dict(x_test=np.zeros((4, 8, 8), np.float32), y_test=np.zeros(4, int)),
            "dtype float32",
        ),
        (
            dict(x_test=np.zeros((4, 8, 9), np.uint8), y_test=np.zeros(4, int)),
            "not square",
        ),
        (
            dict(x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(3, int)),
            "holds 4 images",
        ),
        (
            dict(x_test=np.zeros((4, 4, 4), np.uint8), y_test=np.zeros(4, int)),
            "outside 8..64",
        ),
        (
            dict(x_test=np.zeros((4, 8, 8, 2), np.uint8), y_test=np.zeros(4, int)),
            "shape",
        ),
        (
            dict(
                x_test=np.zeros((4, 8, 8), np.uint8),
                y_test=np.zeros(4, int),
                x_train=np.zeros((4, 8, 8), np.uint8),
            ),
            "only one of",
        ),
    ],
)
def test_malformed_npz(tmp_path, capsys, arrays, needle):
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, needle, "numpy.savez")


def test_npz_that_is_not_a_zip(tmp_path, capsys):
    npz = tmp_path / "bad.npz"
    npz.write_text("hello")
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "numpy cannot read it")


def _zip_members(path, members):
    """An .npz written by hand: ``members`` maps member names to raw bytes."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy_bytes(array):
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _labels(*values):
    return np.array(values, dtype=np.int64)


def _images(n):
    return np.random.default_rng(0).integers(0, 255, (n, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    "arrays,needle",
    [
        (dict(x_test=_images(3), y_test=_labels(0, 2, 5)), "never 1, 3, 4"),
        (dict(x_test=_images(3), y_test=_labels(1, 1, 1)), "single class"),
        (dict(x_test=_images(2), y_test=_labels(0, 2**40)), "at most 1000 classes"),
        (
            dict(
                x_train=_images(4),
                y_train=_labels(0, 1, 0, 1),
                x_test=_images(2),
                y_test=_labels(0, 2),
            ),
            "label 2, which y_train never uses",
        ),
        (
            dict(
                x_test=_images(2),
                y_test=_labels(0, 1),
                class_names=np.array([["a", "b"]]),
            ),
            "one name per class",
        ),
        (dict(x_test=_images(2), y_test=np.array([True, False])), "expected integers"),
    ],
)
def test_npz_labels_must_be_0_to_k_minus_1(tmp_path, capsys, arrays, needle):
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, needle)
    assert not (tmp_path / "o" / "teacher.pt").exists()


@pytest.mark.parametrize(
    "make_members,needle",
    [
        (
            lambda: {
                "x_test.npy": b"these are not numbers",
                "y_test.npy": _npy_bytes(_labels(0, 1)),
            },
            "x_test has dtype",
        ),
        (
            lambda: {
                "x_test.npy": _npy_bytes(np.array([object(), 1], dtype=object)),
                "y_test.npy": _npy_bytes(_labels(0, 1)),
            },
            "python objects",
        ),
        (
            lambda: {
                "x_test.npy": _npy_bytes(_images(4))[:-40],
                "y_test.npy": _npy_bytes(_labels(0, 1, 0, 1)),
            },
            "x_test cannot be read",
        ),
    ],
)
def test_npz_members_that_cannot_be_read(tmp_path, capsys, make_members, needle):
    npz = tmp_path / "bad.npz"
    _zip_members(npz, make_members())
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, needle)


def test_npz_member_with_a_bad_crc(tmp_path, capsys):
    npz = tmp_path / "crc.npz"
    np.savez(npz, x_test=_images(4), y_test=_labels(0, 1, 0, 1))
    data = bytearray(npz.read_bytes())
    # inside x_test's pixels: the zip's CRC no longer matches
    at = data.index(b"\x93NUMPY") + 200
    data[at] ^= 0xFF
    npz.write_bytes(bytes(data))
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "cannot be read")


def test_npz_path_that_is_a_folder(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{tmp_path}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "is a folder", "folder:PATH")


@pytest.mark.parametrize("command", ["teacher", "distill", "demo", "bench"])
def test_unusable_out_is_refused_before_any_work(
    tmp_path, capsys, digits_teacher, command
):
    (tmp_path / "file").write_text("precious")
    extra = {
        "teacher": [],
        "distill": ["--teacher", digits_teacher],
        "demo": [],
        "bench": ["--methods", "cpsc", "--seeds", "1", "--iters", "2"],
    }[command]
    for out, needle in (
        (tmp_path / "file", "is a file"),
        (tmp_path / "file" / "sub", "which is a file"),
        ("", "is empty"),
    ):
        code, _, err = run_cli(capsys, command, *extra, "--out", out)
        assert_clean_error(code, err, needle)
    assert (tmp_path / "file").read_text() == "precious"


def test_sample_out_must_name_a_file(tmp_path, capsys, digits_teacher):
    for out, needle in (
        ("", "file name ending in .png"),
        (str(tmp_path) + "/", "file name ending in .png"),
        (tmp_path / "x.txt", "file name ending in .png"),
    ):
        code, _, err = run_cli(
            capsys, "sample", "--generator", tmp_path / "none.pt", "--out", out
        )
        assert_clean_error(code, err, needle)


def test_teacher_without_training_split(tmp_path, capsys):
    npz = make_colour_npz(tmp_path / "testonly.npz", train=False)
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "o"
    )
    assert_clean_error(code, err, "no training split")


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, capsys, digits_teacher):
    obj = checkpoint.load(digits_teacher, "teacher")
    sd = {k: v.clone() for k, v in obj["state_dict"].items()}
    sd["classifier.weight"].fill_(float("nan"))
    bad = tmp_path / "nan_teacher.pt"
    checkpoint.save(checkpoint.make("teacher", sd, obj["meta"]), str(bad))
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        bad,
        "--out",
        tmp_path / "o",
        "--iters",
        "3",
        "--batch-size",
        "16",
        "--no-progress",
        "--set",
        "log_every=1",
    )
    assert_clean_error(code, err, "NaN", "learning rate")


def test_existing_run_is_not_overwritten_silently(tmp_path, capsys, digits_teacher):
    out = tmp_path / "run"
    args = [
        "distill",
        "--teacher",
        digits_teacher,
        "--out",
        out,
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--no-progress",
        "--set",
        "eval_every=1",
    ]
    assert run_cli(capsys, *args)[0] == 0
    before = (out / "student.pt").read_bytes()
    code, _, err = run_cli(capsys, *args)
    assert_clean_error(code, err, "--resume", "--overwrite")
    assert (out / "student.pt").read_bytes() == before


def test_bad_set_override(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--out",
        tmp_path / "o",
        "--set",
        "no_such_key=1",
    )
    assert_clean_error(code, err, "unknown config keys", "no_such_key")


def test_distill_into_a_teacher_folder_keeps_the_teachers_metrics(tmp_path, capsys):
    out = tmp_path / "t"
    assert (
        main(
            [
                "teacher",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    before = (out / "metrics.json").read_text()
    code, _, err = run_cli(
        capsys, "distill", "--teacher", out / "teacher.pt", "--out", out, "--iters", "2"
    )
    assert_clean_error(code, err, "teacher training's", "another --out", "--overwrite")
    assert (out / "metrics.json").read_text() == before


def test_teacher_into_a_distillation_folder_keeps_its_metrics(
    tmp_path, capsys, digits_teacher
):
    run = tmp_path / "run"
    assert (
        main(
            [
                "distill",
                "--teacher",
                digits_teacher,
                "--out",
                str(run),
                "--iters",
                "2",
                "--set",
                "eval_every=2",
                "--no-progress",
            ]
        )
        == 0
    )
    before = (run / "metrics.json").read_text()
    code, _, err = run_cli(
        capsys, "teacher", "--dataset", "digits", "--epochs", "1", "--out", run
    )
    assert_clean_error(code, err, "distillation run", "--overwrite")
    assert (run / "metrics.json").read_text() == before


def test_a_closed_output_pipe_stops_quietly(monkeypatch, capsys):
    """`cpsc-lite models | head`: the reader goes away; one line on stderr, no traceback."""
    from cpsc_lite import cli

    def closed(text):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_print", closed)
    assert cli.main(["models"]) == 141
    err = capsys.readouterr().err
    assert "closed it" in err and "Traceback" not in err
