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
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cpsc_lite import checkpoint
from cpsc_lite.cli import main

from conftest import REPO

#: The first of two writers: holds a folder's lock until its standard input closes.
HOLDER = """
import sys
from cpsc_lite import folders
with folders.hold(sys.argv[1], "a first writer in a test", lock_name=sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""

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
    "distill after a command that was killed (stale lock)",
    "sample --overwrite its own earlier file",
    "distill --overwrite over a finished run without state.pt",
    "bench --overwrite over a table",
    "bench --resume keeps the finished rows",
    "bench --resume continues its interrupted teacher",
    "demo --resume continues its interrupted teacher",
    "bench --profile over profile.json",
    "bench --profile --overwrite",
    "OMP_NUM_THREADS=2,1 bench --workers 2",
    "distill --out '~/x'",
    "teacher --out '~/t'",
    "class names $x$ in the figures",
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

    def copy(self, folder, name):
        """A copy of a shared folder (a run, a teacher's folder) in the case's own folder."""
        return shutil.copytree(folder, self.path(name))

    def held(self, folder, lock_name=".cpsc-lite.lock"):
        """``folder``, locked by another process until the case ends (the first of two writers)."""
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, folder, lock_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=REPO),
        )
        assert proc.stdout.readline().strip() == "held"

        def release():
            proc.stdin.close()
            proc.wait(30)

        self.request.addfinalizer(release)
        return folder


def snapshot(folder):
    """Path -> SHA-256 of every file under ``folder`` (nothing if it is not a folder)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


class Strict(str):
    """A watched folder whose files must survive even a command that passes ``--overwrite``
    (it replaces only what that command wrote)."""


def run(argv, watch):
    """``cpsc-lite ARGV`` in-process: ``(exit code or "traceback"/"data loss", stderr)``."""
    before, strict = {}, set()
    for w in watch:
        files = snapshot(w)
        before.update(files)
        if isinstance(w, Strict):
            strict |= set(files)
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
    lost = [
        p
        for p, h in before.items()
        if after.get(p) != h and ("--overwrite" not in argv or p in strict)
    ]
    if lost and outcome is None:
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


def check(argv, watch, expect, marker, after=None):
    """Runs the case; fails with the verdict and the first lines of stderr. ``after()`` may name
    what a command that exited 0 got wrong (then it is misleading)."""
    code, err = run(argv, watch)
    verdict = classify(code, expect)
    if verdict == "works" and after is not None and after():
        verdict = f"misleading: {after()}"
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


# ---- one writer per folder (issue 33): a second writer is refused, naming the first
def locked(ws, make_argv, folder=None, lock_name=".cpsc-lite.lock"):
    """``make_argv(folder)`` run while another process holds ``folder``'s lock."""
    folder = folder or ws.out()
    os.makedirs(folder, exist_ok=True)
    ws.held(folder, lock_name)
    return make_argv(folder), [folder]


def bench_args(ws, out, *flags):
    return [
        *("bench", "--teacher", ws.teacher, "--out", out, "--iters", "2"),
        *("--seeds", "1", "--batch-size", "8", "--no-progress", *flags),
    ]


case(
    "distill into a folder another command writes",
    BAD,
    lambda ws: locked(
        ws, lambda o: ["distill", "--teacher", ws.teacher, "--out", o, *TINY]
    ),
)
case(
    "distill --resume while the run is being resumed",
    BAD,
    lambda ws: locked(
        ws,
        lambda o: ["distill", "--teacher", ws.teacher, "--out", o, *TINY, "--resume"],
        ws.copy(ws.run_part, "part"),
    ),
)
case(
    "teacher into a folder another command writes",
    BAD,
    lambda ws: locked(ws, lambda o: ["teacher", "--out", o, "--epochs", "1"]),
)
case(
    "demo into a folder another command writes",
    BAD,
    lambda ws: locked(ws, lambda o: ["demo", "--out", o, "--iters", "2"]),
)
case(
    "bench --append into a folder another bench writes",
    BAD,
    lambda ws: locked(
        ws, lambda o: bench_args(ws, o, "--methods", "noise", "--append")
    ),
)
case(
    "bench --profile into a folder another command writes",
    BAD,
    lambda ws: locked(
        ws, lambda o: ["bench", "--profile", "--teacher", ws.teacher, "--out", o]
    ),
)
case(
    "bench --merge into a folder another command writes",
    BAD,
    lambda ws: locked(
        ws, lambda o: ["bench", "--merge", ws.folder, "--out", o, "--overwrite"]
    ),
)
case(
    "record into a record another record writes",
    BAD,
    lambda ws: locked(
        ws,
        lambda o: ["record", ws.run_done, "--name", "r", "--into", o],
        ws.path("results"),
        ".r.lock",
    ),
)
case(
    "record a run that another command writes",
    BAD,
    lambda ws: locked(
        ws,
        lambda o: ["record", o, "--name", "r", "--into", ws.path("results")],
        ws.copy(ws.run_done, "done"),
    ),
)


def after_a_killed_command(ws):
    """The lock file of a process that died without removing it: taken over."""
    out = ws.out()
    os.makedirs(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = dict(pid=dead.pid, host="here", command="cpsc-lite distill", what="x")
    _write(os.path.join(out, ".cpsc-lite.lock"), json.dumps(record).encode())
    return ["distill", "--teacher", ws.teacher, "--out", out, *TINY], []


case(
    "distill after a command that was killed (stale lock)", GOOD, after_a_killed_command
)


# ---- nothing replaced without --overwrite, and --overwrite replaces only the command's own files
def record_onto_its_own_folder(ws, *flags):
    run = ws.copy(ws.run_done, "myrun")
    return ["record", run, "--name", "myrun", "--into", ws.folder, *flags], [
        Strict(run)
    ]


def record_onto_a_folder_it_did_not_write(ws):
    mine = ws.path("results/mine")
    os.makedirs(mine)
    _write(os.path.join(mine, "notes.txt"), b"mine")
    argv = ["record", ws.run_done, "--name", "mine", "--into", ws.path("results")]
    return [*argv, "--overwrite"], [Strict(mine)]


case("record onto its own folder", BAD, record_onto_its_own_folder)
case(
    "record onto its own folder --overwrite",
    BAD,
    record_onto_its_own_folder,
    "--overwrite",
)
case(
    "record --overwrite onto a folder it did not write",
    BAD,
    record_onto_a_folder_it_did_not_write,
)


def sample_onto(ws, make, *flags):
    target = make(ws)
    gen = os.path.join(ws.run_done, "generator.pt")
    argv = ["sample", "--generator", gen, "--per-class", "2", "--out", target, *flags]
    return argv, [Strict(os.path.dirname(target))]


def a_dataset(ws, train=True):
    path = ws.path("data/data.npz")
    os.makedirs(os.path.dirname(path))
    (GOOD_NPZ if train else arrays(x_test=images(4), y_test=labels(0, 1, 0, 1)))(path)
    return path


def own_sample(ws):
    path = ws.path("mine/s.png")
    gen = os.path.join(ws.run_done, "generator.pt")
    _quiet("sample", "--generator", gen, "--per-class", "2", "--out", path)
    return path


for name, make, flags in [
    ("sample --out a data set .npz", a_dataset, []),
    ("sample --out a data set .npz --overwrite", a_dataset, ["--overwrite"]),
    ("sample --out a test-only data set .npz", lambda ws: a_dataset(ws, False), []),
    ("sample --out a run's samples.png", lambda ws: ws.copy(ws.run_done, "r") + "/samples.png", []),
    (
        "sample --out a run's samples.png --overwrite",
        lambda ws: ws.copy(ws.run_done, "r") + "/samples.png",
        ["--overwrite"],
    ),
    ("sample twice onto one file", own_sample, []),
]:  # fmt: skip
    case(name, BAD, sample_onto, make, *flags)


def sample_overwrite_own(ws):
    argv, _ = sample_onto(ws, own_sample, "--overwrite")
    return argv, []


case("sample --overwrite its own earlier file", GOOD, sample_overwrite_own)


def a_run_without_its_state(ws, *flags, remove=("state.pt",)):
    run = ws.copy(ws.run_done, "run")
    for name in remove:
        os.remove(os.path.join(run, name))
    watch = [run] if "--overwrite" in flags else [Strict(run)]
    return ["distill", "--teacher", ws.teacher, "--out", run, *TINY, *flags], watch


case("distill over a finished run without state.pt", BAD, a_run_without_its_state)
case(
    "distill --resume over a finished run without state.pt",
    BAD,
    a_run_without_its_state,
    "--resume",
)
case(
    "distill --overwrite over a finished run without state.pt",
    GOOD,
    a_run_without_its_state,
    "--overwrite",
)
case(
    "distill over a run folder holding only metrics.json",
    BAD,
    lambda ws: a_run_without_its_state(
        ws, remove=("state.pt", "student.pt", "generator.pt")
    ),
)


def bench_over_a_table(ws, *flags):
    out = ws.out()
    _quiet(*bench_args(ws, out, "--methods", "noise"))
    return bench_args(ws, out, "--methods", "data", *flags), [out]


def profile_twice(ws, *flags):
    out = ws.out()
    argv = ["bench", "--profile", "--teacher", ws.teacher, "--out", out]
    _quiet(*argv)
    return [*argv, *flags], [out]


case("bench over a folder with a table", BAD, bench_over_a_table)
case("bench --overwrite over a table", GOOD, bench_over_a_table, "--overwrite")
case("bench --profile over profile.json", BAD, profile_twice)
case("bench --profile --overwrite", GOOD, profile_twice, "--overwrite")


def bench_resume(ws):
    out = ws.out()
    _quiet(*bench_args(ws, out, "--methods", "noise"))
    before = json.load(open(os.path.join(out, "results.json")))["methods"]["noise"]

    def after():
        rows = json.load(open(os.path.join(out, "results.json")))["methods"]
        if (
            set(rows) != {"noise", "data"}
            or rows["noise"]["student_accs"] != before["student_accs"]
        ):
            return f"rows {sorted(rows)}"

    argv = bench_args(ws, out, "--methods", "noise,data", "--resume")
    return argv, [], dict(after=after)


case("bench --resume keeps the finished rows", GOOD, bench_resume)


def across_kinds(ws, command):
    if command == "teacher":
        run = ws.copy(ws.run_done, "run")
        argv = ["teacher", "--out", run, "--epochs", "1", "--no-progress"]
    elif command == "distill":
        run = ws.copy(os.path.dirname(ws.teacher), "t")
        argv = [
            "distill",
            "--teacher",
            os.path.join(run, "teacher.pt"),
            "--out",
            run,
            *TINY,
        ]
    else:
        run = ws.copy(os.path.dirname(ws.teacher), "t")
        argv = ["demo", "--out", run, "--iters", "2", "--no-progress"]
    return [*argv, "--overwrite"], [Strict(run)]


KINDS = (
    ("teacher", "a distillation's"),
    ("distill", "a teacher's"),
    ("demo", "a teacher's"),
)
for command, whose in KINDS:
    case(f"{command} --overwrite into {whose} folder", BAD, across_kinds, command)


def interrupted(ws, command, *flags):
    """A folder whose teacher training (bench's or the demo's) stopped after its second epoch."""
    from cpsc_lite.config import TeacherConfig
    from cpsc_lite.data import load_dataset
    from cpsc_lite.teacher import train_teacher

    out = ws.out()
    cfg = TeacherConfig(epochs=3, shifts=False)
    train_teacher(load_dataset("digits"), cfg, False, out_dir=out, ckpt_every=1)
    if command == "bench":
        argv = [
            *("bench", "--out", out, "--methods", "noise", "--iters", "2"),
            *("--seeds", "1", "--batch-size", "8", "--teacher-epochs", "3"),
        ]
    else:
        argv = ["demo", "--out", out, "--iters", "2", "--teacher-epochs", "3"]
    # --resume consumes teacher_state.pt once teacher.pt is written: not a loss
    return [*argv, "--no-progress", *flags], [] if "--resume" in flags else [out]


for command in ("bench", "demo"):
    case(f"{command} rerun over its interrupted teacher", BAD, interrupted, command)
    case(
        f"{command} --resume continues its interrupted teacher",
        GOOD,
        interrupted,
        command,
        "--resume",
    )
case("distill --resume --overwrite", BAD, distill, "--resume", "--overwrite")


# ---- silent accepts and tracebacks
for device in ("xpu", "meta", "vulkan"):
    case(f"distill --device {device}", BAD, distill, "--device", device)
case("distill --set device=xpu", BAD, distill, "--set", "device=xpu")
case("teacher --device meta", BAD, teacher, "--device", "meta", "--epochs", "1")
case(
    "evaluate --device xpu",
    BAD,
    lambda ws: (["evaluate", ws.teacher, "--device", "xpu"], []),
)
case(
    "demo --device vulkan",
    BAD,
    lambda ws: (["demo", "--out", ws.out(), "--device", "vulkan"], []),
)
case("bench --device meta", BAD, bench, "--device", "meta", "--methods", "noise")

for name, into in [
    ("record --into a file", lambda ws: precious(ws)),
    ("record --into under a file", lambda ws: os.path.join(precious(ws), "sub")),
]:
    case(
        name,
        BAD,
        lambda ws, into=into: (
            ["record", ws.run_done, "--name", "x", "--into", into(ws)],
            ws.everything(),
        ),
    )


def omp_nested(ws):
    argv = bench_args(
        ws, ws.out(), "--methods", "noise", "--seeds", "2", "--workers", "2"
    )
    return argv, [], dict(env={"OMP_NUM_THREADS": "2,1"})


case("OMP_NUM_THREADS=2,1 bench --workers 2", GOOD, omp_nested)

BIG = str(2**70)
case(
    "sample --seed 2**70",
    BAD,
    sample_to,
    lambda ws: ws.path("s.png"),
    "--seed",
    BIG,
)
case("sample --seed -1", BAD, sample_to, lambda ws: ws.path("s.png"), "--seed", "-1")
case("distill --seed 2**70", BAD, distill, "--seed", BIG)
case("teacher --seed 2**70", BAD, teacher, "--seed", BIG, "--epochs", "1")
case("bench --first-seed 2**70", BAD, bench, "--first-seed", BIG, "--methods", "noise")
case(
    "bench seeds past 2**32", BAD, bench, "--first-seed", str(2**32 - 1), "--seeds", "2"
)
case(
    "demo --seed 2**70",
    BAD,
    lambda ws: (["demo", "--out", ws.out(), "--seed", BIG], []),
)
case("distill --stop-after -1", BAD, distill, "--stop-after", "-1")
case("distill --stop-after 0", BAD, distill, "--stop-after", "0")
case(
    "bench --methods noise,noise",
    BAD,
    bench,
    "--methods",
    "noise,noise",
    "--iters",
    "2",
)


def state_without(ws, key, teacher_state=False):
    if teacher_state:
        out = interrupted(ws, "demo")[0][2]
        path = os.path.join(out, "teacher_state.pt")
        argv = ["teacher", "--out", out, "--epochs", "3", "--resume", "--no-progress"]
    else:
        out = ws.copy(ws.run_part, "part")
        path = os.path.join(out, "state.pt")
        argv = ["distill", "--teacher", ws.teacher, "--out", out, *TINY, "--resume"]
    obj = torch.load(path, weights_only=True)
    del obj["state"][key]
    torch.save(obj, path)
    return argv, [out]


for key in ("sched_g", "rng", "iteration", "config"):
    case(f"state.pt without {key!r}", BAD, state_without, key)
case("teacher_state.pt without 'sched'", BAD, state_without, "sched", True)


def teacher_resume_on(ws, classes):
    out = interrupted(ws, "demo")[0][2]
    data = ws.path("other.npz")
    rng = np.random.default_rng(1)
    n = 10 * classes
    arrays(
        x_train=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8),
        y_train=np.arange(n) % classes,
        x_test=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8),
        y_test=np.arange(n) % classes,
    )(data)
    argv = ["teacher", "--dataset", f"npz:{data}", "--out", out, "--epochs", "3"]
    return [*argv, "--resume", "--no-progress"], [out]


