"""Classifiers by name: a tiny registry in the spirit of timm's ``create_model``.

Every model maps images ``[B, C, H, W]`` to logits ``[B, K]``. Called with
``return_features=True`` it returns ``(logits, features)`` where ``features`` is
the penultimate representation (after global pooling, before the final linear
layer): CPSC-DFKD's contrastive term uses it as a "view" of the image
(book chapter 5).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from . import cifar_models  # noqa: F401  (registers the CIFAR-scale families; an import error surfaces)
from .registry import MODELS

#: Decorator: make ``fn(num_classes, in_channels, img_size) -> nn.Module`` creatable by name.
register_model = MODELS.register


def available_models() -> dict[str, str]:
    """Registered model names with a one-line description each."""
    return MODELS.describe()


def create_model(
    name: str, num_classes: int, in_channels: int = 3, img_size: int = 32
) -> nn.Module:
    """Build a registered classifier; unknown names raise a :class:`CpscError` listing the choices."""
    build, _ = MODELS.resolve(name)
    model = build(num_classes=num_classes, in_channels=in_channels, img_size=img_size)
    model.model_name = name
    return model


def feature_dim(model: nn.Module, in_channels: int, img_size: int) -> int:
    """Size of the penultimate features, found with one tiny forward pass."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        _, feats = model(
            torch.zeros(2, in_channels, img_size, img_size, device=device),
            return_features=True,
        )
    model.train(was_training)
    return feats.shape[1]


class SmallCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU), two 2x poolings, global average pooling, linear head.

    Sized for tiny images (8x8 digits up to 32x32). ``width`` scales every layer;
    the penultimate features always have ``4 * width`` dimensions.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 1, width: int = 32, img_size: int = 8
    ):
        super().__init__()
        w = width

        def block(cin, cout):
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        # Pool only while the map is large enough: an 8x8 input ends at 2x2.
        pool1 = [nn.MaxPool2d(2)] if img_size >= 4 else []
        pool2 = [nn.MaxPool2d(2)] if img_size >= 8 else []
        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            *pool1,
            *block(w, 2 * w),
            *pool2,
            *block(2 * w, 4 * w),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        logits = self.classifier(feats)
        return (logits, feats) if return_features else logits


@register_model(
    "cnn_base",
    "SmallCNN width 32 (about 0.1M parameters): the demo's teacher for tiny images",
)
def cnn_base(num_classes: int, in_channels: int = 1, img_size: int = 8) -> nn.Module:
    return SmallCNN(num_classes, in_channels, width=32, img_size=img_size)


@register_model(
    "cnn_small",
    "SmallCNN width 16 (about 27k parameters): the demo's student for tiny images",
)
def cnn_small(num_classes: int, in_channels: int = 1, img_size: int = 8) -> nn.Module:
    return SmallCNN(num_classes, in_channels, width=16, img_size=img_size)
