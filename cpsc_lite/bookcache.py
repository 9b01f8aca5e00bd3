"""Shared, cached artefacts for the book's chapters (``book/*.ipynb``).

Every chapter starts with ``bc.setup(PROFILE)`` and then asks for what it
needs: ``bc.teacher()``, ``bc.cpsc_run()``, ... Each function loads its result
from the cache folder if an earlier chapter (or an earlier build) made it, and
otherwise computes and saves it. So chapters can run alone, in any order, and
a rebuild of the book costs almost nothing.

Cache keys are hashes of the settings that produced an artefact (the teacher's
recipe, the full distillation config, ...), so when the package's tuned
defaults change, the book recomputes instead of showing stale results.
Delete the cache folder to start from scratch.

Where the cache lives: ``$CPSC_BOOK_CACHE`` if set; else ``book/_cache`` next
to this package when it is a source checkout; else ``./cpsc_book_cache``
(e.g. on Colab, where the package is installed from the repository).

Two profiles (the one setting a reader changes, in each chapter's settings cell):

- ``quick``: runs sized for a laptop CPU (the book's build uses it);
- ``full``: the package's own defaults (:func:`cpsc_lite.config.make_config`),
  meant for a GPU or a patient CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import CpscError, __version__, checkpoint
from .config import DistillConfig, TeacherConfig  # noqa: F401 (TeacherConfig: type)
from .data import DataBundle, load_dataset
from .generator import ConditionalGenerator, load_generator
from .losses import BNStatsLoss, pseudo_ce
from .methods import make_config
from .methods.base import add_image_priors
from .methods.cpsc import generator_loss
from .engine import device_name, pick_device, seed_everything, timed

DATASET = "digits"


def _quick_distill(defaults: DistillConfig) -> dict:
    # Never *raise* a tuned default: the quick profile only caps what costs CPU time.
    return dict(
        iters=min(defaults.budget.iters, 120),
        batch_size=min(defaults.budget.batch_size, 128),
        ngf=min(defaults.generator.ngf, 32),
        eval_every=20,
        log_every=5,
    )


def _full_distill(defaults: DistillConfig) -> dict:
    return dict(
        eval_every=max(1, defaults.budget.iters // 10),
        log_every=max(1, defaults.budget.iters // 100),
    )


#: Profile name -> how the book's runs differ from the package defaults.
PROFILES: dict[str, dict] = {
    "quick": dict(
        description="CPU-sized runs (minutes), used to build the book",
        teacher_epochs=lambda default: min(default, 15),
        distill=_quick_distill,
        generator_steps=200,
        per_class=24,
        umap_real=450,
    ),
    "full": dict(
        description="the package's defaults (meant for a GPU)",
        teacher_epochs=lambda default: default,
        distill=_full_distill,
        generator_steps=600,
        per_class=64,
        umap_real=450,
    ),
}

# A tiny profile for the package's own tests (not meant for readers).
PROFILES["test"] = dict(
    description="seconds-long runs for tests",
    teacher_epochs=lambda default: 1,
    distill=lambda d: dict(
        iters=4, batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1
    ),
    generator_steps=3,
    per_class=4,
    umap_real=40,
)

_STATE = {"profile": "quick", "device": None, "costs": {}}


def _record_cost(artefact: str, seconds: float) -> None:
    _STATE["costs"][artefact] = float(seconds)


def compute_seconds() -> float:
    """Seconds it took to compute every cached artefact this process has used (its cost from an empty cache).

    Each chapter glues this at its end; the landing page collects the values.
    """
    return sum(_STATE["costs"].values())


# ----------------------------------------------------------------- set-up
def setup(profile: str = "quick", seed: int = 0, quiet: bool = False) -> torch.device:
    """Every chapter's first call: choose the profile, seed everything, style figures; returns the device."""
    if profile not in PROFILES:
        raise CpscError(
            f"Unknown PROFILE {profile!r}: use one of {', '.join(p for p in PROFILES if p != 'test')}."
        )
    _STATE["profile"] = profile
    device = pick_device("auto")
    _STATE["device"] = device
    if device.type == "cpu":
        # The book's models are tiny: one thread is nearly as fast as several, and extra threads
        # that spin-wait make everything many times slower when the machine is busy (e.g. CI).
        torch.set_num_threads(1)
    seed_everything(seed)
    # Known, harmless warnings from third-party libraries would otherwise print into the pages.
    warnings.filterwarnings("ignore", message=".*n_jobs value .* overridden.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    warnings.filterwarnings(
        "ignore", message=".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`.*"
    )
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and "IPKernelApp" in shell.config:
            # figures inline even if MPLBACKEND says otherwise
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:  # pragma: no cover
        pass
    try:
        import matplotlib

        matplotlib.rcParams.update(
            {
                "figure.dpi": 100,
                "savefig.dpi": 100,
                "axes.grid": False,
                "figure.max_open_warning": 0,
            }
        )
    except ImportError:  # pragma: no cover
        pass
    if not quiet:
        print(
            f"cpsc-lite {__version__}, torch {torch.__version__}, device {device} ({device_name(device)})\n"
            f"profile {profile!r}: {PROFILES[profile]['description']}\ncache: {shown_path(cache_dir())}"
        )
    return device


