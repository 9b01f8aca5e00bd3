"""Hostile but fair input against the command line: about 150 cases, one test each.

Each case runs ``cpsc_lite.cli.main`` in this process and its outcome is one of:

* clean: exit 2 with a one-paragraph ``error:`` message (or argparse's usage error);
* works: exit 0 where the input is fine;
* traceback: any other exception escaping ``main`` (what a user would see as a traceback);
* silent accept: exit 0 on input that is clearly bad;
* refused: exit 2 on input that is fine;
* data loss: a file that existed before the command was changed or removed although the
  command did not pass ``--overwrite``.

A case passes when it ends clean or works (a case that may go either way passes with both)
and no code from a file ran. The shared set-up (a digits teacher, a finished run and a
stopped run) is built once for the module, by the first case that needs it (whose time
includes it); each case writes its own files in its own folder and runs there. Two more
cases fill a 1.1 MB tmpfs; they need root and ``mount`` and skip without them.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import shlex
import subprocess
import traceback
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cpsc_lite import checkpoint
from cpsc_lite.cli import main

BAD, GOOD, EITHER = "bad", "good", "either"
#: The smallest distillation that runs: two iterations of tiny networks.
TINY = [
    "--iters",
    "2",
    "--batch-size",
    "8",
    "--set",
    "ngf=4",
    "--set",
    "nz=4",
    "--no-progress",
]

#: Cases of about 3 s or more on two CPU cores (``-m "not slow"`` leaves them out): the
#: commands that do train, and the demo that trains a teacher before it refuses its folder.
SLOW = {
    "--set lr_generator=1e-4",
    "--set lr_generator=5e-4",
    "--set seed=1e3",
    "--config numbers.yaml",
    "demo into a finished run",
}
#: Cases that fail today because of a bug in the package: name -> the bug.
KNOWN_BUGS = {}


# ---- running a case


class Workspace:
    """What a case builds its command from: its own folder, the shared runs, the teacher."""

    def __init__(self, request, folder):
        self.request = request
        self.folder = str(folder)
        self.marker = os.path.join(self.folder, "pwned")  # code from a file writes it
        self._runs = 0

    @property
    def root(self):
        """The module's folder: ``teacher_dir``, and ``run_done``/``run_part`` once asked for."""
        return self.request.getfixturevalue("hostile_root")

    @property
    def teacher(self):
        return self.request.getfixturevalue("teacher")

    @property
    def run_done(self):
        return self.request.getfixturevalue("finished_run")

    @property
    def run_part(self):
        return self.request.getfixturevalue("stopped_run")

    def path(self, name):
        return os.path.join(self.folder, name)

    def out(self):
        """A fresh output folder."""
        self._runs += 1
        return self.path(f"run{self._runs}")

    def everything(self):
        """Every folder a case could harm: its own and the shared runs."""
        return [self.folder, self.root]

    def base(self):
        """The teacher checkpoint, loaded: the start of each edited variant."""
        return checkpoint.load(self.teacher, "teacher")