case("teacher --resume on other data of the same shape", BAD, teacher_resume_on, 10)
case("teacher --resume on data with another class count", BAD, teacher_resume_on, 3)


def in_home(ws, command, where):
    home = ws.path("home")
    os.makedirs(home)
    argv = {
        "distill": ["distill", "--teacher", ws.teacher, "--out", "~/x", *TINY],
        "teacher": ["teacher", "--out", "~/t", "--epochs", "1", "--no-progress"],
        "sample": [
            *("sample", "--generator", os.path.join(ws.run_done, "generator.pt")),
            *("--out", "~/s.png"),
        ],
        "record": ["record", ws.run_done, "--name", "n", "--into", "~/r"],
    }[command]

    def after():
        if not os.path.exists(os.path.join(home, where)) or os.path.exists("~"):
            return f"{where} is not in $HOME"

    return argv, [], dict(env={"HOME": home}, after=after)


for command, flag, where in [
    ("distill", "--out '~/x'", "x/student.pt"),
    ("teacher", "--out '~/t'", "t/teacher.pt"),
    ("sample", "--out '~/s.png'", "s.png"),
    ("record", "--into '~/r'", "r/n/run.json"),
]:
    case(f"{command} {flag}", GOOD, in_home, command, where)


def evaluate_npz_teacher(ws):
    data_dir = ws.path("data")
    os.makedirs(data_dir)
    GOOD_NPZ(os.path.join(data_dir, "mine.npz"))
    out = os.path.join(data_dir, "t")
    here = os.getcwd()
    os.chdir(data_dir)
    try:
        _quiet(
            "teacher",
            "--dataset",
            "npz:mine.npz",
            "--out",
            out,
            "--epochs",
            "1",
            "--no-progress",
        )
    finally:
        os.chdir(here)
    return ["evaluate", os.path.join(out, "teacher.pt")], []