def shown_path(path) -> str:
    """``path`` as a page may show it: relative to the working folder when inside it, else with the
    home folder as ``~`` (a built page does not carry the build machine's folders)."""
    path = os.path.abspath(str(path))
    here, home = os.getcwd(), os.path.expanduser("~")
    if path == here or path.startswith(here + os.sep):
        return os.path.relpath(path, here)
    if home not in ("", "/") and path.startswith(home + os.sep):
        return "~" + path[len(home) :]
    return path


def profile() -> str:
    return _STATE["profile"]


def current_device() -> torch.device:
    """The device chosen by :func:`setup` (CUDA, then MPS, then CPU)."""
    if _STATE["device"] is None:
        _STATE["device"] = pick_device("auto")
    return _STATE["device"]


def cache_dir() -> Path:
    """Where artefacts are kept (see the module docstring)."""
    env = os.environ.get("CPSC_BOOK_CACHE")
    if env:
        return Path(env)
    book = Path(__file__).resolve().parent.parent / "book"
    if book.is_dir():
        return book / "_cache"
    return Path.cwd() / "cpsc_book_cache"


def _key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def glue(name: str, value, display: bool = False) -> None:
    """Print ``name = value`` (numbers and text) and hand it to ``myst_nb.glue`` when the book is being
    built. The printed line is what a reader sees where glue does nothing (Colab, Jupyter), and where
    the page's ``{glue:text}`` roles show their raw name.

    Returns nothing, so a ``bc.glue(...)`` on a cell's last line prints nothing more.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy/torch scalars -> plain numbers, so {glue:text}`name:.2f` can format them
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        print(
            f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}"
        )
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


# ------------------------------------------------------------------- data
_BUNDLE: dict[str, DataBundle] = {}


def bundle() -> DataBundle:
    """The digits dataset (chapters 1-7). Only its test split is read after the teacher is trained."""
    if DATASET not in _BUNDLE:
        _BUNDLE[DATASET] = load_dataset(DATASET)
    return _BUNDLE[DATASET]


# ---------------------------------------------------------------- teacher
def teacher_config() -> TeacherConfig:
    """The package's teacher recipe for the digits (as ``cpsc-lite teacher`` uses it), epochs capped for ``quick``."""
    from .teacher import teacher_recipe

    default = teacher_recipe(DATASET)
    return teacher_recipe(
        DATASET,
        epochs=PROFILES[profile()]["teacher_epochs"](default.epochs),
        device="cpu",
    )


def _teacher_dir() -> Path:
    cfg = teacher_config()
    d = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    return cache_dir() / f"teacher-{DATASET}-{_key(d, DATASET)}"


def teacher(device: Optional[torch.device] = None):
    """Trained digits teacher ``(model, meta)``; trained once (chapter 2) and cached. ``meta['test_acc']`` is set."""
    from .teacher import load_classifier, run_teacher

    out = _teacher_dir()
    path = out / "teacher.pt"
    if not path.exists():
        with _building(out) as tmp:
            # CPU keeps the teacher bit-identical wherever the book is built; it takes seconds.
            run_teacher(bundle(), teacher_config(), str(tmp), progress=False)
    model, meta = load_classifier(str(path), "teacher", device or current_device())
    model.eval()
    metrics = json.loads((out / "metrics.json").read_text())
    _record_cost(out.name, metrics["seconds"])
    meta = dict(
        meta,
        test_acc=metrics["test_acc"],
        train_seconds=metrics["seconds"],
        epochs=metrics["epochs"],
    )
    return model, meta


@contextlib.contextmanager
def _building(final: Path):
    """Write an artefact into a temporary folder, then move it to ``final`` in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent)
    )
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache is meant to be shared
    try:
        yield tmp
        if final.exists():  # another process finished first; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------- distillation runs
def distill_config(**overrides) -> DistillConfig:
    """``make_config("cpsc")`` with the profile's caps, then ``overrides`` (chapters 5-7 switch terms off)."""
    defaults = make_config("cpsc")
    changes = PROFILES[profile()]["distill"](defaults)
    changes.update(overrides)
    return make_config("cpsc", **changes)