def snapshot(folder):
    """Path -> SHA-256 of every file under ``folder`` (nothing if it is not a folder)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run(argv, watch):
    """``cpsc-lite ARGV`` in-process: ``(exit code or "traceback"/"data loss", stderr)``."""
    before = {}
    for w in watch:
        before.update(snapshot(w))
    err = io.StringIO()
    outcome = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage + message, exit 2
        code = exc.code
    except BaseException:  # noqa: BLE001 - this is what the harness counts
        outcome, code = "traceback", None
        err.write(traceback.format_exc())
    after = {}
    for w in watch:
        after.update(snapshot(w))
    lost = [p for p, h in before.items() if after.get(p) != h]
    if lost and "--overwrite" not in argv and outcome is None:
        outcome = "data loss: " + ", ".join(lost)
    return outcome or str(code), err.getvalue()


def classify(code, expect):
    """The verdict on an outcome; a case that may go either way is clean or works."""
    if code == "traceback" or code.startswith("data loss"):
        return code
    if code == "0":
        return "silent accept" if expect == BAD else "works"
    if code in ("2", "143"):
        return "refused" if expect == GOOD else "clean"
    return f"exit {code}"


def check(argv, watch, expect, marker):
    """Runs the case; fails with the verdict and the first lines of stderr."""
    code, err = run(argv, watch)
    verdict = classify(code, expect)
    lines = err.splitlines()
    shown = "\n".join(lines[:15] + (["...", lines[-1]] if len(lines) > 15 else []))
    assert verdict in ("clean", "works"), f"{verdict}\n{shown}"
    assert not os.path.exists(marker), "code from a file ran"


# ---- files for the cases


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def images(n, size=8, channels=None):
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    return np.random.default_rng(n).integers(0, 255, shape, dtype=np.uint8)


def labels(*v):
    return np.array(v, dtype=np.int64)


def arrays(**named):
    """A writer of an ``.npz`` holding these arrays."""
    return lambda path: np.savez(path, **named)


def members(raw):
    """A writer of a zip file holding these members (name -> bytes)."""

    def write(path):
        with zipfile.ZipFile(path, "w") as z:
            for name, data in raw.items():
                z.writestr(name, data)

    return write


def raw_bytes(data):
    return lambda path: _write(path, data)


def bad_crc(path):
    np.savez(path, x_test=images(4), y_test=labels(0, 1, 0, 1))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[data.index(b"\x93NUMPY") + 200] ^= 0xFF
    _write(path, bytes(data))


def npz_folder(path):
    os.makedirs(path)
    np.savez(os.path.join(path, "d.npz"), x_test=images(2), y_test=labels(0, 1))


def nothing(path):
    pass


GOOD_NPZ = arrays(
    x_train=images(40),
    y_train=np.arange(40) % 2,
    x_test=images(10),
    y_test=np.arange(10) % 2,
)


class Evil:
    """Pickles as a call of ``os.system`` that writes ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo PWNED > {shlex.quote(self.marker)}",))


def yaml_that_runs_code(marker):
    command = json.dumps(f"echo PWNED > {shlex.quote(marker)}")
    return f"beta: !!python/object/apply:os.system [{command}]\n".encode()


def grey(size):
    return lambda p, i: Image.fromarray(images(1, size)[0]).save(p)


def non_square(p, i):
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(p)


def mixed_sizes(p, i):
    Image.fromarray(images(1, 8 + i)[0]).save(p)


def grey16(p, i):
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(p)


def text_png(p, i):
    _write(p, b"not an image")


def truncated_png(p, i):
    grey(8)(p, i)
    with open(p, "rb") as f:
        _write(p, f.read()[:30])


def image_folder(root, make, classes=("a", "b"), per=2):
    for split in ("train", "test"):
        for cl in classes:
            os.makedirs(os.path.join(root, split, cl), exist_ok=True)
            for i in range(per):
                make(os.path.join(root, split, cl, f"{i}.png"), i)
    return root


def symlink_loop(root):
    image_folder(root, grey(8))
    os.symlink(
        os.path.join(root, "train", "a"), os.path.join(root, "train", "a", "again")
    )


def empty_class(root):
    os.makedirs(os.path.join(root, "train", "a"))
    os.makedirs(os.path.join(root, "test", "a"))


# Edited teacher checkpoints: each takes the workspace and writes the file (or folder) at path.


def edited(change):
    return lambda ws, path: torch.save(change(ws.base()), path)


def no_meta(base):
    return {k: v for k, v in base.items() if k != "meta"}


def no_img_size(base):
    return dict(base, meta={k: v for k, v in base["meta"].items() if k != "img_size"})


def weights(fill):
    def change(base):
        sd = {
            k: fill(v) if v.is_floating_point() else v
            for k, v in base["state_dict"].items()
        }
        return dict(base, state_dict=sd)

    return change


def with_meta(**meta):
    return lambda base: dict(base, meta=dict(base["meta"], **meta))


