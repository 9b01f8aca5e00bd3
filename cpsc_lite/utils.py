"""Small shared helpers: device choice, seeding, evaluation, batch augmentation."""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import ArrayDataset


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random state a run draws from, as plain tensors/lists (checkpoint-safe)."""
    state = dict(torch=torch.get_rng_state(), python=_py_state_to_list(random.getstate()),
                 numpy=_np_state_to_list(np.random.get_state()))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_list_to_py_state(state["python"]))
    np.random.set_state(_list_to_np_state(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _list_to_py_state(s):
    return (s[0], tuple(s[1]), s[2])


def _np_state_to_list(s):
    return [s[0], torch.from_numpy(s[1].astype(np.int64)), int(s[2]), int(s[3]), float(s[4])]


def _list_to_np_state(s):
    return (s[0], s[1].numpy().astype(np.uint32), s[2], s[3], s[4])


def batches(dataset: Dataset, batch_size: int, device: torch.device):
    """Yield (x, y) batches of a dataset in order, on ``device``."""
    if isinstance(dataset, ArrayDataset):
        for i in range(0, len(dataset), batch_size):
            x, y = dataset.batch(slice(i, i + batch_size))
            yield x.to(device), y.to(device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                        pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> float:
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
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # [B, H]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # [B, W]
        x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                   torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
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
