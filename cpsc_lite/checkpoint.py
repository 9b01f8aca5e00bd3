"""Checkpoints: atomic writes, safe loads (``weights_only=True``), plain metadata.

Every file holds a dict ``{"format": "cpsc_lite", "kind": ..., "state_dict": ...,
"meta": {...}}`` built only from tensors and plain Python data, so it loads
with ``torch.load(..., weights_only=True)``: loading never runs code from the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

import torch

from . import CpscError, __version__

FORMAT = "cpsc_lite"


def atomic_write_bytes(path: str, writer) -> None:
    """Call ``writer(file)`` on a temporary file next to ``path``, then rename it into place.

    A crash mid-write leaves the previous ``path`` untouched: the rename is atomic.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def write_json(obj: Any, path: str) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def make(kind: str, state_dict: dict, meta: dict, **extra) -> dict:
    meta = dict(meta, version=__version__)
    return dict(format=FORMAT, kind=kind, state_dict=state_dict, meta=meta, **extra)


def load(path: str, kind: Optional[str] = None, what: str = "checkpoint") -> dict:
    """Load a cpsc_lite checkpoint safely, with clear errors for every way it can go wrong."""
    if not os.path.isfile(path):
        raise CpscError(f"The {what} {path} does not exist. Check the path; a teacher is made with "
                        "`cpsc-lite teacher ... --out DIR` (it writes DIR/teacher.pt).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CpscError(f"Cannot read the {what} {path}: it is truncated, corrupt, or not a PyTorch file "
                        f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                        "Re-create it (for a teacher: `cpsc-lite teacher ...`) or restore a good copy.") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CpscError(f"{path} is not a cpsc_lite {what} (no 'format: cpsc_lite' marker). cpsc_lite reads the "
                        "files it writes itself; to use a community teacher (a bare state dict), pass "
                        "--teacher-model NAME so it can be wrapped.")
    if kind is not None and obj.get("kind") != kind:
        raise CpscError(f"{path} holds a {obj.get('kind')!r} checkpoint, but a {kind!r} checkpoint is needed "
                        f"here. Pass the {kind}.pt file instead.")
    return obj


def model_meta(model_name: str, bundle, **extra) -> dict:
    """Plain-data facts about a classifier and the data it expects."""
    return dict(model=model_name, num_classes=bundle.num_classes, channels=bundle.channels,
                img_size=bundle.img_size, mean=list(bundle.mean), std=list(bundle.std),
                class_names=list(bundle.class_names), dataset=bundle.name, **extra)


def metrics_owner(path: str) -> Optional[str]:
    """Which command wrote the metrics.json at ``path``: "distillation", "teacher", "unknown", or None if
    there is none. Commands check it before writing into a folder, so that none replaces another's file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return "unknown"
    if isinstance(saved, dict) and "student_acc" in saved:
        return "distillation"
    return "teacher" if isinstance(saved, dict) and "history" in saved else "unknown"
