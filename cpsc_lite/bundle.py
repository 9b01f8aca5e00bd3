"""What every dataset loader returns: images in memory (:class:`ArrayDataset`) and one dataset's
splits with the facts the other modules need (:class:`DataBundle`); normalisation helpers.

A leaf: the loaders (:mod:`cpsc_lite.data`, :mod:`cpsc_lite.vision_datasets`, :mod:`cpsc_lite.image_folders`) import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """Images held in memory as a tensor ``[N, C, H, W]`` (uint8 0..255 or float 0..1).

    Items come out normalised, ``(x - mean) / std`` per channel, with integer labels.
    uint8 images stay uint8 in memory (a quarter of float32's size) and are
    converted batch by batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        if images.dtype != torch.uint8:
            images = images.float()
        self.images = images
        self.labels = labels.long()
        c = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(c, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return (x - self.mean) / self.std

    def __getitem__(self, i):
        return self._normalize(self.images[i]), int(self.labels[i])

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels for ``index`` (a slice or a tensor of indices)."""
        return self._normalize(self.images[index]), self.labels[index]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "ArrayDataset":
        """The same images on ``device`` (a new dataset; this one is unchanged). On a GPU, batches
        are then drawn without a host-to-device copy per step."""
        device = torch.device(device)
        if device == self.images.device:
            return self
        moved = ArrayDataset.__new__(ArrayDataset)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved


@dataclass
class DataBundle:
    """One dataset: splits plus the facts every other module needs about it."""

    name: str
    test: Dataset
    train: Optional[Dataset]
    num_classes: int
    channels: int
    img_size: int
    mean: tuple
    std: tuple
    class_names: list = field(default_factory=list)
    # Training-time augmentation for the teacher: random shift by up to ``pad`` pixels,
    # and horizontal flips only where mirror images are still the same class.
    augment_pad: int = 0
    augment_flip: bool = False

    def __post_init__(self):
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]

    def describe(self) -> str:
        n_train = len(self.train) if self.train is not None else 0
        return (
            f"{self.name}: {self.num_classes} classes, {self.channels}x{self.img_size}x{self.img_size} images, "
            f"{n_train} train / {len(self.test)} test"
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and std of images in [0, 1], shape [N, C, H, W]."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(
        round(float(s), 4) for s in std
    )


def with_normalization(dataset, mean, std):
    """Evaluate with the normalisation the teacher was trained with, not the dataset's own guess."""
    if isinstance(dataset, ArrayDataset) and (
        tuple(dataset.mean.flatten().tolist()) != tuple(mean)
        or tuple(dataset.std.flatten().tolist()) != tuple(std)
    ):
        return ArrayDataset(dataset.images, dataset.labels, mean, std)
    return dataset


def denormalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Undo :class:`ArrayDataset` normalisation for display, clamped to [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)
