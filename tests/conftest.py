import os

import numpy as np
import pytest
import torch

# Tests use one thread: deterministic, and friendlier to small CI machines.
torch.set_num_threads(1)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A run of two iterations on tiny networks: enough to exercise a code path, in about a second.
TINY = dict(
    iters=2, batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1, ckpt_every=2
)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# `pytest -m cuda` selects the GPU tests (gpu_check.sh registers the marker with -o markers=...).
# Applied only where CUDA exists, so CPU runs do not warn about an unregistered marker.
cuda_marker = pytest.mark.cuda if torch.cuda.is_available() else (lambda test: test)


def run_cli(capsys, *argv):
    """``cpsc-lite ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from cpsc_lite.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flat(text):
    """Whitespace-normalised, lower-case: for matching wrapped error messages."""
    return " ".join(text.split()).lower()


@pytest.fixture(autouse=True)
def _fixed_random_state():
    """Every test starts from the same random state, whatever ran before it (constructing a Distiller
    does not seed; runs seed themselves, and tests that compare two models seed explicitly)."""
    from cpsc_lite.engine import seed_everything

    seed_everything(0)


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory):
    """A quickly trained digits teacher (2 epochs: enough to be far above chance)."""
    from cpsc_lite.cli import main

    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(
            [
                "teacher",
                "--dataset",
                "digits",
                "--epochs",
                "3",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return str(out / "teacher.pt")


def make_colour_npz(
    path, num_classes=4, size=12, n_train=160, n_test=80, seed=0, train=True
):
    """Procedural 3-channel dataset: each class is a coloured shape at a random position."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 255, size=(num_classes, 3))

    def draw(n):
        x = rng.integers(0, 40, size=(n, size, size, 3)).astype(np.uint8)
        y = rng.integers(0, num_classes, size=n)
        for i, c in enumerate(y):
            r, cy, cx = (
                size // 4,
                rng.integers(size // 4, 3 * size // 4),
                rng.integers(size // 4, 3 * size // 4),
            )
            yy, xx = np.ogrid[:size, :size]
            if c % 2 == 0:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r // (1 + c // 2))
            x[i][mask] = colours[c]
        return x, y.astype(np.int64)

    arrays = {}
    arrays["x_test"], arrays["y_test"] = draw(n_test)
    if train:
        arrays["x_train"], arrays["y_train"] = draw(n_train)
    np.savez(path, **arrays)
    return str(path)


def saved_0_11(spec: str = "cpsc", **changes) -> dict:
    """The config a run of ``spec`` saved with cpsc-lite 0.11.0 (one flat dict with on/off switches,
    ``tests/data/configs_0.11.0.json``), with ``changes`` (flat names of that version)."""
    import json

    path = os.path.join(REPO, "tests", "data", "configs_0.11.0.json")
    with open(path) as f:
        return dict(json.load(f)["configs"][spec], **changes)


def _register_book_test_profile() -> None:
    """A tiny book profile for the package's tests (a one-epoch teacher, four distillation
    iterations): registered here, so that readers never see it among the book's profiles."""
    from cpsc_lite import bookcache

    bookcache.PROFILES.setdefault(
        "test",
        dict(
            description="seconds-long runs for tests",
            teacher_epochs=lambda default: 1,
            distill=lambda d: dict(
                iters=4, batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1
            ),
            generator_steps=3,
            per_class=4,
            umap_real=40,
        ),
    )


_register_book_test_profile()
