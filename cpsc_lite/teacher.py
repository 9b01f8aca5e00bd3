"""Supervised teacher training (book chapter 2): the one place real training images are used.

Recipe (METHOD.md): SGD, momentum 0.9, weight decay 5e-4, cosine schedule,
random shifts (+ horizontal flips where the dataset allows them).
"""

from __future__ import annotations

import os
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import CpscError, checkpoint
from .config import TeacherConfig
from .data import ArrayDataset, DataBundle
from .models import create_model
from .utils import augment_batch, evaluate, pick_device, seed_everything, warmup_cosine


def _train_batches(dataset, batch_size: int, device, generator: torch.Generator):
    if isinstance(dataset, ArrayDataset):
        order = torch.randperm(len(dataset), generator=generator)
        for i in range(0, len(order), batch_size):
            x, y = dataset.batch(order[i:i + batch_size])
            yield x.to(device), y.to(device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        num_workers=min(4, os.cpu_count() or 1), pin_memory=device.type == "cuda",
                        drop_last=False)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_teacher(bundle: DataBundle, cfg: TeacherConfig, progress: bool = True):
    """Train ``cfg.model`` on ``bundle.train``; returns ``(model, test_accuracy, history)``."""
    if bundle.train is None:
        raise CpscError(f"Dataset {bundle.name} has no training split, so a teacher cannot be trained on it. "
                        "Add x_train/y_train to the .npz (or a train/ folder), or bring a trained teacher.")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = create_model(cfg.model, bundle.num_classes, bundle.channels, bundle.img_size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(bundle.train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, 0))
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    start = time.time()
    bar = tqdm(range(cfg.epochs), desc=f"teacher {cfg.model}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        running, n = 0.0, 0
        for x, y in _train_batches(bundle.train, cfg.batch_size, device, gen):
            x = augment_batch(x, bundle.augment_pad, bundle.augment_flip)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(y)
            n += len(y)
        history.append(dict(epoch=epoch + 1, loss=running / n, seconds=round(time.time() - start, 2)))
        bar.set_postfix(loss=f"{running / n:.3f}")
    acc = evaluate(model, bundle.test, device)
    return model, acc, history


def run_teacher(bundle: DataBundle, cfg: TeacherConfig, out_dir: str, progress: bool = True,
                metrics_name: str = "metrics.json") -> dict:
    """Train, then write ``out_dir/teacher.pt`` and ``out_dir/<metrics_name>``."""
    start = time.time()
    model, acc, history = train_teacher(bundle, cfg, progress)
    meta = checkpoint.model_meta(cfg.model, bundle, test_acc=acc, train_config=cfg.to_dict())
    checkpoint.save(checkpoint.make("teacher", model.state_dict(), meta), os.path.join(out_dir, "teacher.pt"))
    metrics = dict(test_acc=acc, model=cfg.model, dataset=bundle.name, epochs=cfg.epochs,
                   seconds=round(time.time() - start, 2), history=history)
    checkpoint.write_json(metrics, os.path.join(out_dir, metrics_name))
    return metrics


def load_classifier(path: str, kind: str = "teacher", device: Optional[torch.device] = None):
    """Rebuild a classifier from a cpsc_lite checkpoint; returns ``(model, meta)``."""
    obj = checkpoint.load(path, kind=kind, what=f"{kind} checkpoint")
    meta = obj["meta"]
    model = create_model(meta["model"], meta["num_classes"], meta["channels"], meta["img_size"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CpscError(f"The weights in {path} do not fit model {meta['model']!r}: "
                        f"{str(exc).splitlines()[0]} The file may come from another version; re-create it.") from None
    if device is not None:
        model.to(device)
    return model, meta


def check_compatible(meta: dict, bundle: DataBundle, path: str) -> None:
    """Refuse a teacher trained for other classes or another image shape than ``bundle``."""
    if meta["num_classes"] != bundle.num_classes:
        raise CpscError(f"The teacher {path} predicts {meta['num_classes']} classes but dataset {bundle.name} has "
                        f"{bundle.num_classes}. Use the dataset the teacher was trained on "
                        f"({meta.get('dataset')}) or train a teacher for this one with `cpsc-lite teacher`.")
    want = (meta["channels"], meta["img_size"])
    have = (bundle.channels, bundle.img_size)
    if want != have:
        raise CpscError(f"The teacher {path} expects {want[0]}-channel {want[1]}x{want[1]} images but dataset "
                        f"{bundle.name} has {have[0]}-channel {have[1]}x{have[1]} images. Use the dataset the "
                        f"teacher was trained on ({meta.get('dataset')}) or train a matching teacher.")
