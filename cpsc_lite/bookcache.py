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

from . import CpscError, checkpoint
from .config import DistillConfig, TeacherConfig  # noqa: F401 (TeacherConfig: type)
from .data import DataBundle, load_dataset
from .generator import ConditionalGenerator, estimate_bn_statistics, load_generator
from .losses import BNStatsLoss, pseudo_ce
from .methods import make_config
from .methods.base import add_image_priors
from .methods.cpsc import generator_loss
from .engine import device_name, pick_device, seed_everything

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

PROFILES["colab"] = dict(PROFILES["quick"], description="as quick; ch. 8: c10_colab")
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
            f"Unknown PROFILE {profile!r}: use one of {', '.join(PROFILES)}."
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
            f"device {device} ({device_name(device)}); profile {profile!r}: "
            f"{PROFILES[profile]['description']}"
        )
    return device


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
    """Hand ``value`` to ``myst_nb.glue`` when the book is being built, where the page's
    ``{glue:text}`` roles show it in their sentences; elsewhere (Colab, Jupyter), where those roles
    show their raw name, print ``name = value`` (numbers and text) instead.

    Returns nothing, so a ``bc.glue(...)`` on a cell's last line prints nothing more.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy/torch scalars -> plain numbers, so {glue:text}`name:.2f` can format them
    building = (
        os.environ.get("CPSC_BOOK_BUILD") == "1"
    )  # the page shows it in its sentence
    if (
        isinstance(value, (int, float, str))
        and not isinstance(value, bool)
        and not building
    ):
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

    ``cpsc_run()`` is the book's main run (chapters 1, 3, 6); ``cpsc_run("no_scl", gamma=0.0)``
    is chapter 5's comparison. Keeps a generator snapshot at every evaluation.
    """
    return _cached_run(name, distill_config(**overrides))


def _cached_run(name: str, cfg: DistillConfig) -> Run:
    """The run of ``cfg`` with the book's teacher: trained once into the cache (with a generator
    snapshot at every ``eval_every``), then loaded."""
    from .distill import build_distiller
    from .runner import train
    from .teacher import load_classifier

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
    what = dict(use_bn=use_bn, teacher_ce=teacher_ce, steps=steps, seed=seed)
    spec = {k: v for k, v in cfg.flat().items() if k != "device"} | what
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


# -------------------------------------------------------------- baselines
def kd_baseline(
    source: str = "real", steps: int = 300, batch_size: int = 128, seed: int = 0
) -> dict:
    """Chapter 2: a student distilled by KL from the teacher on ``real`` training images or on Gaussian ``noise``.

    The package's own ``data`` and ``noise`` methods (the rows of chapter 7's table), run for ``steps``
    student steps: ``steps / s_steps`` iterations. Returns ``dict(student_acc, accs, seconds)``;
    ``accs`` holds the test accuracy every 25 steps.
    """
    if source not in ("real", "noise"):
        raise CpscError("source must be 'real' or 'noise'")
    method = "data" if source == "real" else "noise"
    s_steps = make_config(method).budget.s_steps
    if steps % 25 or 25 % s_steps:
        raise CpscError(
            f"steps must be a multiple of 25 (accuracy is measured every 25 steps), not {steps}"
        )
    every = 25 // s_steps
    cfg = make_config(
        method,
        student=distill_config().student,
        batch_size=batch_size,
        iters=steps // s_steps,
        seed=seed,
        eval_every=every,
        log_every=every,
        diagnostics=False,
        device="cpu",
    )
    run = _cached_run(f"kd-{source}", cfg)
    accs = [
        dict(step=r["iter"] * s_steps, student_acc=r["student_acc"])
        for r in run.records
        if "student_acc" in r and r["iter"] % every == 0
    ]
    return dict(
        source=source,
        method=method,
        student_acc=accs[-1]["student_acc"],
        accs=accs,
        seconds=run.metrics["seconds"],
    )


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


def teacher_confidence(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict:
    """Chapters 3, 4, 6: :func:`cpsc_lite.diagnostics.teacher_agreement` on the CPU."""
    from .diagnostics import teacher_agreement

    return teacher_agreement(
        model.cpu().eval(), images.cpu(), labels.cpu(), num_classes
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


def compare_grids(
    panels: dict,
    title: Optional[str] = None,
    class_names=None,
    width: float = 5.0,
    per_row: int = 2,
):
    """Chapters 1, 3-6: :func:`cpsc_lite.viz.compare_grids` for the book's data and teacher."""
    from .viz import compare_grids as grids

    b = bundle()
    names = class_names or b.class_names
    return grids(panels, b.mean, b.std, names, teacher()[0], title, width, per_row)


def real_test_images(limit: Optional[int] = None):
    """Normalised real test images and labels (used only for evaluation and reference plots)."""
    test = bundle().test
    n = len(test) if limit is None else min(limit, len(test))
    return test.batch(slice(0, n))


def estimate_full_cost(repeats: int = 2) -> dict:
    """An *estimate* of the full profile's distillation time on this machine (landing page, chapter 6).

    Times a few iterations with the package's default config and scales by its
    iteration count (teacher training and evaluation not included).
    """
    from .costs import seconds_per_iteration

    teacher(torch.device("cpu"))
    full = make_config("cpsc").replace(device=str(current_device()))
    path = str(_teacher_dir() / "teacher.pt")
    per_iter = seconds_per_iteration(path, bundle(), full, repeats=repeats)
    iters = full.budget.iters
    return dict(
        seconds_per_iter=per_iter,
        iters=iters,
        minutes=per_iter * iters / 60,
        device=str(current_device()),
    )


def preset_run(
    name: str,
    teacher: Optional[str] = None,
    teacher_epochs: Optional[int] = None,
    iters: Optional[int] = None,
    data_root: Optional[str] = None,
    out: Optional[str] = None,
    progress: bool = True,
    timing_iters: int = 3,
) -> dict:
    """Chapter 8, full profile: :func:`cpsc_lite.pipelines.run_preset` into ``out`` (default:
    ``<cache>/ch8/<preset>``); running the cell again after a disconnect continues."""
    from .pipelines import run_preset

    folder = Path(out) if out else cache_dir() / "ch8" / Path(name).stem
    command = (
        f"book chapter 8: bc.preset_run({name!r}, teacher={teacher!r}, "
        f"teacher_epochs={teacher_epochs}, iters={iters!r})"
    )
    return run_preset(
        name,
        str(folder),
        teacher=teacher,
        teacher_epochs=teacher_epochs,
        iters=iters,
        data_root=data_root,
        device=str(current_device()),
        progress=progress,
        timing_iters=timing_iters,
        command=command,
    )