@dataclass
class Run:
    """One finished distillation: the models, its log and generator snapshots (chapters 1, 3, 5, 6)."""

    name: str
    config: DistillConfig
    generator: ConditionalGenerator
    student: nn.Module
    records: list
    metrics: dict
    snapshot_iters: list = field(default_factory=list)
    snapshot_states: list = field(default_factory=list)
    path: Optional[Path] = None

    def generator_at(self, iteration: int) -> ConditionalGenerator:
        """A copy of the generator as it was at a snapshot iteration (chapter 6's step slider).

        A snapshot taken before the first step still has the initial BN running statistics; those
        are estimated from its own samples as for :func:`fresh_generator`, so that the untrained
        snapshot draws what training drew from it (and looks like chapter 3's untrained generator)."""
        i = self.snapshot_iters.index(iteration)
        g = copy.deepcopy(self.generator)
        g.load_state_dict(self.snapshot_states[i])
        norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
        if norms and all(int(m.num_batches_tracked) == 0 for m in norms):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return estimate_bn_statistics(g, self.config.budget.batch_size)
        return g.eval()


def _snapshot(generator: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}


def cpsc_run(name: str = "cpsc", **overrides) -> Run:
    """A CPSC-DFKD run on digits with the profile's settings plus ``overrides``; trained once, then cached.

    ``cpsc_run()`` is the book's main run (chapters 1, 3, 6); ``cpsc_run("no_scl", use_scl=False)``
    is chapter 5's comparison. Keeps a generator snapshot at every evaluation.
    """
    from .distill import build_distiller
    from .runner import train
    from .teacher import load_classifier

    cfg = distill_config(**overrides)
    t_dir = _teacher_dir()
    teacher(torch.device("cpu"))  # make sure it exists
    cfg_key = {k: v for k, v in cfg.flat().items() if k != "device"}
    out = cache_dir() / f"run-{name}-{_key(cfg_key, t_dir.name)}"
    if not (out / "metrics.json").exists():
        with _building(out) as tmp:
            t_model, meta = load_classifier(str(t_dir / "teacher.pt"), "teacher")
            d = build_distiller(t_model, meta, cfg, bundle())
            iters, states = [0], [_snapshot(d.generator)]

            # at every eval_every (not at the extra 25 % / 50 % evaluations)
            def keep(distiller, record):
                it = record["iter"]
                if "student_acc" in record and (
                    it % distiller.cfg.log.eval_every == 0
                    or it == distiller.cfg.budget.iters
                ):
                    iters.append(record["iter"])
                    states.append(_snapshot(distiller.generator))

            start = time.time()
            result = train(d, str(tmp), progress=False, callback=keep)
            seconds = time.time() - start
            d.close()
            torch.save(dict(iters=iters, states=states), tmp / "snapshots.pt")
            # resume state: not needed by the book
            (tmp / "state.pt").unlink(missing_ok=True)
            metrics = dict(
                name=name,
                student_acc=result["student_acc"],
                iters=result["iters"],
                seconds=seconds,
                seconds_per_iter=seconds / max(1, result["iters"]),
                device=str(d.device),
                profile=profile(),
                config=cfg.to_dict(),
            )
            checkpoint.write_json(metrics, str(tmp / "metrics.json"))
    return load_run(out, name)


def load_run(path: Path, name: str = "") -> Run:
    """Read a run folder written by :func:`cpsc_run` (or ``cpsc-lite distill``) back into a :class:`Run`."""
    from .runner import read_log
    from .teacher import load_classifier

    path = Path(path)
    gen, _ = load_generator(str(path / "generator.pt"))
    student, _ = load_classifier(str(path / "student.pt"), "student")
    student.eval()
    metrics = json.loads((path / "metrics.json").read_text())
    _record_cost(path.name, metrics.get("seconds", 0.0))
    records = read_log(str(path / "log.jsonl")) if (path / "log.jsonl").exists() else []
    snaps = dict(iters=[], states=[])
    if (path / "snapshots.pt").exists():
        snaps = torch.load(path / "snapshots.pt", map_location="cpu", weights_only=True)
    cfg = DistillConfig.from_saved(metrics["config"])
    return Run(
        name or metrics.get("name", path.name),
        cfg,
        gen,
        student,
        records,
        metrics,
        list(snaps["iters"]),
        list(snaps["states"]),
        path,
    )


