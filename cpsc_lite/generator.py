"""The conditional generator G(z, y) of CPSC-DFKD (book chapter 3).

The class label enters through *class-conditional batch norm* (CCBN), the
paper's "categorical feature embedding": a BatchNorm without its own affine
parameters, followed by a per-sample scale and shift looked up from two
embedding tables indexed by the label (de Vries et al. 2017). Running
statistics are shared by all classes; only the scale and shift are per class.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class ClassConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose affine scale (gamma) and shift (beta) are looked up per class."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        return self.gamma(y)[:, :, None, None] * out + self.beta(y)[:, :, None, None]


def stage_sizes(img_size: int) -> list[int]:
    """Spatial size after each stage: a seed map of ``img_size / 4``, doubled twice.

    Two upsampling stages at every size, as in the authors' code: 8 -> 16 -> 32 for 32x32 and
    16 -> 32 -> 64 for 64x64 (their Tiny-ImageNet generator, about 8.8M parameters at ngf=64).
    Sizes that are not multiples of four round up on the way and land exactly on ``img_size``
    at the end (28: 7 -> 14 -> 28; 10: 3 -> 5 -> 10).
    """
    if not 4 <= img_size <= 128:
        raise ValueError(f"image size {img_size} is outside the supported 4..128")
    return [math.ceil(img_size / 2 ** (2 - k)) for k in range(3)]


class ConditionalGenerator(nn.Module):
    """G(z, y): noise ``z ~ N(0, I)`` of size ``nz`` and a label ``y`` -> an image.

    Layout (paper and authors' code, for 32x32): Linear -> reshape to 2*ngf x 8 x 8 -> CCBN ->
    [Upsample x2 -> Conv3x3 -> CCBN -> LeakyReLU(0.2)] per stage -> Conv3x3 to
    ``channels`` -> Tanh -> CCBN(channels). The last CCBN leaves images in the
    teacher's normalised input space.

    ``conditional=False`` gives the unconditional ablation: every sample uses
    one shared scale/shift row, so ``y`` has no effect.
    """

    def __init__(
        self,
        num_classes: int,
        img_size: int,
        channels: int,
        nz: int = 256,
        ngf: int = 64,
        conditional: bool = True,
    ):
        super().__init__()
        self.num_classes, self.img_size, self.channels = num_classes, img_size, channels
        self.nz, self.ngf, self.conditional = nz, ngf, conditional
        n_embed = num_classes if conditional else 1
        sizes = stage_sizes(img_size)
        self.sizes = sizes
        width = 2 * ngf
        self.fc = nn.Linear(nz, width * sizes[0] ** 2)
        self.bn0 = ClassConditionalBatchNorm2d(width, n_embed)
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        cin = width
        for k, size in enumerate(sizes[1:]):
            cout = ngf if k == len(sizes) - 2 else width  # last stage narrows to ngf
            self.ups.append(nn.Upsample(size=(size, size), mode="nearest"))
            self.convs.append(nn.Conv2d(cin, cout, 3, padding=1, bias=False))
            self.bns.append(ClassConditionalBatchNorm2d(cout, n_embed))
            cin = cout
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.to_image = nn.Conv2d(cin, channels, 3, padding=1)
        self.bn_out = ClassConditionalBatchNorm2d(channels, n_embed)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.conditional:
            y = torch.zeros_like(y)
        s0 = self.sizes[0]
        h = self.fc(z).view(z.shape[0], -1, s0, s0)
        h = self.bn0(h, y)
        for up, conv, bn in zip(self.ups, self.convs, self.bns):
            h = self.act(bn(conv(up(h)), y))
        return self.bn_out(torch.tanh(self.to_image(h)), y)

    def sample_inputs(
        self, batch_size: int, device=None, labels: torch.Tensor | None = None
    ):
        """Fresh noise and uniformly drawn labels (or the given labels) for one batch."""
        z = torch.randn(batch_size, self.nz, device=device)
        if labels is None:
            labels = torch.randint(0, self.num_classes, (batch_size,), device=device)
        return z, labels

    def config(self) -> dict:
        """Plain-data constructor arguments, stored in checkpoints."""
        return dict(
            num_classes=self.num_classes,
            img_size=self.img_size,
            channels=self.channels,
            nz=self.nz,
            ngf=self.ngf,
            conditional=self.conditional,
        )


@torch.no_grad()
def generate_per_class(
    generator,
    per_class: int,
    device=None,
    z: Optional[torch.Tensor] = None,
    seed: Optional[int] = 0,
    batch_size: Optional[int] = None,
    truncation: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images for every class, class-major: returns ``(images, labels)``.

    The generator runs in eval mode (running BN statistics), so the images of a
    class do not depend on what else is in the batch; ``batch_size`` generates them
    in chunks of that size (same images, less memory). ``seed`` fixes the noise
    without touching the global random state.

    ``truncation`` (psi in [0, 1]) scales the noise towards its mean, as the truncation trick
    of BigGAN (Brock et al., 2019) and StyleGAN trades variety for typical samples: 1 draws
    what the student is trained on, 0 gives one image per class (the class's centre). It only
    changes what is drawn here, never training.
    """
    if not 0.0 <= truncation <= 1.0:
        raise ValueError(
            f"truncation must lie in [0, 1] (1: the noise the generator was trained on, 0: one "
            f"image per class), not {truncation}"
        )
    device = device or next(generator.parameters()).device
    k = generator.num_classes
    labels = torch.arange(k, device=device).repeat_interleave(per_class)
    if z is None:
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(k * per_class, generator.nz, generator=g).to(device)
    z = z * truncation
    was_training = generator.training
    generator.eval()
    step = batch_size or len(labels)
    images = torch.cat(
        [
            generator(z[i : i + step], labels[i : i + step])
            for i in range(0, len(labels), step)
        ]
    )
    generator.train(was_training)
    return images, labels


def load_generator(path: str) -> tuple[ConditionalGenerator, dict]:
    """``(generator in eval mode, its metadata)`` from a generator.pt written by a run (book chapters 6-7,
    ``cpsc-lite sample``); read with ``weights_only=True`` like every checkpoint."""
    from . import checkpoint

    obj = checkpoint.load(path, kind="generator", what="generator checkpoint")
    generator = ConditionalGenerator(**obj["meta"]["generator"])
    what = "the generator its metadata describes"
    checkpoint.load_weights(generator, obj["state_dict"], path, what)
    return generator.eval(), obj["meta"]


@torch.no_grad()
def estimate_bn_statistics(
    gen: ConditionalGenerator, batch_size: int, batches: int = 10
) -> ConditionalGenerator:
    """Set ``gen``'s BN running statistics to their average over ``batches`` batches of its own
    samples (weights unchanged) and return it in eval mode: what an untrained generator draws in
    training mode, where the initial statistics (mean 0, variance 1) would give flat images."""
    norms = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    gen.train()
    for _ in range(batches):
        gen(*gen.sample_inputs(batch_size))
    for m in norms:
        m.momentum = 0.1
    return gen.eval()