case("evaluate an npz teacher without --dataset", BAD, evaluate_npz_teacher)


def maths_class_names(ws):
    data = ws.path("names.npz")
    arrays(
        x_train=images(40),
        y_train=np.arange(40) % 2,
        x_test=images(10),
        y_test=np.arange(10) % 2,
        class_names=np.array(["$x$", "$\\notacommand$"]),
    )(data)
    t = ws.path("t")
    _quiet(
        "teacher",
        "--dataset",
        f"npz:{data}",
        "--out",
        t,
        "--epochs",
        "1",
        "--no-progress",
    )
    out = ws.out()
    argv = [
        "distill",
        "--teacher",
        os.path.join(t, "teacher.pt"),
        "--dataset",
        f"npz:{data}",
    ]

    def after():
        if not os.path.exists(os.path.join(out, "samples.png")):
            return "no samples.png"

    return [*argv, "--out", out, *TINY], [], dict(after=after)


case("class names $x$ in the figures", GOOD, maths_class_names)


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
    argv, watch, *extra = build(ws, *args)
    extra = extra[0] if extra else {}
    for key, value in extra.get("env", {}).items():
        monkeypatch.setenv(key, value)
    check(argv, watch, expect, ws.marker, extra.get("after"))


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


# ---- real processes: signals, a real race, the environment (issue 33). Each is a few seconds.
def cpsc(*argv, env=None, **kw):
    """``cpsc-lite ARGV`` as its own process (started, not waited for)."""
    full = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "cpsc_lite", *map(str, argv)],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and a child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def finished(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(proc, condition, timeout=180):
    start = time.time()
    while time.time() - start < timeout and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def handles_sigterm(proc):
    """Whether ``proc`` has installed its SIGTERM handler (Linux: its caught-signals mask)."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            caught = [ln for ln in f if ln.startswith("SigCgt:")][0].split()[1]
    except (OSError, IndexError):
        return False
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def stop_when(proc, condition, sig=signal.SIGTERM):
    """Send ``sig`` once ``condition()`` holds; ``(exit code, stderr, seconds it took to stop)``."""
    assert wait_until(proc, condition), "the process ended before the moment to stop it"
    start = time.time()
    proc.send_signal(sig)
    code, _, err = finished(proc, 60)
    return code, err, time.time() - start


def flat_text(text):
    return " ".join(text.split())


def p_two_real_distills(tmp, teacher):
    out = tmp / "race"
    long = ["--iters", "100000", "--batch-size", "8", "--set", "ngf=4", "--set", "nz=4"]
    first = cpsc("distill", "--teacher", teacher, "--out", out, *long, "--no-progress")
    try:
        assert wait_until(first, lambda: (out / ".cpsc-lite.lock").exists())
        code, _, err = finished(
            cpsc("distill", "--teacher", teacher, "--out", out, *TINY)
        )
        assert code == 2 and f"pid {first.pid}" in flat_text(err), err
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()
        first.wait()


def p_sample_obeys_sigterm(tmp, teacher, done):
    gen = os.path.join(done, "generator.pt")
    proc = cpsc(
        "sample", "--generator", gen, "--per-class", "4000", "--out", tmp / "s.png"
    )
    code, err, took = stop_when(proc, lambda: handles_sigterm(proc))
    # within a second or two (5 s allow for a loaded test machine)
    assert code == 143 and took < 5 and "Traceback" not in err, (code, took, err)
    assert not (
        tmp / "s.png"
    ).exists() and "Nothing was left half-written" in flat_text(err)


def p_bench_workers_obey_sigterm(tmp, teacher):
    out = tmp / "b"
    argv = ["bench", "--teacher", teacher, "--methods", "noise", "--seeds", "2"]
    proc = cpsc(
        *argv, "--iters", "100000", "--workers", "2", "--out", out, "--no-progress"
    )
    wait_until(proc, lambda: handles_sigterm(proc))
    time.sleep(2)  # the workers are running
    code, err, took = stop_when(proc, lambda: True)
    assert code == 143 and took < 5, (took, err)
    assert "no method had finished" in flat_text(err), err


def p_bench_mid_method_then_resume(tmp, teacher):
    out = tmp / "b"
    argv = ["bench", "--teacher", teacher, "--methods", "noise,cpsc", "--seeds", "1"]
    argv += ["--iters", "400", "--batch-size", "8", "--out", out, "--no-progress"]
    proc = cpsc(*argv)
    code, err, took = stop_when(proc, lambda: (out / "results.json").exists())
    text = flat_text(err)
    assert code == 143 and "finished methods (noise)" in text and "--resume" in text, (
        err
    )
    noise = json.loads((out / "results.json").read_text())["methods"]["noise"]
    argv[argv.index("400")] = "4"  # the rerun's budget differs: refused, not mixed
    code, _, err = finished(cpsc(*argv, "--resume"))
    assert code == 2 and "another budget" in err
    argv[argv.index("4")] = "400"
    code, _, err = finished(cpsc(*argv, "--resume"))
    rows = json.loads((out / "results.json").read_text())["methods"]
    assert code == 0 and list(rows) == ["noise", "cpsc"], err
    assert rows["noise"]["student_accs"] == noise["student_accs"]


def p_teacher_phase_then_resume(tmp, teacher, command):
    out = tmp / "x"
    if command == "bench":
        argv = ["bench", "--methods", "noise", "--seeds", "1", "--iters", "2"]
    else:
        argv = ["demo", "--iters", "2"]
    argv += ["--teacher-epochs", "12", "--out", out, "--no-progress"]
    proc = cpsc(*argv)
    code, err, _ = stop_when(proc, lambda: (out / "teacher_state.pt").exists())
    assert code == 143 and "--resume" in err, err
    code, _, err = finished(cpsc(*argv))
    assert code == 2 and "--resume" in err, err  # a plain rerun says how to continue
    code, _, err = finished(cpsc(*argv, "--resume"))
    assert code == 0, err
    assert (out / "teacher.pt").exists() and not (out / "teacher_state.pt").exists()


def p_sigint_before_the_first_checkpoint(tmp, teacher):
    out = tmp / "d"
    argv = ["distill", "--teacher", teacher, "--out", out, "--iters", "100000"]
    argv += ["--batch-size", "8", "--set", "ckpt_every=50000", "--set", "log_every=1"]
    proc = cpsc(*argv, "--no-progress")
    code, err, _ = stop_when(proc, lambda: (out / "log.jsonl").exists(), signal.SIGINT)
    assert code == 130 and "nothing to resume" in flat_text(err), err
    code, _, err = finished(cpsc(*argv, "--stop-after", "2", "--no-progress"))
    assert code == 0, err


def p_environment(tmp, teacher, env, names):
    data = tmp / "d.npz"
    arrays(
        x_train=images(40),
        y_train=np.arange(40) % 2,
        x_test=images(10),
        y_test=np.arange(10) % 2,
        class_names=np.array(names),
    )(str(data))
    t, out = tmp / "t", tmp / "r"
    code, _, err = finished(
        cpsc(
            "teacher", "--dataset", f"npz:{data}", "--out", t, "--epochs", "1", env=env
        )
    )
    assert code == 0, err
    argv = ["distill", "--teacher", t / "teacher.pt", "--dataset", f"npz:{data}"]
    code, _, err = finished(cpsc(*argv, "--out", out, *TINY[:-1], env=env))
    assert code == 0 and "Traceback" not in err, err
    assert (out / "metrics.json").exists() and (out / "samples.png").exists()


PROCESS_CASES = {
    "two real distills race for one folder": p_two_real_distills,
    "sample obeys SIGTERM": p_sample_obeys_sigterm,
    "bench --workers 2 obeys SIGTERM": p_bench_workers_obey_sigterm,
    "bench SIGTERM mid-method, then --resume": p_bench_mid_method_then_resume,
    "bench SIGTERM in the teacher phase, then --resume": lambda tmp, t: (
        p_teacher_phase_then_resume(tmp, t, "bench")
    ),
    "demo SIGTERM in the teacher phase, then --resume": lambda tmp, t: (
        p_teacher_phase_then_resume(tmp, t, "demo")
    ),
    "distill SIGINT before the first checkpoint": p_sigint_before_the_first_checkpoint,
    "MPLBACKEND=nonexistent": lambda tmp, t: p_environment(
        tmp, t, {"MPLBACKEND": "nonexistent"}, ["a", "b"]
    ),
    "PYTHONIOENCODING=ascii, non-ASCII class names": lambda tmp, t: p_environment(
        tmp, t, {"PYTHONIOENCODING": "ascii"}, ["é", "日本"]
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROCESS_CASES))
def test_hostile_process(name, tmp_path, teacher, request):
    """Cases that need a process of their own: a signal, a second process, the environment."""
    test = PROCESS_CASES[name]
    if "done" in test.__code__.co_varnames[: test.__code__.co_argcount]:
        test(tmp_path, teacher, request.getfixturevalue("finished_run"))
    else:
        test(tmp_path, teacher)
