"""Small shared helpers: device choice, mixed precision, seeding, evaluation, batch augmentation."""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import CpscError
from .data import ArrayDataset


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit name is used as given, if it exists here."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CpscError(f"--device {name!r} is not a device name. Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CpscError(f"--device {name} was requested, but PyTorch sees no CUDA GPU here "
                            f"(torch {torch.__version__}, torch.cuda.is_available() is False). Use --device cpu "
                            "(or auto), or install a CUDA build of PyTorch on a machine with an NVIDIA GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CpscError(f"--device {name} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if device.type == "mps" and not _mps_available():
        raise CpscError(f"--device {name} was requested, but Apple's MPS backend is not available here. "
                        "Use --device cpu (or auto).")
    return device


# --------------------------------------------------------------- precision
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or None for full float32.

    ``auto`` is bf16 on a CUDA GPU that supports it, else fp16 (with gradient
    scaling), and off on every other device, so CPU runs stay bit-identical to
    float32 ones. ``bf16``/``fp16`` are honoured on CUDA and CPU when asked for
    explicitly; on Apple MPS they fall back to float32 with a warning.
    """
    if amp not in AMP_CHOICES:
        raise CpscError(f"--amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}.")
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise CpscError("--amp bf16 needs a GPU with bfloat16 support (NVIDIA Ampere or newer); "
                            "use --amp fp16 or --amp auto on this GPU.")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "auto":
        return None
    if device.type == "mps":
        warnings.warn(f"--amp {amp} is not supported on Apple MPS here; running in float32.", stacklevel=2)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass
class Acceleration:
    """How to run fast on a GPU. None of it changes the method; on CPU, by default, none of it is active.

    * ``amp``: mixed precision (see :func:`resolve_amp`); losses are still computed in float32.
    * ``compile``: ``torch.compile`` mode for the forward passes (``"default"``, ``"max-autotune"``, ...),
      or None for eager; ``compile_backend`` is torch.compile's backend (tests use ``"aot_eager"``).
    * ``channels_last``: NHWC memory layout for the networks and generated images; None = on for CUDA.
    * ``sync_bn``: with several CUDA processes, SyncBatchNorm in the generator and the student
      (batch statistics over the global batch instead of each GPU's share).
    """

    amp: str = "auto"
    compile: Optional[str] = None
    compile_backend: str = "inductor"
    channels_last: Optional[bool] = None
    sync_bn: bool = False

    def use_channels_last(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else bool(self.channels_last)

    def to_dict(self) -> dict:
        return asdict(self)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype``, or a context that does nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: Optional[torch.dtype]):
    """A GradScaler for fp16 (whose small range needs loss scaling); None for bf16 and float32."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def fused_optimizer_kwargs(device: torch.device) -> dict:
    """``fused=True`` on CUDA (one kernel per optimiser step); nothing elsewhere, so CPU stays unchanged."""
    return dict(fused=True) if device.type == "cuda" else {}


def configure_backends(device: torch.device) -> None:
    """CUDA-only global switches: cuDNN autotuning (fixed shapes here) and TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


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
            yield _to_device(x, device), _to_device(y, device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                        pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copies go through pinned memory so they can overlap with compute."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


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
