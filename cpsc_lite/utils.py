"""Helpers over data that teacher training and distillation share: batches, evaluation, batch
augmentation, the warm-up cosine schedule. How a run executes (device, precision, seeding) is in
:mod:`cpsc_lite.engine`."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import ArrayDataset


def batches(dataset: Dataset, batch_size: int, device: torch.device):
    """Yield (x, y) batches of a dataset in order, on ``device``."""
    if isinstance(dataset, ArrayDataset):
        for i in range(0, len(dataset), batch_size):
            x, y = dataset.batch(slice(i, i + batch_size))
            yield _to_device(x, device), _to_device(y, device)
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copies go through pinned memory so they can overlap with compute."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512
) -> float:
    """Top-1 accuracy (fraction 0..1) of ``model`` on ``dataset``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches(dataset, batch_size, device):
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def augment_batch(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Random shift by up to ``pad`` pixels (zero padding in normalised space) and optional h-flip."""
    if pad > 0:
        b, _, h, w = x.shape
        padded = nn.functional.pad(x, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # [B, H]
        cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # [B, W]
        x = padded[
            torch.arange(b, device=x.device)[:, None, None, None],
            torch.arange(x.shape[1], device=x.device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if flip:
        mask = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
