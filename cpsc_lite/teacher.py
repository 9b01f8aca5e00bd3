"""Supervised teacher training (book chapter 2): the one place real training images are used.

Recipe (as the CMI/DataFree teachers are trained; book chapter 8): SGD, momentum 0.9, weight decay 5e-4,
cosine schedule,
random shifts (+ horizontal flips where the dataset allows them). Per-dataset
defaults are in :data:`TEACHER_RECIPES`: the built-in digits (0.10.0) and ``shapes`` (0.11.0)
train without the shifts (``shifts=False``; ``shapes`` keeps its flips); any dataset without an entry uses
:class:`~cpsc_lite.config.TeacherConfig` as it is.

Training evaluates every few epochs and writes ``teacher_state.pt`` atomically, so an
interrupted run continues with ``resume=True`` (``cpsc-lite teacher ... --resume``).
A community teacher (a bare state dict published with CMI/DataFree) is read by
:func:`load_teacher` with a model name.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import CpscError, checkpoint, folders
from .config import TeacherConfig
from .data import ArrayDataset, DataBundle
from .models import create_model
from . import engine
from .engine import (
    Acceleration,
    autocast,
    configure_backends,
    fused_optimizer_kwargs,
    grad_scaler,
    pick_device,
    resolve_amp,
    rng_state,
    seed_everything,
    set_rng_state,
)
from .loop import run_loop
from .utils import augment_batch, evaluate, warmup_cosine

#: Per-dataset recipes: changes to TeacherConfig's defaults (which stay the recipe for digits,
#: MNIST-like and user datasets). CIFAR follows the CMI/DataFree teachers (SGD 0.1,
#: batch 128, cosine, 200 epochs). SVHN converges much sooner, so 50 epochs (our choice);
#: Tiny-ImageNet uses the CIFAR recipe with the 64x64 ResNet. ``--epochs``/``--lr``/
#: ``--batch-size``/``--model`` override any of them.
_CIFAR_RECIPE = dict(
    model="resnet34",
    epochs=200,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
)
TEACHER_RECIPES: dict[str, dict] = {
    # no random shifts: a teacher that accepts a digit anywhere within a pixel lets the generator
    # put it anywhere (book chapter 4; experiments/tuning/teacher_shifts/)
    "digits": dict(shifts=False),
    # no random shifts either (flips stay): the teacher then agreed with the conditioning class a
    # little more often and its students were more accurate on validation seeds
    # (experiments/tuning/shapes_teacher/)
    "shapes": dict(shifts=False),
    "cifar10": _CIFAR_RECIPE,
    "cifar100": _CIFAR_RECIPE,
    "svhn": dict(_CIFAR_RECIPE, epochs=50),
    "tiny-imagenet": dict(_CIFAR_RECIPE, model="resnet34_64"),
}

STATE_FILE = "teacher_state.pt"


def teacher_recipe(dataset: str, **overrides) -> TeacherConfig:
    """The teacher recipe for ``dataset`` (:data:`TEACHER_RECIPES`), then ``overrides`` that are not None."""
    d = TeacherConfig().to_dict()
    d.update(TEACHER_RECIPES.get(dataset, {}))
    d.update({k: v for k, v in overrides.items() if v is not None})
    return TeacherConfig(**d)


def _on_device(dataset, device: torch.device):
    """An in-memory dataset moved to the GPU once (uint8 CIFAR is 150 MB), so batches never cross PCIe."""
    if (
        device.type != "cuda"
        or not isinstance(dataset, ArrayDataset)
        or dataset.images.nbytes > 4 * 2**30
    ):
        return dataset
    return dataset.to(device)


def _train_batches(dataset, batch_size: int, device, generator: torch.Generator):
    if isinstance(dataset, ArrayDataset):
        # one copy of the epoch's order to the data's device, not one per batch
        order = torch.randperm(len(dataset), generator=generator).to(dataset.device)
        for i in range(0, len(order), batch_size):
            x, y = dataset.batch(order[i : i + batch_size])
            yield x.to(device), y.to(device)
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=min(4, os.cpu_count() or 1),
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class TeacherJob:
    """Supervised training of ``cfg.model`` on ``bundle.train``, as
    :func:`cpsc_lite.loop.run_loop` drives it: one unit is one epoch."""

    def __init__(self, bundle, cfg, out_dir, state, eval_every, ckpt_every, accel, say):
        self.bundle, self.cfg, self.out = bundle, cfg, out_dir
        self.inputs = training_inputs(bundle)
        self.eval_every, self.ckpt_every = eval_every, ckpt_every
        seed_everything(cfg.seed)
        self.device = device = pick_device(cfg.device)
        configure_backends(device)
        self.model = create_model(
            cfg.model, bundle.num_classes, bundle.channels, bundle.img_size
        ).to(device)
        if accel.use_channels_last(device):
            self.model.to(memory_format=torch.channels_last)
        self.amp = resolve_amp(accel.amp, device)
        self.scaler = grad_scaler(device, self.amp)
        self.opt = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            **fused_optimizer_kwargs(device, self.amp),
        )
        steps = cfg.epochs * -(-len(bundle.train) // cfg.batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, steps, 0)
        )
        self.data_rng = torch.Generator().manual_seed(cfg.seed)
        self.history, self.done, self.elapsed = [], 0, 0.0
        self.total = cfg.epochs
        if state is not None:
            self.load(state)
            say(f"resuming teacher training after epoch {self.done} of {cfg.epochs}")
        self.train_set = _on_device(bundle.train, device)

    def step(self) -> dict:
        """One epoch; its mean training loss (summed on the device: no per-step sync)."""
        cfg, bundle, model = self.cfg, self.bundle, self.model
        model.train()
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        n = 0
        pad = bundle.augment_pad if cfg.shifts else 0
        for x, y in _train_batches(
            self.train_set, cfg.batch_size, self.device, self.data_rng
        ):
            x = augment_batch(x, pad, bundle.augment_flip)
            with autocast(self.device, self.amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            engine.update((self.opt,), loss, self.scaler)
            self.sched.step()
            running += loss.detach().double() * len(y)
            n += len(y)
        self.done += 1
        return {"loss": running / n}

    def log_due(self, epoch: int, end: int) -> bool:
        return True

    def record(self, sums: dict, n: int, epoch: int) -> dict:
        record = dict(
            epoch=epoch, loss=float(sums["loss"]) / n, seconds=round(self.elapsed, 2)
        )
        if not math.isfinite(record["loss"]) or checkpoint.diverged_weights(
            self.model.state_dict()
        ):
            raise CpscError(
                f"Teacher training diverged in epoch {epoch} (loss {record['loss']:.3g}, or weights "
                "NaN/infinite); nothing from this epoch was saved. Start again with a lower --lr "
                "(and --overwrite)."
            )
        if self.eval_every and (epoch % self.eval_every == 0 or epoch == self.total):
            record["test_acc"] = evaluate(self.model, self.bundle.test, self.device)
        self.history.append(record)
        return record

    def save_due(self, epoch: int, end: int) -> bool:
        due = bool(self.ckpt_every) and epoch % self.ckpt_every == 0
        return bool(self.out) and epoch < self.total and due

    def save(self) -> None:
        """teacher_state.pt: everything needed to continue (nothing without an output folder)."""
        if not self.out:
            return
        snapshot = dict(
            model=self.model.state_dict(),
            opt=self.opt.state_dict(),
            sched=self.sched.state_dict(),
            data_rng=self.data_rng.get_state(),
            rng=rng_state(self.device),
            history=self.history,
            epoch=self.done,
            elapsed=self.elapsed,
            config=self.cfg.to_dict(),
            inputs=self.inputs,
            **({} if self.scaler is None else dict(scaler=self.scaler.state_dict())),
        )
        checkpoint.save(
            checkpoint.make(
                "teacher_resume", {}, {"model": self.cfg.model}, state=snapshot
            ),
            os.path.join(self.out, STATE_FILE),
        )

    def load(self, state: dict) -> None:
        path = os.path.join(self.out or ".", STATE_FILE)
        try:
            self._load(state, path)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            what = (
                f"it has no {exc}: it was edited, or written by an older cpsc-lite"
                if isinstance(exc, KeyError)
                else f"it is damaged or was edited ({str(exc).splitlines()[0][:200]})"
            )
            raise CpscError(
                f"The teacher resume state {path} cannot be continued: {what}. Restore a good "
                "copy, or pass --overwrite (or another --out) to train the teacher from the start."
            ) from None

    def _load(self, state: dict, path: str) -> None:
        checkpoint.load_weights(
            self.model, state["model"], path, f"model {self.cfg.model!r}"
        )
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.data_rng.set_state(state["data_rng"])
        set_rng_state(state["rng"], self.device)
        self.history = list(state["history"])
        self.done, self.elapsed = state["epoch"], state["elapsed"]

    def stop_requested(self, epoch: int) -> bool:
        return checkpoint.termination_requested() and epoch < self.total

    def stop_message(self, epoch: int) -> str:
        saved = (
            f"; its checkpoint is {os.path.join(self.out, STATE_FILE)}. Rerun the same command "
            "with --resume to continue from it."
            if self.out
            else " (nothing was saved)."
        )
        return f"Stopped by SIGTERM after epoch {epoch} of {self.total}" + saved


def train_teacher(
    bundle: DataBundle,
    cfg: TeacherConfig,
    progress: bool = True,
    out_dir: Optional[str] = None,
    state: Optional[dict] = None,
    eval_every: int = 5,
    ckpt_every: int = 5,
    accel: Optional[Acceleration] = None,
    say: Callable[[str], None] = print,
):
    """Train ``cfg.model`` on ``bundle.train``; returns ``(model, test_accuracy, history)``.

    Every ``eval_every`` epochs the test accuracy joins the history; with ``out_dir``, every
    ``ckpt_every`` epochs everything needed to continue is written to ``out_dir/teacher_state.pt``
    (``state`` is such a checkpoint's content, to continue from). On CPU, by default, results are
    bit-identical to uninterrupted training; ``accel`` adds mixed precision on CUDA and channels-last (CUDA and CPU).
    """
    if bundle.train is None:
        raise CpscError(
            f"Dataset {bundle.name} has no training split, so a teacher cannot be trained on it. "
            "Add x_train/y_train to the .npz (or a train/ folder), or bring a trained teacher."
        )
    job = TeacherJob(
        bundle,
        cfg,
        out_dir,
        state,
        eval_every,
        ckpt_every,
        accel or Acceleration(),
        say,
    )
    run_loop(
        job,
        progress=progress,
        desc=f"teacher {cfg.model}",
        postfix=lambda r: dict(
            loss=f"{r['loss']:.3f}",
            **({"acc": f"{r['test_acc']:.3f}"} if "test_acc" in r else {}),
        ),
    )
    history = job.history
    acc = (
        history[-1]["test_acc"]
        if history and "test_acc" in history[-1]
        else evaluate(job.model, bundle.test, job.device)
    )
    return job.model, acc, history


def run_teacher(
    bundle: DataBundle,
    cfg: TeacherConfig,
    out_dir: str,
    progress: bool = True,
    metrics_name: str = "metrics.json",
    resume: bool = False,
    eval_every: int = 5,
    ckpt_every: int = 5,
    accel: Optional[Acceleration] = None,
    say: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict:
    """Train, then write ``out_dir/teacher.pt`` and ``out_dir/<metrics_name>``.

    With ``resume`` an interrupted training (``teacher_state.pt``) continues with its stored
    settings (``cfg.device`` may change) on the data it was started with (another data set is
    refused); the state file is removed once teacher.pt is written. An existing teacher.pt or
    state is replaced only with ``overwrite``, and another command's metrics file never
    (:func:`folders.prepare_output_dir`). The folder is locked while it trains
    (:func:`folders.hold`).
    """
    with folders.hold(out_dir, "a teacher training"):
        return _run_teacher(
            bundle, cfg, out_dir, progress, metrics_name, resume, eval_every,
            ckpt_every, accel, say, overwrite,
        )  # fmt: skip


def _run_teacher(
    bundle, cfg, out_dir, progress, metrics_name, resume, eval_every, ckpt_every,
    accel, say, overwrite,
) -> dict:  # fmt: skip
    start = time.time()
    resuming = folders.prepare_output_dir(
        out_dir,
        state_file=STATE_FILE,
        owner="teacher",
        what="an interrupted teacher training",
        resume=resume,
        overwrite=overwrite,
        products=("teacher.pt",),
        metrics_file=metrics_name,
        say=say,
    )
    state_path = os.path.join(out_dir, STATE_FILE)
    state = None
    if resuming:
        state = checkpoint.load(
            state_path, kind="teacher_resume", what="teacher resume state"
        )["state"]
        check_same_inputs(state, bundle, state_path)
        try:
            stored = TeacherConfig(**dict(state["config"], device=cfg.device))
        except TypeError as exc:
            raise CpscError(
                f"The teacher resume state {state_path} holds settings this version does not know "
                f"({exc}). Restore a good copy, or pass --overwrite to train the teacher anew."
            ) from None
        changed = [
            k
            for k, v in stored.to_dict().items()
            if k != "device" and v != cfg.to_dict()[k]
        ]
        if changed:
            say(
                f"note: resuming with the settings stored in {state_path}; ignoring changed {', '.join(changed)}"
            )
        cfg = stored
        start -= state.get("elapsed", 0.0)
    elif os.path.exists(state_path):
        # --overwrite: a fresh start must not leave an older run's state to resume later
        os.remove(state_path)
    model, acc, history = train_teacher(
        bundle,
        cfg,
        progress,
        out_dir=out_dir,
        state=state,
        eval_every=eval_every,
        ckpt_every=ckpt_every,
        accel=accel,
        say=say,
    )
    # The trained teacher is written whole before SIGTERM may stop the command (a second or so).
    with checkpoint.polling_for_termination():
        meta = checkpoint.model_meta(
            cfg.model, bundle, test_acc=acc, train_config=cfg.to_dict()
        )
        checkpoint.save(
            checkpoint.make("teacher", model.state_dict(), meta),
            os.path.join(out_dir, "teacher.pt"),
        )
        metrics = dict(
            test_acc=acc,
            model=cfg.model,
            dataset=bundle.name,
            epochs=cfg.epochs,
            seconds=round(time.time() - start, 2),
            history=history,
        )
        checkpoint.write_json(metrics, os.path.join(out_dir, metrics_name))
        if os.path.exists(state_path):
            # teacher.pt now holds the result; the resume state is no longer needed
            os.remove(state_path)
    return metrics


def training_inputs(bundle: DataBundle) -> dict:
    """What a teacher training is trained on, recorded in teacher_state.pt so that ``--resume``
    recognises it: the data set's name and shape, and a hash of its training split (when it is
    held in memory)."""
    train = bundle.train
    return dict(
        dataset=bundle.name,
        num_classes=bundle.num_classes,
        channels=bundle.channels,
        img_size=bundle.img_size,
        train=checkpoint.fingerprint({"x": train.images, "y": train.labels})
        if isinstance(train, ArrayDataset)
        else None,
    )


def check_same_inputs(state: dict, bundle: DataBundle, path: str) -> None:
    """Refuse to continue a teacher training on another data set than it was started with (its
    classes, image shape or, where recorded, its training images)."""
    stored = state.get("inputs") or {}
    now = training_inputs(bundle)
    shape = ("num_classes", "channels", "img_size")
    if stored.get("train") and now["train"]:
        differ = stored["train"] != now["train"]
    elif stored:
        differ = any(stored.get(k) != now[k] for k in ("dataset", *shape))
    else:  # written before 0.12: the model's last layer still knows the class count
        weights = [
            t for t in (state.get("model") or {}).values() if hasattr(t, "shape")
        ]
        differ = bool(weights) and weights[-1].shape[0] != bundle.num_classes
    if differ:
        was = (
            f"{stored['dataset']}, {stored['num_classes']} classes, "
            f"{stored['channels']}-channel {stored['img_size']}x{stored['img_size']}"
            if stored
            else "another data set"
        )
        raise CpscError(
            f"The interrupted teacher training in {os.path.dirname(path)} was started on other "
            f"data ({was}) than the --dataset given now ({bundle.name}, {bundle.num_classes} "
            f"classes), so resuming would train one teacher on two data sets. Pass the dataset it "
            "was started with, or --overwrite (or another --out) to train a new teacher."
        )


def load_classifier(
    path: str, kind: str = "teacher", device: Optional[torch.device] = None
):
    """Rebuild a classifier from a cpsc_lite checkpoint; returns ``(model, meta)``."""
    obj = checkpoint.load(path, kind=kind, what=f"{kind} checkpoint")
    meta = obj["meta"]
    model = create_model(
        meta["model"], meta["num_classes"], meta["channels"], meta["img_size"]
    )
    checkpoint.load_weights(model, obj["state_dict"], path, f"model {meta['model']!r}")
    if device is not None:
        model.to(device)
    return model, meta


def load_teacher(
    path: str,
    bundle: Optional[DataBundle] = None,
    model_name: Optional[str] = None,
    device: Optional[torch.device] = None,
    say: Callable[[str], None] = print,
):
    """A teacher ``(model, meta)`` from a cpsc_lite teacher.pt, or from a community state dict.

    With ``model_name`` (``--teacher-model``) a file that is not a cpsc_lite checkpoint (a
    CMI/DataFree ``.pth``: a bare state dict, or one under ``'state_dict'``/``'model'``, maybe
    with ``'module.'`` prefixes) is loaded strictly into ``create_model(model_name, ...)`` built
    for ``bundle``'s classes, channels and image size, and normalised with ``bundle``'s
    mean/std. Without it such a file is refused with a message that names ``--teacher-model``.
    """
    if model_name is None:
        return load_classifier(path, "teacher", device)
    obj = checkpoint.read_weights_file(path)
    if isinstance(obj, dict) and obj.get("format") == checkpoint.FORMAT:
        model, meta = load_classifier(path, "teacher", device)
        if meta["model"] != model_name:
            say(
                f"note: {path} is a cpsc_lite teacher ({meta['model']}); ignoring --teacher-model {model_name}"
            )
        return model, meta
    if bundle is None:
        raise CpscError(
            f"To load the community teacher {path} as {model_name}, name its dataset (--dataset): "
            "the number of classes, image size and normalisation come from it."
        )
    from .cifar_models import load_community_state_dict

    model = create_model(
        model_name, bundle.num_classes, bundle.channels, bundle.img_size
    )
    load_community_state_dict(model, obj)
    checkpoint.refuse_diverged(
        model.state_dict(), f"teacher {path}", "Use a good copy."
    )
    meta = checkpoint.model_meta(model_name, bundle, source_file=os.path.abspath(path))
    if device is not None:
        model.to(device)
    return model, meta


def check_compatible(meta: dict, bundle: DataBundle, path: str) -> None:
    """Refuse a teacher trained for other classes or another image shape than ``bundle``."""
    if meta["num_classes"] != bundle.num_classes:
        raise CpscError(
            f"The teacher {path} predicts {meta['num_classes']} classes but dataset {bundle.name} has "
            f"{bundle.num_classes}. Use the dataset the teacher was trained on "
            f"({meta.get('dataset')}) or train a teacher for this one with `cpsc-lite teacher`."
        )
    want = (meta["channels"], meta["img_size"])
    have = (bundle.channels, bundle.img_size)
    if want != have:
        raise CpscError(
            f"The teacher {path} expects {want[0]}-channel {want[1]}x{want[1]} images but dataset "
            f"{bundle.name} has {have[0]}-channel {have[1]}x{have[1]} images. Use the dataset the "
            f"teacher was trained on ({meta.get('dataset')}) or train a matching teacher."
        )
