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
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import CpscError, __version__, checkpoint
from .config import DistillConfig, TeacherConfig, make_config
from .data import DataBundle, load_dataset
from .generator import ConditionalGenerator
from .losses import BNStatsLoss, pseudo_ce
from .utils import pick_device, seed_everything

DATASET = "digits"


def _quick_distill(defaults: DistillConfig) -> dict:
    # Never *raise* a tuned default: the quick profile only caps what costs CPU time.
    return dict(iters=min(defaults.iters, 120), batch_size=min(defaults.batch_size, 128),
                ngf=min(defaults.ngf, 32), eval_every=20, log_every=5)


def _full_distill(defaults: DistillConfig) -> dict:
    return dict(eval_every=max(1, defaults.iters // 10), log_every=max(1, defaults.iters // 100))


#: Profile name -> how the book's runs differ from the package defaults.
PROFILES: dict[str, dict] = {
    "quick": dict(description="CPU-sized runs (minutes), used to build the book",
                  teacher_epochs=lambda default: min(default, 15), distill=_quick_distill,
                  generator_steps=150, per_class=24, umap_real=450),
    "full": dict(description="the package's defaults (meant for a GPU)",
                 teacher_epochs=lambda default: default, distill=_full_distill,
                 generator_steps=600, per_class=64, umap_real=450),
}

# A tiny profile for the package's own tests (not meant for readers).
PROFILES["test"] = dict(description="seconds-long runs for tests", teacher_epochs=lambda default: 1,
                        distill=lambda d: dict(iters=4, batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1),
                        generator_steps=3, per_class=4, umap_real=40)

_STATE = {"profile": "quick", "device": None}


# ----------------------------------------------------------------- set-up
def setup(profile: str = "quick", seed: int = 0, quiet: bool = False) -> torch.device:
    """Every chapter's first call: choose the profile, seed everything, style figures; returns the device."""
    if profile not in PROFILES:
        raise CpscError(f"Unknown PROFILE {profile!r}: use one of {', '.join(p for p in PROFILES if p != 'test')}.")
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
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`.*")
    try:
        import matplotlib
        matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": False,
                                    "figure.max_open_warning": 0})
    except ImportError:  # pragma: no cover
        pass
    if not quiet:
        gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none"
        print(f"cpsc-lite {__version__} | torch {torch.__version__} | device: {device} (GPU: {gpu}) | "
              f"profile: {profile} ({PROFILES[profile]['description']}) | cache: {cache_dir()}")
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


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` when the book is being built; a no-op elsewhere (e.g. on Colab). Returns ``value``."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value


# ------------------------------------------------------------------- data
_BUNDLE: dict[str, DataBundle] = {}


def bundle() -> DataBundle:
    """The digits dataset (chapters 1-7). Only its test split is read after the teacher is trained."""
    if DATASET not in _BUNDLE:
        _BUNDLE[DATASET] = load_dataset(DATASET)
    return _BUNDLE[DATASET]


# ---------------------------------------------------------------- teacher
def teacher_config() -> TeacherConfig:
    """The teacher recipe of the current profile: package defaults, epochs capped for ``quick``."""
    default = TeacherConfig()
    return TeacherConfig(epochs=PROFILES[profile()]["teacher_epochs"](default.epochs), device="cpu")


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
    meta = dict(meta, test_acc=metrics["test_acc"], train_seconds=metrics["seconds"], epochs=metrics["epochs"])
    return model, meta


@contextlib.contextmanager
def _building(final: Path):
    """Write an artefact into a temporary folder, then move it to ``final`` in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent))
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
        """A copy of the generator as it was at a snapshot iteration (chapter 6's step slider)."""
        i = self.snapshot_iters.index(iteration)
        g = copy.deepcopy(self.generator)
        g.load_state_dict(self.snapshot_states[i])
        return g.eval()


def _snapshot(generator: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}


def cpsc_run(name: str = "cpsc", **overrides) -> Run:
    """A CPSC-DFKD run on digits with the profile's settings plus ``overrides``; trained once, then cached.

    ``cpsc_run()`` is the book's main run (chapters 1, 3, 6); ``cpsc_run("no_scl", use_scl=False)``
    is chapter 5's comparison. Keeps a generator snapshot at every evaluation.
    """
    from .distill import Distiller, read_log
    from .teacher import load_classifier
    cfg = distill_config(**overrides)
    t_dir = _teacher_dir()
    teacher(torch.device("cpu"))  # make sure it exists
    cfg_key = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    out = cache_dir() / f"run-{name}-{_key(cfg_key, t_dir.name)}"
    if not (out / "metrics.json").exists():
        with _building(out) as tmp:
            t_model, meta = load_classifier(str(t_dir / "teacher.pt"), "teacher")
            d = Distiller(t_model, meta, cfg, bundle().test, out_dir=str(tmp))
            iters, states = [0], [_snapshot(d.generator)]

            def keep(distiller, record):
                if "student_acc" in record:
                    iters.append(record["iter"])
                    states.append(_snapshot(distiller.generator))

            start = time.time()
            result = d.run(progress=False, callback=keep)
            seconds = time.time() - start
            d.close()
            torch.save(dict(iters=iters, states=states), tmp / "snapshots.pt")
            (tmp / "state.pt").unlink(missing_ok=True)  # resume state: not needed by the book
            metrics = dict(name=name, student_acc=result["student_acc"], iters=result["iters"], seconds=seconds,
                           seconds_per_iter=seconds / max(1, result["iters"]), device=str(d.device),
                           profile=profile(), config=cfg.to_dict())
            checkpoint.write_json(metrics, str(tmp / "metrics.json"))
    return load_run(out, name)


def load_run(path: Path, name: str = "") -> Run:
    """Read a run folder written by :func:`cpsc_run` (or ``cpsc-lite distill``) back into a :class:`Run`."""
    from .distill import read_log
    from .teacher import load_classifier
    path = Path(path)
    obj = checkpoint.load(str(path / "generator.pt"), kind="generator", what="generator checkpoint")
    gen = ConditionalGenerator(**obj["meta"]["generator"])
    gen.load_state_dict(obj["state_dict"])
    gen.eval()
    student, _ = load_classifier(str(path / "student.pt"), "student")
    student.eval()
    metrics = json.loads((path / "metrics.json").read_text())
    records = read_log(str(path / "log.jsonl")) if (path / "log.jsonl").exists() else []
    snaps = dict(iters=[], states=[])
    if (path / "snapshots.pt").exists():
        snaps = torch.load(path / "snapshots.pt", map_location="cpu", weights_only=True)
    cfg = DistillConfig.from_dict(metrics["config"])
    return Run(name or metrics.get("name", path.name), cfg, gen, student, records, metrics,
               list(snaps["iters"]), list(snaps["states"]), path)


# ----------------------------------------------------- generator-only runs
def generator_only(use_bn: bool = True, use_ce: bool = False, steps: Optional[int] = None, seed: int = 0) -> dict:
    """Train a conditional generator against the frozen teacher alone: no student, no contrast.

    Chapter 3 uses ``use_bn=True, use_ce=False`` (DeepInversion's prior on its own);
    chapter 4 adds the pseudo-supervised CE. Returns ``dict(generator, losses, seconds)``;
    ``losses`` has one dict of loss values per step.
    """
    cfg = distill_config()
    steps = steps or PROFILES[profile()]["generator_steps"]
    t_dir = _teacher_dir()
    teacher(torch.device("cpu"))
    spec = dict(nz=cfg.nz, ngf=cfg.ngf, batch=cfg.batch_size, lr=cfg.lr_generator, betas=list(cfg.generator_betas),
                beta=cfg.beta, eta=cfg.eta, use_bn=use_bn, use_ce=use_ce, steps=steps, seed=seed)
    out = cache_dir() / f"generator-{'bn' if use_bn else ''}{'ce' if use_ce else ''}-{_key(spec, t_dir.name)}"
    if not (out / "generator.pt").exists():
        from .teacher import load_classifier
        with _building(out) as tmp:
            seed_everything(seed)
            t_model, meta = load_classifier(str(t_dir / "teacher.pt"), "teacher")
            t_model.eval().requires_grad_(False)
            gen = ConditionalGenerator(meta["num_classes"], meta["img_size"], meta["channels"], cfg.nz, cfg.ngf)
            opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr_generator, betas=tuple(cfg.generator_betas))
            losses = []
            start = time.time()
            with BNStatsLoss(t_model) as bn_loss:
                bn_loss.enabled = use_bn
                for _ in range(steps):
                    z, y = gen.sample_inputs(cfg.batch_size)
                    logits = t_model(gen(z, y))
                    loss = logits.new_zeros(())
                    row = {}
                    if use_bn:
                        row["bn"] = bn_loss.loss()
                        loss = loss + cfg.beta * row["bn"]
                    row["ce"] = pseudo_ce(logits, y)  # always measured; trained on only if use_ce
                    if use_ce:
                        loss = loss + cfg.eta * row["ce"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append({k: float(v) for k, v in row.items()})
            checkpoint.save(checkpoint.make("generator", gen.state_dict(), dict(generator=gen.config())),
                            str(tmp / "generator.pt"))
            checkpoint.write_json(dict(losses=losses, seconds=time.time() - start, spec=spec),
                                  str(tmp / "metrics.json"))
    obj = checkpoint.load(str(out / "generator.pt"), kind="generator")
    gen = ConditionalGenerator(**obj["meta"]["generator"])
    gen.load_state_dict(obj["state_dict"])
    info = json.loads((out / "metrics.json").read_text())
    return dict(generator=gen.eval(), losses=info["losses"], seconds=info["seconds"])


def fresh_generator(seed: int = 0) -> ConditionalGenerator:
    """An untrained generator with the profile's sizes ("before training", chapters 3 and 6)."""
    cfg = distill_config()
    b = bundle()
    torch.manual_seed(seed)
    return ConditionalGenerator(b.num_classes, b.img_size, b.channels, cfg.nz, cfg.ngf).eval()


# -------------------------------------------------------------- baselines
def kd_baseline(source: str = "real", steps: int = 300, batch_size: int = 128, seed: int = 0) -> dict:
    """Chapter 2: a student distilled by KL from the teacher on ``real`` training images or on Gaussian ``noise``.

    Returns ``dict(student_acc, accs, seconds)``; ``accs`` is the test accuracy every 25 steps.
    """
    from .losses import kl_divergence
    from .models import create_model
    from .utils import augment_batch, evaluate
    if source not in ("real", "noise"):
        raise CpscError("source must be 'real' or 'noise'")
    cfg = distill_config()
    t_dir = _teacher_dir()
    spec = dict(source=source, steps=steps, batch=batch_size, seed=seed, student=cfg.student, lr=cfg.lr_student)
    out = cache_dir() / f"kd-{source}-{_key(spec, t_dir.name)}"
    if not (out / "metrics.json").exists():
        t_model, meta = teacher(torch.device("cpu"))
        b = bundle()
        with _building(out) as tmp:
            seed_everything(seed)
            student = create_model(cfg.student, b.num_classes, b.channels, b.img_size)
            opt = torch.optim.SGD(student.parameters(), lr=cfg.lr_student, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            accs, start = [], time.time()
            for step in range(1, steps + 1):
                if source == "real":
                    idx = torch.randint(0, len(b.train), (batch_size,))
                    x = augment_batch(b.train.batch(idx)[0], b.augment_pad, b.augment_flip)  # labels unused
                else:
                    x = torch.randn(batch_size, b.channels, b.img_size, b.img_size)
                with torch.no_grad():
                    t_logits = t_model(x)
                loss = kl_divergence(t_logits, student(x))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if step % 25 == 0:
                    accs.append(dict(step=step, student_acc=evaluate(student, b.test, torch.device("cpu"))))
            checkpoint.write_json(dict(source=source, student_acc=accs[-1]["student_acc"], accs=accs,
                                       seconds=time.time() - start), str(tmp / "metrics.json"))
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------- measures
@torch.no_grad()
def samples(generator: ConditionalGenerator, per_class: Optional[int] = None, seed: int = 0):
    """``per_class`` synthetic images for every class, class-major: ``(images, labels)`` on the CPU."""
    from .viz import generate_per_class
    per_class = per_class or PROFILES[profile()]["per_class"]
    images, labels = generate_per_class(generator.cpu(), per_class, torch.device("cpu"), seed=seed)
    return images, labels


@torch.no_grad()
def teacher_features(model: nn.Module, images: torch.Tensor, batch_size: int = 512):
    """Teacher ``(logits, penultimate features)`` for a stack of images (chapters 4-6)."""
    model = model.cpu().eval()
    logits, feats = [], []
    for i in range(0, len(images), batch_size):
        out = model(images[i:i + batch_size].cpu(), return_features=True)
        logits.append(out[0])
        feats.append(out[1])
    return torch.cat(logits), torch.cat(feats)


@torch.no_grad()
def teacher_confidence(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Chapter 4: per class y, the teacher's mean probability of y on images made for y, and how often argmax = y."""
    logits, _ = teacher_features(model, images)
    prob = logits.softmax(1)
    p_y = prob[torch.arange(len(labels)), labels]
    agree = (prob.argmax(1) == labels).float()
    conf = [float(p_y[labels == c].mean()) for c in range(num_classes)]
    acc = [float(agree[labels == c].mean()) for c in range(num_classes)]
    return dict(confidence=conf, agreement=acc, mean_confidence=float(p_y.mean()), mean_agreement=float(agree.mean()))


@torch.no_grad()
def intra_class_diversity(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list:
    """Chapter 5: per class, the mean cosine distance (1 - cos) between different samples of that class."""
    f = F.normalize(features.float(), dim=1)
    out = []
    for c in range(num_classes):
        fc = f[labels == c]
        n = len(fc)
        if n < 2:
            out.append(float("nan"))
            continue
        sim = fc @ fc.T
        out.append(float(1.0 - (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))))
    return out


def real_test_images(limit: Optional[int] = None):
    """Normalised real test images and labels (used only for evaluation and reference plots)."""
    test = bundle().test
    n = len(test) if limit is None else min(limit, len(test))
    return test.batch(slice(0, n))


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Chapter 6: 2-D UMAP of feature vectors, with UMAP's chatter silenced."""
    from .viz import umap_embedding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return umap_embedding(np.asarray(features, dtype=np.float32), seed=seed)


def estimate_full_cost(repeats: int = 2) -> dict:
    """An *estimate* of the full profile's distillation time on this machine (landing page, chapter 6).

    Times a few iterations with the package's default config and scales by its
    iteration count (teacher training and evaluation not included).
    """
    from .distill import Distiller
    from .teacher import load_classifier
    teacher(torch.device("cpu"))
    full = make_config("cpsc")
    t_model, meta = load_classifier(str(_teacher_dir() / "teacher.pt"), "teacher")
    d = Distiller(t_model, meta, full.replace(device=str(current_device())), None)
    d.iterate()  # warm-up
    start = time.time()
    for _ in range(repeats):
        d.iterate()
    per_iter = (time.time() - start) / repeats
    d.close()
    return dict(seconds_per_iter=per_iter, iters=full.iters, minutes=per_iter * full.iters / 60,
                device=str(current_device()))


# ------------------------------------------------------------- chapter 7
#: Where a reader without a source checkout (e.g. Colab) finds the repository's data files.
RAW_URL = "https://raw.githubusercontent.com/cpsc-dfkd/cpsc-dfkd/main/"


def repo_root() -> Optional[Path]:
    """The source checkout this package runs from, or None when it was installed from an archive."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "cpsc_lite").is_dir() else None


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


def bench_results(dataset: str) -> Optional[dict]:
    """Chapter 7: the benchmark results for ``dataset``, or None when nobody has produced them yet."""
    where = bench_path(dataset)
    if where.startswith("https://"):
        import urllib.request
        try:
            with urllib.request.urlopen(where, timeout=10) as r:
                return json.loads(r.read().decode())
        except Exception:
            return None
    return json.loads(Path(where).read_text()) if os.path.exists(where) else None


def published_results():
    """Chapter 7: ``data/published_results.csv`` (numbers from the literature, not ours) as a DataFrame."""
    import pandas as pd
    local, url = _repo_file("data/published_results.csv")
    return pd.read_csv(local if local is not None else url)
