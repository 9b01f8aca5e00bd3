"""cpsc_lite.utils: the warm-up cosine schedule, batch augmentation, evaluation."""

import math

import pytest
import torch
from torch import nn

from cpsc_lite.data import ArrayDataset
from cpsc_lite.utils import augment_batch, evaluate, warmup_cosine


def test_warmup_cosine_by_hand():
    total, warmup = 10, 2
    # linear warm-up, ends at 1
    assert [warmup_cosine(s, total, warmup) for s in range(2)] == [
        0.5,
        1.0,
    ]
    assert warmup_cosine(2, total, warmup) == 1.0  # cosine starts at its top
    assert warmup_cosine(6, total, warmup) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 4 / 8))
    )
    assert warmup_cosine(10, total, warmup) == pytest.approx(0.0, abs=1e-12)
    # past the end: stays at 0
    assert warmup_cosine(50, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0, 4, 0) == 1.0


def test_augment_batch_shifts_with_zero_padding_and_keeps_shape():
    torch.manual_seed(0)
    # no zeros inside
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = augment_batch(x, pad=1, flip=False)
    assert out.shape == x.shape
    # each image is its original moved by (dy, dx) in {-1, 0, 1}^2, zeros shifted in
    for i in range(2):
        padded = nn.functional.pad(x[i], (1, 1, 1, 1))
        crops = [
            padded[:, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)
        ]
        assert any(torch.equal(out[i], c) for c in crops)
    assert torch.equal(augment_batch(x, pad=0, flip=False), x)


def test_augment_batch_flips_about_half_the_images():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 4, 4)
    out = augment_batch(x, pad=0, flip=True)
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250


def test_evaluate_counts_correct_predictions_and_restores_the_mode():
    images = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1, 1, 0])
    data = ArrayDataset(images, labels, [0.0], [1.0])

    class Always1(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)

    model = Always1().train()
    assert evaluate(model, data, torch.device("cpu"), batch_size=2) == pytest.approx(
        3 / 5
    )
    assert model.training
