"""CIFAR-scale classifiers used by the data-free KD benchmarks: ResNet, WRN, VGG.

Importing this module registers, in :data:`cpsc_lite.registry.MODELS`:

===============  ==============================================  ===================
name             architecture                                    params, 10 classes
===============  ==============================================  ===================
``resnet18``     CIFAR ResNet-18 (BasicBlock 2-2-2-2)            11.17M
``resnet34``     CIFAR ResNet-34 (BasicBlock 3-4-6-3)            21.28M
``resnet18_64``  ``resnet18`` for 64x64 inputs (Tiny-ImageNet)   11.17M
``resnet34_64``  ``resnet34`` for 64x64 inputs (Tiny-ImageNet)   21.28M
``wrn16_1``      Wide ResNet 16-1                                0.18M
``wrn16_2``      Wide ResNet 16-2                                0.69M
``wrn40_1``      Wide ResNet 40-1                                0.56M
``wrn40_2``      Wide ResNet 40-2                                2.24M
``vgg11_bn``     CIFAR VGG-11 with batch norm, one linear layer  9.23M
===============  ==============================================  ===================

(With 100 classes the WRNs have 0.18M / 0.70M / 0.57M / 2.26M parameters.)

Checkpoint compatibility
------------------------
The CIFAR-10/100 teachers that the data-free KD community publishes with the
zju-vipa code (the CMI / DataFree / Fast-DFKD pretrained files, e.g.
``cifar10_resnet34.pth`` or ``cifar100_wrn40_2.pth``, for the model names
``resnet18``, ``resnet34``, ``wrn16_1``, ``wrn16_2``, ``wrn40_1``, ``wrn40_2``
and ``vgg11``) were saved from ``datafree/models/classifiers/resnet.py``
(CIFAR ResNet, from DAFL), ``wresnet.py`` (WRN, from ZSKT) and ``vgg.py``
(from RepDistiller). The modules below have exactly the same parameter and
buffer names, shapes and order, and the same computation, so those files load
with ``strict=True``:

* ResNet: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of BasicBlocks
  (``conv1``, ``bn1``, ``conv2``, ``bn2`` and, only where the block changes
  stride or width, ``shortcut.0`` (1x1 conv) / ``shortcut.1`` (BN)), ``linear``.
  ``layer1.0`` has an identity shortcut (no ``shortcut.*`` keys); ``layer2.0``,
  ``layer3.0`` and ``layer4.0`` have projection shortcuts.
* WRN: ``conv1``, ``block1`` .. ``block3`` each holding ``layer.N`` blocks with
  ``bn1``, ``conv1``, ``bn2``, ``conv2`` and, where the width changes,
  ``convShortcut``; then ``bn1`` and ``fc``.
* VGG: ``block0`` .. ``block4`` (Sequential of conv-with-bias, BN, ReLU, the
  last ReLU of each block dropped, so ``block2.3`` is the second conv of
  block 2), then ``classifier`` (a single ``Linear(512, K)``). The name in the
  community scripts is ``vgg11``; here it is ``vgg11_bn``.

:func:`load_community_state_dict` unwraps and loads such a file and, when it
does not fit, says which registered model it probably belongs to.

64x64 inputs (Tiny-ImageNet)
----------------------------
The CMI / DataFree code runs Tiny-ImageNet (64x64) through the *same* CIFAR
ResNet (``--teacher resnet34`` with ``--dataset tiny_imagenet``): 3x3 stride-1
stem, no max-pool, and the global average pool then sees an 8x8 map instead of
4x4. There is no stride-2 stem or extra pooling to reproduce, and adding one
would silently change what a published 64x64 teacher computes. So
``resnet18_64`` / ``resnet34_64`` are the same architecture (same keys, same
forward) as ``resnet18`` / ``resnet34``; the separate names only make the
Tiny-ImageNet setting explicit. Their VGG, by contrast, adds one max-pool
(``pool3``) for 64x64 inputs; ``vgg11_bn`` does the same (see
:class:`CifarVGG`). WRNs need nothing: global pooling absorbs the larger map.

All models take ``in_channels`` (1 for MNIST-like data: only the first conv's
weight shape changes) and work for inputs from 8x8 to 64x64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from . import CpscError
from .registry import MODELS

register_model = MODELS.register

__all__ = [
    "CifarResNet",
    "WideResNet",
    "CifarVGG",
    "load_community_state_dict",
    "guess_community_model",
]


# --------------------------------------------------------------------------- ResNet


class _ResBlock(nn.Module):
    """Post-activation basic block: two 3x3 conv-BN, projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # An empty Sequential is the identity and contributes no state-dict keys.
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stride-1 stem, no max-pool, stages 64/128/256/512.

    ``blocks`` gives the number of basic blocks per stage (2-2-2-2 is ResNet-18,
    3-4-6-3 ResNet-34). Features are the 512 globally averaged channels.
    """

    widths = (64, 128, 256, 512)

    def __init__(self, blocks: Sequence[int], num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, n) in enumerate(zip(self.widths, blocks)):
            first_stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(_ResBlock(cin, width, first_stride if j == 0 else 1))
                cin = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.linear = nn.Linear(cin, num_classes)
        self.feature_dim = cin

    def forward(self, x: torch.Tensor, return_features: bool = False):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.linear(feats)
        return (logits, feats) if return_features else logits


# ----------------------------------------------------------------------------- WRN


class _WideBlock(nn.Module):
    """Pre-activation block (BN-ReLU-conv twice); 1x1 ``convShortcut`` when the width changes.

    When the width changes, the shortcut takes the *pre-activated* input, as in
    the Zagoruyko & Komodakis code the published WRN teachers were trained with.
    """

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.equal_in_out = cin == cout
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = self.conv2(self.dropout(out))
        skip = x if self.convShortcut is None else self.convShortcut(act)
        return skip + out


class _WideStage(nn.Module):
    """A group of wide blocks; the ``layer`` attribute name is part of the checkpoint format."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                _WideBlock(
                    cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout
                )
                for i in range(n)
            ]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis): widths 16, 16k, 32k, 64k; ``(depth-4)/6`` blocks per stage.

    Features are the ``64k`` channels after the final BN-ReLU and global average pooling.
    """

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, w[0], w[1], 1, dropout)
        self.block2 = _WideStage(n, w[1], w[2], 2, dropout)
        self.block3 = _WideStage(n, w[2], w[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        self.feature_dim = w[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.fc(feats)
        return (logits, feats) if return_features else logits


# ----------------------------------------------------------------------------- VGG

_VGG_CFGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class CifarVGG(nn.Module):
    """VGG in five conv blocks (RepDistiller / CMI layout) with a single ``Linear(512, K)`` head.

    Each block is conv(bias)-BN-ReLU repeated, without its last ReLU (applied in
    ``forward``). Max-pools follow blocks 0, 1 and 2; a fourth follows block 3
    only while the map is still at least 8x8, which reproduces the reference
    exactly for 32x32 (no fourth pool, block 4 runs at 4x4) and 64x64 inputs
    (fourth pool, block 4 at 4x4). A pool is skipped once the map is 1x1, so
    8x8 inputs work. Features are the 512 globally averaged channels.
    """

    def __init__(
        self,
        cfg: Sequence[Sequence[int]],
        num_classes: int,
        in_channels: int = 3,
        batch_norm: bool = True,
    ):
        super().__init__()
        cin = in_channels
        for i, widths in enumerate(cfg):
            layers: list[nn.Module] = []
            for v in widths:
                layers.append(nn.Conv2d(cin, v, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                cin = v
            setattr(self, f"block{i}", nn.Sequential(*layers[:-1]))
        self.classifier = nn.Linear(cin, num_classes)
        self.feature_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _pool(x: torch.Tensor, min_size: int = 2) -> torch.Tensor:
        return F.max_pool2d(x, 2) if min(x.shape[-2:]) >= min_size else x

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self._pool(F.relu(self.block0(x)))
        x = self._pool(F.relu(self.block1(x)))
        x = self._pool(F.relu(self.block2(x)))
        x = self._pool(F.relu(self.block3(x)), min_size=8)
        x = F.relu(self.block4(x))
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        logits = self.classifier(feats)
        return (logits, feats) if return_features else logits


# ------------------------------------------------------------------------ registry


@register_model(
    "resnet18",
    "CIFAR ResNet-18, 3x3 stem (about 11.2M parameters); loads CMI/DataFree resnet18 files",
)
def resnet18(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return CifarResNet([2, 2, 2, 2], num_classes, in_channels)


@register_model(
    "resnet34",
    "CIFAR ResNet-34, 3x3 stem (about 21.3M parameters); loads CMI/DataFree resnet34 files",
)
def resnet34(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return CifarResNet([3, 4, 6, 3], num_classes, in_channels)


@register_model(
    "resnet18_64",
    "resnet18 for 64x64 Tiny-ImageNet as CMI/DataFree run it: same layers and "
    "weights, 8x8 final map (about 11.2M parameters)",
)
def resnet18_64(
    num_classes: int, in_channels: int = 3, img_size: int = 64
) -> nn.Module:
    return CifarResNet([2, 2, 2, 2], num_classes, in_channels)


@register_model(
    "resnet34_64",
    "resnet34 for 64x64 Tiny-ImageNet as CMI/DataFree run it: same layers and "
    "weights, 8x8 final map (about 21.3M parameters)",
)
def resnet34_64(
    num_classes: int, in_channels: int = 3, img_size: int = 64
) -> nn.Module:
    return CifarResNet([3, 4, 6, 3], num_classes, in_channels)


@register_model(
    "wrn16_1",
    "Wide ResNet 16-1 (about 0.18M parameters); loads CMI/DataFree wrn16_1 files",
)
def wrn16_1(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return WideResNet(16, 1, num_classes, in_channels)


@register_model(
    "wrn16_2",
    "Wide ResNet 16-2 (about 0.69M parameters); loads CMI/DataFree wrn16_2 files",
)
def wrn16_2(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return WideResNet(16, 2, num_classes, in_channels)


@register_model(
    "wrn40_1",
    "Wide ResNet 40-1 (about 0.56M parameters); loads CMI/DataFree wrn40_1 files",
)
def wrn40_1(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return WideResNet(40, 1, num_classes, in_channels)


@register_model(
    "wrn40_2",
    "Wide ResNet 40-2 (about 2.2M parameters); loads CMI/DataFree wrn40_2 files",
)
def wrn40_2(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return WideResNet(40, 2, num_classes, in_channels)


@register_model(
    "vgg11_bn",
    "CIFAR VGG-11 with batch norm and one linear head (about 9.2M parameters); "
    "loads CMI/DataFree vgg11 files",
)
def vgg11_bn(num_classes: int, in_channels: int = 3, img_size: int = 32) -> nn.Module:
    return CifarVGG(_VGG_CFGS["vgg11"], num_classes, in_channels)


# ------------------------------------------------------- loading community files

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        )
    )


def _unwrap(obj) -> dict:
    """Find the state dict inside what ``torch.load`` returned; strip DataParallel/compile prefixes."""
    for _ in range(4):
        if _is_state_dict(obj) or not isinstance(obj, Mapping):
            break
        inner = next(
            (obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None
        )
        if inner is None:
            break
        obj = inner
    if not _is_state_dict(obj):
        if isinstance(obj, Mapping):
            keys = ", ".join(repr(k) for k in list(obj)[:8])
            what = f"a dict with keys {keys}" if obj else "an empty dict"
        else:
            what = f"a {type(obj).__name__}"
        raise CpscError(
            f"The checkpoint holds {what}, not a state dict of tensors (looked under "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS[:2])} too). Pass the .pth file of a "
            "trained classifier, as published with CMI/DataFree."
        )
    clean = {}
    for key, value in obj.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        clean[key] = value
    return clean


def _count_indexed(sd: Mapping, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def guess_community_model(state_dict: Mapping) -> Optional[dict]:
    """Guess the architecture of a (prefix-stripped) state dict from its key names and shapes.

    Returns ``{"name", "num_classes", "in_channels", "registered"}`` or ``None``
    when the keys match none of the families in this module. Cheap: only key
    names and a few shapes are read.
    """
    sd = state_dict

    def shape(key):
        return tuple(sd[key].shape) if key in sd else None

    name = head = None
    stem = "conv1.weight"
    if "block1.layer.0.conv1.weight" in sd and "fc.weight" in sd:
        n = _count_indexed(sd, r"block1\.layer\.(\d+)\.")
        widen = shape("fc.weight")[1] // 64
        name, head = f"wrn{6 * n + 4}_{widen}", "fc.weight"
    elif "layer1.0.conv1.weight" in sd:
        counts = tuple(_count_indexed(sd, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        head = "linear.weight" if "linear.weight" in sd else "fc.weight"
        bottleneck = "layer1.0.conv3.weight" in sd
        depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34 if not bottleneck else 50}.get(
            counts
        )
        kernel = shape(stem)[-1] if shape(stem) else None
        if kernel == 7:
            name = f"an ImageNet-style resnet{depth or ''} (7x7 stem)"
        elif depth is not None:
            name = f"resnet{depth}"
    elif "block0.0.weight" in sd and "classifier.weight" in sd:
        convs = sum(
            1
            for k, v in sd.items()
            if re.match(r"block\d\.\d+\.weight$", k) and v.dim() == 4
        )
        bn = "block0.1.running_mean" in sd
        name = {5: "vgg8", 8: "vgg11", 10: "vgg13"}.get(
            convs, f"vgg ({convs} conv layers)"
        )
        name = name + ("_bn" if bn and convs in (5, 8, 10) else "")
        head, stem = "classifier.weight", "block0.0.weight"
    if name is None:
        return None
    num_classes = shape(head)[0] if shape(head) else None
    in_channels = shape(stem)[1] if shape(stem) else None
    return dict(
        name=name,
        num_classes=num_classes,
        in_channels=in_channels,
        registered=name in MODELS,
    )


def _examples(items: list, n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_community_state_dict(model: nn.Module, obj) -> None:
    """Load a published teacher (what ``torch.load(path, weights_only=True)`` returned) into ``model``.

    ``obj`` may be a bare state dict or a dict holding one under ``'state_dict'``
    or ``'model'`` (nested wrappers are followed); ``'module.'`` prefixes from
    ``DataParallel`` and ``'_orig_mod.'`` from ``torch.compile`` are stripped.
    Loading is strict: every key must exist in the model with the same shape
    (only BatchNorm's ``num_batches_tracked`` counters may be absent, as in files
    from old PyTorch versions). Otherwise a :class:`CpscError` lists missing and
    unexpected keys and shape mismatches and names the model the file fits.
    """
    sd = _unwrap(obj)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} (file {list(sd[k].shape)}, model {list(own[k].shape)})"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CpscError(_mismatch_message(model, sd, missing, unexpected, mismatched))
    for k in own:
        if k not in sd:  # only num_batches_tracked can get here
            sd[k] = own[k]
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # dtype or other surprises torch still rejects
        raise CpscError(
            f"Could not load the checkpoint: {str(exc).splitlines()[0][:300]}"
        ) from None


def _mismatch_message(
    model: nn.Module, sd: dict, missing: list, unexpected: list, mismatched: list
) -> str:
    target = getattr(model, "model_name", type(model).__name__)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_examples(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_examples(unexpected)}")
    if mismatched:
        parts.append(
            f"{len(mismatched)} shape mismatch(es): {_examples(mismatched, 3)}"
        )
    msg = f"The checkpoint does not fit model {target!r}: " + "; ".join(parts) + ". "

    guess = guess_community_model(sd)
    if guess is None:
        return msg + (
            "Its keys match none of the CIFAR families here (resnet, wrn, vgg). Pass the model name "
            "the file was trained with (--teacher-model NAME; `cpsc-lite models` lists them)."
        )
    facts = []
    if guess["num_classes"] is not None:
        facts.append(f"{guess['num_classes']} classes")
    if guess["in_channels"] is not None:
        facts.append(f"{guess['in_channels']} input channel(s)")
    looks = f"the file looks like a {guess['name']} checkpoint" + (
        f" ({', '.join(facts)})" if facts else ""
    )
    if (
        guess["name"].startswith("resnet")
        and "fc.weight" in sd
        and "linear.weight" not in sd
    ):
        # Some forks of the DataFree code renamed the CIFAR ResNet head; the layers are otherwise identical.
        return msg + (
            f"{looks[0].upper()}{looks[1:]}, but its classifier is named 'fc' where the CMI/DataFree "
            "CIFAR ResNet uses 'linear': rename the 'fc.*' keys to 'linear.*' and load it again."
        )
    if not guess["registered"]:
        return msg + (
            f"Expected parameters of {target}; {looks}, which is not a registered model "
            "(`cpsc-lite models` lists them)."
        )
    if guess["name"] == target or (
        target.startswith(guess["name"]) and target.endswith("_64")
    ):
        return msg + (
            f"The architecture is right, but {looks}: create the model with the same number of "
            "classes and input channels as the file (pick the matching dataset)."
        )
    return msg + (
        f"Expected parameters of {target}; {looks}: pass --teacher-model {guess['name']} "
        "(the model name must match the checkpoint)."
    )