# ----------------------------------------------------- generator-only runs
def generator_only(
    use_bn: bool = True,
    teacher_ce: bool = False,
    steps: Optional[int] = None,
    seed: int = 0,
    eta: Optional[float] = None,
) -> dict:
    """Train a conditional generator against the frozen teacher alone: no student, no contrast.

    Chapter 3 uses ``use_bn=True, teacher_ce=False`` (DeepInversion's prior on its own);
    chapter 4 adds the pseudo-supervised CE, and sweeps its weight ``eta`` (default: the
    configuration's). Returns ``dict(generator, losses, seconds)``; ``losses`` has one dict of loss
    values per step.
    """
    cfg = distill_config() if eta is None else distill_config(eta=eta)
    steps = steps or PROFILES[profile()]["generator_steps"]
    t_dir = _teacher_dir()
    teacher(torch.device("cpu"))
    g, o = cfg.generator, cfg.objective
    spec = dict(
        nz=g.nz,
        ngf=g.ngf,
        batch=cfg.budget.batch_size,
        lr=cfg.optim.lr_generator,
        betas=list(cfg.optim.generator_betas),
        beta=o.beta,
        eta=o.eta,
        use_bn=use_bn,
        teacher_ce=teacher_ce,
        steps=steps,
        seed=seed,
        bn_reduce=o.bn_reduce,
        prior_tv=o.prior_tv,
        prior_l2=o.prior_l2,
    )
    # CPSC-DFKD's generator objective with only the BN and CE terms left
    weights = dataclasses.replace(
        o,
        adv=0.0,
        gamma=0.0,
        beta=o.beta if use_bn else 0.0,
        eta=o.eta if teacher_ce else 0.0,
    )
    out = (
        cache_dir()
        / f"generator-{'bn' if use_bn else ''}{'ce' if teacher_ce else ''}-{_key(spec, t_dir.name)}"
    )
    if not (out / "generator.pt").exists():
        from .teacher import load_classifier

        with _building(out) as tmp:
            seed_everything(seed)
            t_model, meta = load_classifier(str(t_dir / "teacher.pt"), "teacher")
            t_model.eval().requires_grad_(False)
            gen = ConditionalGenerator(
                meta["num_classes"], meta["img_size"], meta["channels"], g.nz, g.ngf
            )
            opt = torch.optim.Adam(
                gen.parameters(),
                lr=cfg.optim.lr_generator,
                betas=tuple(cfg.optim.generator_betas),
            )
            losses = []
            start = time.time()
            with BNStatsLoss(t_model) as bn_loss:
                bn_loss.enabled = use_bn
                for _ in range(steps):
                    z, y = gen.sample_inputs(cfg.budget.batch_size)
                    x = gen(z, y)
                    logits = t_model(x)
                    loss, terms = generator_loss(
                        logits,
                        None,
                        y,
                        weights,
                        bn=bn_loss.loss(o.bn_reduce) if use_bn else None,
                        adversarial=False,
                    )
                    loss = add_image_priors(loss, terms, x, weights)
                    row = {"bn": terms["bn"]} if use_bn else {}
                    # always measured
                    row["ce"] = (
                        terms["ce_teacher"] if teacher_ce else pseudo_ce(logits, y)
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append({k: v.item() for k, v in row.items()})
            checkpoint.save(
                checkpoint.make(
                    "generator", gen.state_dict(), dict(generator=gen.config())
                ),
                str(tmp / "generator.pt"),
            )
            checkpoint.write_json(
                dict(losses=losses, seconds=time.time() - start, spec=spec),
                str(tmp / "metrics.json"),
            )
    gen, _ = load_generator(str(out / "generator.pt"))
    info = json.loads((out / "metrics.json").read_text())
    _record_cost(out.name, info["seconds"])
    return dict(generator=gen, losses=info["losses"], seconds=info["seconds"])


@torch.no_grad()
def fresh_generator(seed: int = 0, warmup_batches: int = 10) -> ConditionalGenerator:
    """An untrained generator with the profile's sizes ("before training", chapters 3 and 4).

    Its BN running statistics are first estimated from ``warmup_batches`` batches (no
    parameter changes), so that in eval mode it draws what it would draw in training
    mode, instead of the flat images that the initial statistics (mean 0, variance 1) give.
    """
    cfg = distill_config()
    b = bundle()
    torch.manual_seed(seed)
    g = cfg.generator
    gen = ConditionalGenerator(b.num_classes, b.img_size, b.channels, g.nz, g.ngf)
    return estimate_bn_statistics(gen, cfg.budget.batch_size, warmup_batches)


@torch.no_grad()
def estimate_bn_statistics(
    gen: ConditionalGenerator, batch_size: int, batches: int = 10
) -> ConditionalGenerator:
    """Set ``gen``'s BN running statistics to their average over ``batches`` batches of its own
    samples (weights unchanged) and return it in eval mode: what an untrained generator draws in
    training mode, where the initial statistics (mean 0, variance 1) would give flat images."""
    norms = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    gen.train()
    for _ in range(batches):
        gen(*gen.sample_inputs(batch_size))
    for m in norms:
        m.momentum = 0.1
    return gen.eval()


# -------------------------------------------------------------- baselines
def kd_baseline(
    source: str = "real", steps: int = 300, batch_size: int = 128, seed: int = 0
) -> dict:
    """Chapter 2: a student distilled by KL from the teacher on ``real`` training images or on Gaussian ``noise``.

    The engine's own ``data`` and ``noise`` methods (the rows of chapter 7's table), run for ``steps``
    student steps: ``steps / s_steps`` iterations. Returns ``dict(student_acc, accs, seconds)``;
    ``accs`` holds the test accuracy every 25 steps.
    """
    from .distill import build_distiller
    from .runner import train

    if source not in ("real", "noise"):
        raise CpscError("source must be 'real' or 'noise'")
    method = "data" if source == "real" else "noise"
    s_steps = make_config(method).budget.s_steps
    if steps % 25 or 25 % s_steps:
        raise CpscError(
            f"steps must be a multiple of 25 (accuracy is measured every 25 steps), not {steps}"
        )
    base = distill_config()
    cfg = make_config(
        method,
        student=base.student,
        batch_size=batch_size,
        iters=steps // s_steps,
        seed=seed,
        eval_every=25 // s_steps,
        log_every=25 // s_steps,
        diagnostics=False,
    )
    t_dir = _teacher_dir()
    out = cache_dir() / f"kd-{source}-{_key(cfg.flat(), t_dir.name)}"
    if not (out / "metrics.json").exists():
        t_model, meta = teacher(torch.device("cpu"))
        with _building(out) as tmp:
            d = build_distiller(t_model, meta, cfg.replace(device="cpu"), bundle())
            start = time.time()
            train(d, progress=False)
            d.close()
            accs = [
                dict(step=it * s_steps, student_acc=acc)
                for it, acc in d.acc_history
                if it % cfg.log.eval_every == 0
            ]
            checkpoint.write_json(
                dict(
                    source=source,
                    method=method,
                    student_acc=accs[-1]["student_acc"],
                    accs=accs,
                    seconds=time.time() - start,
                ),
                str(tmp / "metrics.json"),
            )
    result = json.loads((out / "metrics.json").read_text())
    _record_cost(out.name, result["seconds"])
    return result


# --------------------------------------------------------------- measures
@torch.no_grad()
def samples(
    generator: ConditionalGenerator,
    per_class: Optional[int] = None,
    seed: int = 0,
    truncation: float = 1.0,
):
    """``per_class`` synthetic images for every class, class-major: ``(images, labels)`` on the CPU
    (``truncation``: the noise scaled by that psi, chapter 4)."""
    from .generator import generate_per_class

    per_class = per_class or PROFILES[profile()]["per_class"]
    images, labels = generate_per_class(
        generator.cpu(),
        per_class,
        torch.device("cpu"),
        seed=seed,
        truncation=truncation,
    )
    return images, labels


@torch.no_grad()
def teacher_features(model: nn.Module, images: torch.Tensor, batch_size: int = 512):
    """Teacher ``(logits, penultimate features)`` for a stack of images, on the CPU (chapters 4-6)."""
    from .diagnostics import teacher_view

    return teacher_view(model.cpu().eval(), images.cpu(), batch_size)


@torch.no_grad()
def teacher_confidence(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict:
    """Chapter 4: per class y, the teacher's mean probability of y on images made for y, and how often argmax = y."""
    logits, _ = teacher_features(model, images)
    prob = logits.softmax(1)
    p_y = prob[torch.arange(len(labels)), labels]
    agree = (prob.argmax(1) == labels).float()
    conf = [float(p_y[labels == c].mean()) for c in range(num_classes)]
    acc = [float(agree[labels == c].mean()) for c in range(num_classes)]
    return dict(
        confidence=conf,
        agreement=acc,
        mean_confidence=float(p_y.mean()),
        mean_agreement=float(agree.mean()),
    )


@torch.no_grad()
def real_per_class(per_class: int = 8):
    """Chapter 1: the first ``per_class`` real test images of every class, class-major ``(images, labels)``."""
    x, y = real_test_images()
    idx = torch.cat(
        [
            torch.nonzero(y == c).flatten()[:per_class]
            for c in range(bundle().num_classes)
        ]
    )
    return x[idx], y[idx]


def same_noise_grid(
    generator: ConditionalGenerator,
    n_noise: int = 6,
    seed: int = 0,
    title: str = "",
    ax=None,
):
    """Chapter 3: :func:`cpsc_lite.viz.same_noise_grid` for the book's data set."""
    from .viz import same_noise_grid as grid

    b = bundle()
    return grid(
        generator,
        b.mean,
        b.std,
        b.class_names,
        n_noise=n_noise,
        seed=seed,
        title=title,
        ax=ax,
    )


def compare_grids(
    panels: dict,
    title: Optional[str] = None,
    class_names=None,
    width: float = 5.0,
    per_row: int = 2,
):
    """Chapters 1, 3-6: class-wise sample grids, ``per_row`` side by side (more panels wrap onto further
    rows, so that labels stay readable at the page's column width); ``panels`` maps a caption to
    ``(images, labels)``."""
    import math
    import matplotlib.pyplot as plt
    from .viz import plot_samples

    b = bundle()
    cols = min(len(panels), per_row)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width * cols, rows * (0.42 * b.num_classes + 1.4)),
        squeeze=False,
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")  # an odd panel count leaves the last row's other place empty
    from .viz import teacher_predictions

    t_model = teacher()[0]
    for ax, (caption, (images, labels)) in zip(axes.flat, panels.items()):
        real = caption.lower().startswith("real")
        plot_samples(
            images,
            labels,
            class_names or b.class_names,
            b.mean,
            b.std,
            title=caption,
            ax=ax,
            predictions=teacher_predictions(t_model, images),
            xlabel=f"{len(images) // b.num_classes} test images per class"
            if real
            else None,
        )
        if real:
            ax.set_ylabel("class (true label)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def real_test_images(limit: Optional[int] = None):
    """Normalised real test images and labels (used only for evaluation and reference plots)."""
    test = bundle().test
    n = len(test) if limit is None else min(limit, len(test))
    return test.batch(slice(0, n))


def _seconds_per_iteration(d, repeats: int) -> float:
    """Mean seconds of ``repeats`` iterations of Distiller ``d`` after one warm-up iteration
    (cuDNN autotuning, first allocations)."""
    return timed(d.iterate, repeats, statistic="mean")[0]


def estimate_full_cost(repeats: int = 2) -> dict:
    """An *estimate* of the full profile's distillation time on this machine (landing page, chapter 6).

    Times a few iterations with the package's default config and scales by its
    iteration count (teacher training and evaluation not included).
    """
    from .distill import build_distiller
    from .teacher import load_classifier

    teacher(torch.device("cpu"))
    full = make_config("cpsc")
    t_model, meta = load_classifier(str(_teacher_dir() / "teacher.pt"), "teacher")
    d = build_distiller(t_model, meta, full.replace(device=str(current_device())))
    per_iter = _seconds_per_iteration(d, repeats)
    d.close()
    iters = full.budget.iters
    return dict(
        seconds_per_iter=per_iter,
        iters=iters,
        minutes=per_iter * iters / 60,
        device=str(current_device()),
    )


# ------------------------------------------------------------- chapter 7
#: Where a reader without a source checkout (e.g. Colab) finds the repository's data files.
RAW_URL = "https://raw.githubusercontent.com/cpsc-dfkd/cpsc-dfkd/main/"


def repo_root() -> Optional[Path]:
    """The source checkout this package runs from, or None when it was installed from an archive."""
    root = Path(__file__).resolve().parent.parent
    return (
        root
        if (root / "pyproject.toml").exists() and (root / "cpsc_lite").is_dir()
        else None
    )


def _repo_file(relative: str) -> tuple[Optional[Path], Optional[str]]:
    """A data file of the repository: ``(local path, None)`` in a checkout, else ``(None, URL)``."""
    root = repo_root()
    if root is not None:
        return root / relative, None
    return None, RAW_URL + relative


def bench_path(dataset: str) -> str:
    """``data/bench/<dataset>/results.json`` (or under ``$CPSC_BENCH_DIR``), written by ``cpsc-lite bench``."""
    base = os.environ.get("CPSC_BENCH_DIR")
    if base:
        return str(Path(base) / dataset / "results.json")
    local, url = _repo_file(f"data/bench/{dataset}/results.json")
    return str(local) if local is not None else url


def _bench_text(where: str) -> Optional[str]:
    """The text of a file under ``data/bench``: a local path, or outside a checkout a URL; None
    when it is not there (or cannot be fetched)."""
    if where.startswith("https://"):
        import urllib.request

        try:
            with urllib.request.urlopen(where, timeout=10) as r:
                return r.read().decode()
        except Exception:
            return None
    return Path(where).read_text() if os.path.exists(where) else None


def bench_jobs(folder: str) -> Optional[list]:
    """Chapter 7: the validation jobs a tuning call logged (``data/bench/<folder>/jobs.jsonl``, one
    JSON object per line, written by ``scripts/tune.py``; or under ``$CPSC_BENCH_DIR``), or None
    when the file is not there (or, outside a checkout, cannot be fetched)."""
    text = _bench_text(bench_path(folder)[: -len("results.json")] + "jobs.jsonl")
    if text is None:
        return None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def bench_results(dataset: str) -> Optional[dict]:
    """Chapter 7: the benchmark results for ``dataset``, or None when nobody has produced them yet."""
    from .bench import with_current_names

    where = bench_path(dataset)
    text = _bench_text(where)
    if text is None:
        return None
    try:
        results = json.loads(text)
    except ValueError:
        if where.startswith("https://"):
            return None  # a broken download counts as no file, as before
        raise
    return with_current_names(results)


def bench_report(dataset: str, how_to_make: str) -> Optional[dict]:
    """Chapter 7: show where a benchmark file came from, its table and chart; or say plainly that it is missing."""
    from .bench import bench_table, budget_text, plot_bench
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display
    import textwrap

    results = bench_results(dataset)
    if results is None:
        where, root = bench_path(dataset), repo_root()
        if root is not None and where.startswith(str(root)):
            where = os.path.relpath(where, root)
        command = " \\\n        ".join(
            textwrap.wrap(how_to_make, 64, break_on_hyphens=False)
        )
        display(
            Markdown(
                f"```{{important}}\nNo benchmark results for **{dataset}** yet: `{where}` does not "
                f"exist, so this section shows no numbers. To produce them, run\n\n    {command}\n\n"
                "and build the book again.\n```"
            )
        )
        return None
    teacher = results["teacher"]
    display(
        Markdown(
            f"Produced by `{results['command']}` with cpsc-lite {results['package_version']}: teacher "
            f"{teacher['model']} (test accuracy {teacher['test_acc']:.2%}), student {results['student']}, "
            f"{budget_text(results)} x batch {results['batch_size']}, seeds {results['seeds']}"
            + (f", on {results['machine']}" if results.get("machine") else "")
            + "."
            + "".join(
                f" The row `{new}` was called `{old}` when this table was written; today `{old}` is "
                "DeepInversion proper (pixels optimised into a pool), which this table does not contain."
                for old, new in results.get("renamed", {}).items()
            )
        )
    )
    display(bench_table(results))
    plot_bench(results)
    plt.show()
    return results


def profile_report(names=("digits", "wrn40_2_wrn16_2")):
    """Chapter 7: the speed profiles in ``data/bench/profile/<name>/profile.json`` as a table, with their commands."""
    import pandas as pd

    rows, commands = [], []
    for name in names:
        local, url = _repo_file(f"data/bench/profile/{name}/profile.json")
        if local is None or not local.exists():
            continue
        p = json.loads(local.read_text())
        rows.append(
            {
                "teacher → student": f"{p['teacher']} → {p['student']}",
                "image": f"{p['img_size']}x{p['img_size']}",
                "batch": p["batch_size"],
                "G : S steps": f"{p['g_steps']} : {p['s_steps']}",
                "threads": p["threads"],
                "s / iteration": p["seconds_per_iter"],
                "floor (s)": p["floor_seconds"],
                "ratio": p["floor_ratio"],
            }
        )
        commands.append(p.get("command", "(command not recorded)"))
    if not rows:
        return None, []
    table = (
        pd.DataFrame(rows)
        .style.hide(axis="index")
        .format({"s / iteration": "{:.3f}", "floor (s)": "{:.3f}", "ratio": "{:.2f}"})
    )
    return table, commands


def results_dir() -> Optional[Path]:
    """``data/results/`` of the checkout (or ``$CPSC_RESULTS_DIR``): full-scale runs saved by ``cpsc-lite record``."""
    base = os.environ.get("CPSC_RESULTS_DIR")
    if base:
        return Path(base)
    root = repo_root()
    return root / "data" / "results" if root is not None else None


def recorded_runs_report() -> list:
    """Chapter 7: every run in :func:`results_dir` as a table, then each one's commands, samples and curves.

    Every value comes from the run's own ``run.json`` (written by ``cpsc-lite record`` from its
    metrics.json); with no recorded run it says so and how to add one.
    """
    import pandas as pd
    from IPython.display import Image, Markdown, display
    from .results import duration, load_recorded

    where = results_dir()
    runs = load_recorded(where) if where is not None else []
    if not runs:
        shown = (
            "data/results/"
            if where is None or repo_root() is None
            else os.path.relpath(where, repo_root())
        )
        display(
            Markdown(
                f"```{{important}}\nNo full-scale run has been recorded yet: `{shown}` holds no `run.json`, so this "
                "section shows no numbers of ours at CIFAR scale. After a run, record it with\n\n"
                "    cpsc-lite record runs/NAME --name NAME\n\nand build the book again.\n```"
            )
        )
        return []
    rows = [
        {
            "run": r["name"] + ("" if r["complete"] else " (partial)"),
            "data set": r["dataset"],
            "teacher → student": f"{r['teacher']} → {r['student']}",
            "method": r["method"],
            "iterations": f"{r['iters']} of {r['planned_iters']}",
            "teacher acc. (%)": 100 * r["teacher_acc"],
            "student acc. (%)": 100 * r["student_acc"],
            "hardware": ", ".join(r["device_names"]),
            "processes": ", ".join(map(str, r["world_sizes"])),
            "wall time": duration(r["wall_seconds"]),
            "cpsc-lite": ", ".join(r["cpsc_lite_versions"]),
        }
        for r in runs
    ]
    display(
        Markdown(
            "**Measured by us** with this package; every value below is read from the run's files."
        )
    )
    display(
        pd.DataFrame(rows)
        .style.hide(axis="index")
        .format({"teacher acc. (%)": "{:.2f}", "student acc. (%)": "{:.2f}"})
    )
    for r in runs:
        commands = "\n".join(f"    {c}" for c in r["commands"])
        display(Markdown(f"**{r['name']}**: commands, in order\n\n{commands}"))
        for figure, width in (("samples.png", 480), ("curves.png", 720)):
            path = Path(r["folder"]) / figure
            if path.exists():
                display(Image(filename=str(path), width=width))
    return runs


def published_results():
    """Chapter 7: ``data/published_results.csv`` (numbers from the literature, not ours) as a DataFrame."""
    import pandas as pd

    local, url = _repo_file("data/published_results.csv")
    return pd.read_csv(local if local is not None else url)


# ------------------------------------------------------------- chapter 8
def preset_run(
    name: str,
    teacher: Optional[str] = None,
    teacher_epochs: int = 40,
    iters: Optional[int] = None,
    data_root: Optional[str] = None,
    out: Optional[str] = None,
    progress: bool = True,
    timing_iters: int = 3,
) -> dict:
    """Chapter 8, full profile: a shortened full-scale experiment end to end, resumable.

    Loads (downloading if needed) the preset's data set, trains a teacher with the package's
    recipe for ``teacher_epochs`` (or uses the ``teacher`` file), times ``timing_iters``
    iterations to print a measured estimate, then distils with the preset. Everything goes to
    ``out`` (default: ``<cache>/ch8/<preset>``); running the cell again after a disconnect
    continues where the last checkpoint left off. Returns the run's metrics and folder.
    """
    from .data import load_dataset
    from .distill import build_distiller
    from .runner import run_distill
    from .teacher import load_teacher, run_teacher, teacher_recipe
    from .engine import Acceleration
    from .bench import preset_config

    cfg, run = preset_config(name, iters)
    cfg = cfg.replace(device=str(current_device()))
    folder = Path(out) if out else cache_dir() / "ch8" / Path(name).stem
    folder.mkdir(parents=True, exist_ok=True)
    bundle = load_dataset(run["dataset"], data_root, download=True)
    print(bundle.describe())
    teacher_path = teacher
    if teacher_path is None:
        tdir = folder / "teacher"
        teacher_path = str(tdir / "teacher.pt")
        if not os.path.exists(teacher_path):
            tcfg = teacher_recipe(
                bundle.name,
                model=run["teacher_model"],
                epochs=teacher_epochs,
                device=str(current_device()),
            )
            print(
                f"training the teacher: {tcfg.model}, {tcfg.epochs} epochs (the only step that reads "
                "training images)"
            )
            tm = run_teacher(
                bundle,
                tcfg,
                str(tdir),
                progress=progress,
                resume=True,
                accel=Acceleration(),
            )
            print(
                f"teacher test accuracy {tm['test_acc']:.4f} after {tm['seconds'] / 60:.1f} min"
            )
    student_dir = folder / "student"
    if not (student_dir / "state.pt").exists():
        model, meta = load_teacher(
            teacher_path,
            bundle,
            run["teacher_model"],
            current_device(),
            say=lambda *_: None,
        )
        d = build_distiller(model, meta, cfg, accel=Acceleration())
        per_iter = _seconds_per_iteration(d, timing_iters)
        d.close()
        del d, model
        iters = cfg.budget.iters
        print(
            f"measured {per_iter:.2f} s per iteration on {current_device()}: about "
            f"{per_iter * iters / 60:.0f} min for {iters} iterations (plus evaluation)"
        )
    command = (
        f"book chapter 8: bc.preset_run({name!r}, teacher={teacher!r}, teacher_epochs={teacher_epochs}, "
        f"iters={iters!r})"
    )
    metrics = run_distill(
        teacher_path,
        bundle,
        cfg,
        str(student_dir),
        resume=True,
        progress=progress,
        teacher_model=run["teacher_model"],
        accel=Acceleration(),
        command=command,
    )
    return dict(metrics, folder=str(student_dir))