def truncated_teacher(ws, path):
    with open(ws.teacher, "rb") as f:
        raw = f.read()
    _write(path, raw[: len(raw) // 2])


def folder_of_checkpoints(ws, path):
    os.makedirs(path)
    _write(os.path.join(path, "teacher.pt"), open(ws.teacher, "rb").read())


BAD_TEACHERS = [
    ("teacher no meta", edited(no_meta)),
    ("teacher no img_size", edited(no_img_size)),
    ("teacher num_classes ten", edited(with_meta(num_classes="ten"))),
    (
        "teacher NaN weights",
        edited(weights(lambda v: torch.full_like(v, float("nan")))),
    ),
    ("teacher 1e30 weights", edited(weights(lambda v: torch.full_like(v, 1e30)))),
    ("teacher wrong model", edited(with_meta(model="cnn_small"))),
    (
        "teacher pickled class",
        lambda ws, p: torch.save({"format": "cpsc_lite", "x": argparse.Namespace()}, p),
    ),
    ("teacher os.system pickle", lambda ws, p: torch.save(Evil(ws.marker), p)),
    ("teacher garbage", lambda ws, p: _write(p, b"\x00garbage" * 40)),
    ("teacher truncated", truncated_teacher),
    ("teacher empty file", lambda ws, p: _write(p, b"")),
    ("teacher is a folder", folder_of_checkpoints),
    ("teacher missing", lambda ws, p: None),
    ("teacher plain dict", lambda ws, p: torch.save({"a": torch.ones(1)}, p)),
]


# ---- the cases: (name, expectation, build(workspace, *args) -> (argv, watched folders))

CASES = []


def case(name, expect, build, *args):
    CASES.append((name, expect, build, args))


def distill(ws, *flags):
    return ["distill", "--teacher", ws.teacher, "--out", ws.out(), *TINY, *flags], []


def distill_with_config(ws, data):
    path = ws.path("config.yaml")
    _write(path, data(ws) if callable(data) else data)
    return distill(ws, "--config", path)


def teacher(ws, *flags):
    return ["teacher", "--out", ws.out(), "--no-progress", *flags], []


def bench(ws, *flags):
    return [
        "bench",
        *("--out", ws.out(), "--teacher", ws.teacher, "--no-progress"),
        *flags,
    ], []


def teacher_on(ws, spec, *flags):
    return ["teacher", "--dataset", spec, "--out", ws.out(), *flags], []


def teacher_on_npz(ws, write):
    path = ws.path("data.npz")
    write(path)
    return teacher_on(ws, f"npz:{path}", "--epochs", "1", "--no-progress")


def teacher_on_folder(ws, make, *flags):
    root = ws.path("images")
    make(root)
    return teacher_on(ws, f"folder:{root}", *flags)


def evaluate_edited(ws, make):
    path = ws.path("teacher.pt")
    make(ws, path)
    return ["evaluate", path], []


def distill_edited(ws, make):
    path = ws.path("teacher.pt")
    make(ws, path)
    return ["distill", "--teacher", path, "--out", ws.out(), *TINY], []


for setting, expect in [
    ("lr_generator=1e-4", GOOD),
    ("lr_generator=5e-4", GOOD),
    ("lr_student=1e6", EITHER),
    ("beta=abc", BAD),
    ("ckpt_every=0", BAD),
    ("nz=0", BAD),
    ("use_scl=maybe", BAD),
    ("gamma=[1", BAD),
    ("bn_reduce=max", BAD),
    ("temperature=0", BAD),
    ("kd_loss=l3", BAD),
    ("generator_betas=[1,2]", BAD),
    ("momentum=1.5", BAD),
    ("warmup_frac=1", BAD),
    ("eta=-1", BAD),
    ("alpha=nan", BAD),
    ("beta=inf", BAD),
    ("g_steps=2.5", BAD),
    ("unknown_key=1", BAD),
    ("novalue", BAD),
    ("=3", BAD),
    ("jitter=1000", BAD),
    ("input_source=camera", BAD),
    ("seed=1e3", GOOD),
    ("eval_every=0", BAD),
]:
    case(f"--set {setting}", expect, distill, "--set", setting)

for flags in [
    ["--batch-size", "0"],
    ["--batch-size", "-3"],
    ["--seed", "-1"],
    ["--iters", "0"],
    ["--iters", "-5"],
    ["--g-steps", "0"],
    ["--s-steps", "-1"],
    ["--iters", "abc"],
    ["--method", "magic"],
    ["--student", "resnet9000"],
    ["--device", "tpu"],
    ["--config", "no_such_preset"],
    ["--amp", "fp8"],
]:
    case("distill " + " ".join(flags), BAD, distill, *flags)

for name, data, expect in [
    ("binary.yaml", bytes(range(256)) * 4, BAD),
    ("list.yaml", b"- 1\n- 2\n", BAD),
    ("numbers.yaml", b"lr_generator: 1e-4\nbeta: 5e-1\n", GOOD),
    ("tags.yaml", lambda ws: yaml_that_runs_code(ws.marker), BAD),
]:
    case(f"--config {name}", expect, distill_with_config, data)

for flags, expect in [
    (["--epochs", "0"], BAD),
    (["--batch-size", "0"], BAD),
    (["--lr", "0"], BAD),
    (["--lr", "-1"], BAD),
    (["--model", "nope"], BAD),
    (["--epochs", "1"], GOOD),
    (["--eval-every", "0"], BAD),
    (["--ckpt-every", "-1"], BAD),
]:
    case("teacher " + " ".join(flags), expect, teacher, *flags)

for flags in [
    ["--iters", "0"],
    ["--seeds", "0"],
    ["--methods", "nope"],
    ["--methods", ""],
]:
    case("bench " + " ".join(flags), BAD, bench, *flags)

# ---- npz files
for name, write in [
    (
        "npz text members",
        members({"x_test.npy": b"hello", "y_test.npy": b"world"}),
    ),
    (
        "npz object array",
        members(
            {
                "x_test.npy": npy(np.array([1, "a"], dtype=object)),
                "y_test.npy": npy(labels(0, 1)),
            }
        ),
    ),
    (
        "npz truncated member",
        members(
            {
                "x_test.npy": npy(images(9))[:-30],
                "y_test.npy": npy(labels(*range(9))),
            }
        ),
    ),
    ("npz labels 2**40", arrays(x_test=images(2), y_test=labels(0, 2**40))),
    ("npz labels {0,2,5}", arrays(x_test=images(3), y_test=labels(0, 2, 5))),
    ("npz one class", arrays(x_test=images(3), y_test=labels(0, 0, 0))),
    (
        "npz test label beyond train",
        arrays(
            x_train=images(4),
            y_train=labels(0, 1, 0, 1),
            x_test=images(2),
            y_test=labels(0, 2),
        ),
    ),
    ("npz negative labels", arrays(x_test=images(2), y_test=labels(-1, 0))),
    (
        "npz float images",
        arrays(x_test=images(2).astype(np.float32), y_test=labels(0, 1)),
    ),
    ("npz float labels", arrays(x_test=images(2), y_test=np.array([0.0, 1.0]))),
    ("npz bool labels", arrays(x_test=images(2), y_test=np.array([True, False]))),
    ("npz 2-D labels", arrays(x_test=images(2), y_test=np.eye(2, dtype=np.int64))),
    ("npz 4x4 images", arrays(x_test=images(2, 4), y_test=labels(0, 1))),
    ("npz 2 channels", arrays(x_test=images(2, 8, 2), y_test=labels(0, 1))),
    (
        "npz non-square",
        arrays(x_test=np.zeros((2, 8, 9), np.uint8), y_test=labels(0, 1)),
    ),
    ("npz no images", arrays(x_test=np.zeros((0, 8, 8), np.uint8), y_test=labels())),
    ("npz count mismatch", arrays(x_test=images(3), y_test=labels(0, 1))),
    (
        "npz only x_train",
        arrays(x_test=images(2), y_test=labels(0, 1), x_train=images(2)),
    ),
    (
        "npz class_names wrong length",
        arrays(x_test=images(2), y_test=labels(0, 1), class_names=np.array(["a"])),
    ),
    (
        "npz class_names 2-D",
        arrays(
            x_test=images(2), y_test=labels(0, 1), class_names=np.array([["a", "b"]])
        ),
    ),
    (
        "npz train/test shapes differ",
        arrays(
            x_train=images(2, 12),
            y_train=labels(0, 1),
            x_test=images(2),
            y_test=labels(0, 1),
        ),
    ),
    ("npz not a zip", raw_bytes(b"hello world")),
    ("npz empty file", raw_bytes(b"")),
    ("npz folder", npz_folder),
    ("npz missing", nothing),
    ("npz bad CRC", bad_crc),
]:
    case(name, BAD, teacher_on_npz, write)
case("npz good", GOOD, teacher_on_npz, GOOD_NPZ)

# ---- image folders
for name, make, expect in [
    ("folder 3x3", grey(3), BAD),
    ("folder 136x136", grey(136), BAD),
    ("folder 300x300", grey(300), BAD),
    ("folder 8x8", grey(8), GOOD),
    ("folder non-square", non_square, BAD),
    ("folder mixed sizes", mixed_sizes, BAD),
    ("folder 16-bit grey", grey16, GOOD),
    ("folder text named .png", text_png, BAD),
    ("folder truncated png", truncated_png, BAD),
]:
    case(
        name,
        expect,
        teacher_on_folder,
        lambda root, make=make: image_folder(root, make),
        *("--epochs", "1", "--no-progress"),
    )
case(
    "folder one class",
    BAD,
    teacher_on_folder,
    lambda root: image_folder(root, grey(8), classes=("a",)),
    *("--epochs", "1", "--no-progress"),
)
case(
    "folder symlink loop",
    GOOD,
    teacher_on_folder,
    symlink_loop,
    *("--epochs", "1", "--no-progress"),
)
case("folder empty class", BAD, teacher_on_folder, empty_class, "--no-progress")

# ---- checkpoints
for name, make in BAD_TEACHERS:
    case(name + " (evaluate)", BAD, evaluate_edited, make)
    case(name + " (distill)", BAD, distill_edited, make)
case("evaluate a good teacher", GOOD, lambda ws: (["evaluate", ws.teacher], []))
case(
    "sample from a teacher file",
    BAD,
    lambda ws: (
        ["sample", "--generator", ws.teacher, "--out", ws.path("s.png")],
        [],
    ),
)


# ---- outputs
def precious(ws):
    return _write(ws.path("a_file"), b"precious")


def unusable_out(ws, command, target):
    argv = {
        "distill": ["distill", "--teacher", ws.teacher, *TINY],
        "teacher": ["teacher", "--no-progress", "--epochs", "1"],
        "demo": ["demo", "--no-progress"],
        "bench": [
            "bench",
            *("--teacher", ws.teacher, "--iters", "1", "--seeds", "1"),
            *("--methods", "cpsc", "--no-progress"),
        ],
    }[command]
    return [*argv, "--out", target(ws)], ws.everything()


def sample_to(ws, target, *flags):
    generator = os.path.join(ws.run_done, "generator.pt")
    argv = ["sample", "--generator", generator, "--out", target(ws), *flags]
    return argv, ws.everything()


for name, target in [
    ("--out is a file", precious),
    ("--out under a file", lambda ws: os.path.join(precious(ws), "sub")),
    ("--out empty", lambda ws: ""),
]:
    for command in ("distill", "teacher", "demo", "bench"):
        case(f"{command} {name}", BAD, unusable_out, command, target)
for name, target in [
    ("sample --out ''", lambda ws: ""),
    ("sample --out a folder/", lambda ws: ws.folder + "/"),
    ("sample --out x.txt", lambda ws: ws.path("x.txt")),
    ("sample --out a file", precious),
]:
    case(name, BAD, sample_to, target)
case(
    "sample --per-class 0",
    BAD,
    sample_to,
    lambda ws: ws.path("s.png"),
    "--per-class",
    "0",
)


# ---- folders other commands own (must survive without --overwrite)
def into_teachers_folder(ws):
    folder = os.path.dirname(ws.teacher)
    return ["distill", "--teacher", ws.teacher, "--out", folder, *TINY], [folder]


def into_finished_run(ws, *argv):
    return [*argv, "--out", ws.run_done], [ws.run_done]


def resume_with(ws, *flags):
    return [
        "distill",
        *flags,
        *("--out", ws.run_part, "--resume"),
    ], [ws.run_part]


def resume_with_another_teacher(ws):
    other = ws.path("other_teacher.pt")
    torch.save(weights(lambda v: v + 0.01)(ws.base()), other)
    return resume_with(ws, "--teacher", other, *TINY[:-1])


def resume_with_other_data(ws):
    data = ws.path("data.npz")
    GOOD_NPZ(data)
    return resume_with(ws, "--teacher", ws.teacher, "--dataset", f"npz:{data}", *TINY)


case("distill into a teacher's folder", BAD, into_teachers_folder)
case(
    "teacher into a distillation's folder",
    BAD,
    into_finished_run,
    *("teacher", "--epochs", "1", "--no-progress"),
)
case(
    "distill again into a finished run",
    BAD,
    lambda ws: into_finished_run(ws, "distill", "--teacher", ws.teacher, *TINY),
)
case("demo into a finished run", BAD, into_finished_run, "demo", "--no-progress")
case("--resume with another teacher", BAD, resume_with_another_teacher)
case("--resume with other data", BAD, resume_with_other_data)


def _param(name, expect, build, args):
    marks = [pytest.mark.slow] if name in SLOW else []
    if name in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
    return pytest.param(expect, build, args, id=name, marks=marks)


# ---- fixtures and tests


def _quiet(*argv):
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()) as err,
    ):
        code = main([str(a) for a in argv])
    assert code == 0, err.getvalue()


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    """The module's folder, which holds the shared runs."""
    return str(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def teacher(hostile_root):
    """A tiny digits teacher, 2 epochs, in ``teacher_dir``."""
    folder = os.path.join(hostile_root, "teacher_dir")
    _quiet("teacher", "--out", folder, "--epochs", "2", "--no-progress")
    return os.path.join(folder, "teacher.pt")


@pytest.fixture(scope="module")
def finished_run(hostile_root, teacher):
    """A finished 2-iteration distillation, ``run_done``."""
    out = os.path.join(hostile_root, "run_done")
    _quiet("distill", "--teacher", teacher, "--out", out, *TINY)
    return out


@pytest.fixture(scope="module")
def stopped_run(hostile_root, teacher):
    """A distillation of 4 iterations stopped after 2, ``run_part``."""
    out = os.path.join(hostile_root, "run_part")
    _quiet(
        *("distill", "--teacher", teacher, "--out", out, *TINY),
        *("--iters", "4", "--stop-after", "2"),
    )
    return out


@pytest.mark.parametrize("expect, build, args", [_param(*c) for c in CASES])
def test_hostile_input(expect, build, args, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an `--out ""` taken as the current folder lands here
    ws = Workspace(request, tmp_path)
    argv, watch = build(ws, *args)
    check(argv, watch, expect, ws.marker)


def test_the_cases_have_distinct_names():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) >= 140
    assert set(SLOW) | set(KNOWN_BUGS) <= set(names)


def test_the_code_check_would_see_code_run(tmp_path):
    """The files that try to run code do run it when loaded unsafely, so a case that
    loads them safely proves something."""
    marker = str(tmp_path / "pwned")
    pickle.loads(pickle.dumps(Evil(marker)))
    assert os.path.exists(marker)
    os.remove(marker)
    yaml.unsafe_load(yaml_that_runs_code(marker))
    assert os.path.exists(marker)


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory):
    """A 1.1 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk cases mount a tmpfs, which needs root")
    mount = str(tmp_path_factory.mktemp("tiny_disk"))
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1100k", "tmpfs", mount],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(
            f"the full-disk cases could not mount a tmpfs: {proc.stderr.strip()}"
        )
    yield mount
    subprocess.run(["umount", mount], capture_output=True)


def onto_full_disk(teacher, disk):
    return [
        *("distill", "--teacher", teacher, "--out", os.path.join(disk, "r")),
        *("--iters", "4", "--batch-size", "8", "--set", "ckpt_every=2"),
        "--no-progress",
    ]


def onto_nearly_full_disk(teacher, disk):
    out = os.path.join(disk, "t")
    return ["teacher", "--out", out, "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize(
    "expect, build",
    [
        pytest.param(BAD, onto_full_disk, id="distill onto a full disk"),
        pytest.param(
            EITHER, onto_nearly_full_disk, id="teacher onto a nearly full disk"
        ),
    ],
)
def test_full_disk(expect, build, tiny_disk, teacher, tmp_path, monkeypatch):
    """In this order: the distillation leaves the disk nearly full for the teacher."""
    monkeypatch.chdir(tmp_path)
    check(build(teacher, tiny_disk), [], expect, str(tmp_path / "pwned"))
