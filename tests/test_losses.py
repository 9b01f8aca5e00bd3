import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from cpsc_lite.losses import (
    BNStatsLoss,
    ikd_loss,
    kl_divergence,
    pseudo_ce,
    supcon_loss,
)


def test_kl_divergence_hand_computed():
    t = torch.tensor([[0.0, 0.0]])
    s = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> (1/4, 3/4)
    # KL((1/2, 1/2) || (1/4, 3/4)) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    assert kl_divergence(t, s).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    assert kl_divergence(s, s).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_divergence_temperature_scaling():
    t = torch.tensor([[2.0, 0.0]])
    s = torch.tensor([[0.0, 0.0]])
    # at temperature 2 the logits halve, and the result is multiplied by 4
    expected = 4 * kl_divergence(t / 2, s / 2).item()
    assert kl_divergence(t, s, temperature=2.0).item() == pytest.approx(expected)


def test_ikd_is_mean_squared_logit_difference():
    t = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    assert ikd_loss(t, s).item() == pytest.approx((0 + 4 + 1 + 1) / 4)


def test_pseudo_ce_takes_logits_not_probabilities():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert pseudo_ce(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    # The authors' double softmax would give a different (flatter) value.
    double = F.cross_entropy(F.softmax(logits, 1), torch.tensor([1])).item()
    assert abs(double - pseudo_ce(logits, torch.tensor([1])).item()) > 0.05


def test_supcon_two_orthogonal_classes_hand_computed():
    # Two samples of different classes, each with two identical views; classes orthogonal.
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    labels = torch.tensor([0, 1])
    # Every anchor: one positive (its other view, similarity 1) and two negatives (similarity 0):
    # loss = -log(e^1 / (e^1 + e^0 + e^0)) = log(e + 2) - 1 at temperature 1.
    assert supcon_loss(f, labels, temperature=1.0).item() == pytest.approx(
        math.log(math.e + 2) - 1, rel=1e-6
    )


def test_supcon_same_label_samples_are_positives():
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])
    same = supcon_loss(f, torch.tensor([0, 0]), temperature=1.0).item()
    diff = supcon_loss(f, torch.tensor([0, 1]), temperature=1.0).item()
    # All four vectors are identical: with one label each anchor has 3 positives among 3
    # candidates (log prob log(1/3) each); with two labels only 1 of the 3 is a positive.
    assert same == pytest.approx(math.log(3.0), rel=1e-6)
    assert diff == pytest.approx(math.log(3.0), rel=1e-6)
    g = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    # Pulling a dissimilar sample into the same class raises the loss.
    assert (
        supcon_loss(g, torch.tensor([0, 0]), 1.0).item()
        > supcon_loss(g, torch.tensor([0, 1]), 1.0).item()
    )


def _supcon_reference(features, labels, temperature):
    """Plain double loop over anchors, straight from the formula."""
    b, v, _ = features.shape
    vecs = [features[i, j] for j in range(v) for i in range(b)]
    labs = [int(labels[i]) for j in range(v) for i in range(b)]
    losses = []
    for a in range(len(vecs)):
        others = [o for o in range(len(vecs)) if o != a]
        denom = sum(math.exp(float(vecs[a] @ vecs[o]) / temperature) for o in others)
        pos = [p for p in others if labs[p] == labs[a]]
        if not pos:
            continue
        losses.append(
            -sum(float(vecs[a] @ vecs[p]) / temperature - math.log(denom) for p in pos)
            / len(pos)
        )
    return sum(losses) / len(losses)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_matches_reference_loop(views):
    torch.manual_seed(0)
    f = F.normalize(torch.randn(6, views, 5, dtype=torch.float64), dim=2)
    # with views=1, label 2 has no positive and is skipped
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    got = supcon_loss(f, labels, temperature=0.5).item()
    assert got == pytest.approx(_supcon_reference(f, labels, 0.5), rel=1e-9)


def test_supcon_low_temperature_is_finite_and_has_gradients():
    torch.manual_seed(1)
    f = F.normalize(torch.randn(8, 2, 16), dim=2).requires_grad_(True)
    loss = supcon_loss(f, torch.randint(0, 3, (8,)), temperature=0.07)
    loss.backward()
    assert (
        torch.isfinite(loss) and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    )


def test_supcon_rejects_flat_features():
    with pytest.raises(ValueError, match="views"):
        supcon_loss(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))


class _TwoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(1)
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.bn2(self.conv(self.bn1(x)))


def test_bn_stats_loss_hand_computed_and_hooks_removed():
    model = _TwoBN().eval()
    # bn2 sees zeros: mean 0, var 0 vs running (0, 1) -> term 1
    nn.init.constant_(model.conv.weight, 0.0)
    model.bn1.running_mean.fill_(1.0)
    model.bn1.running_var.fill_(2.0)
    x = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # mean 2, biased var 1
    with BNStatsLoss(model) as bn:
        model(x)
        # bn1: |2 - 1| + |1 - 2| = 2 ; bn2: |0 - 0| + |0 - 1| = 1
        assert bn.loss().item() == pytest.approx(3.0)
        with pytest.raises(RuntimeError):
            bn.loss()  # terms are cleared after reading
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_bn_stats_first_layer_weight():
    model = _TwoBN().eval()
    nn.init.constant_(model.conv.weight, 0.0)
    model.bn1.running_mean.fill_(1.0)
    model.bn1.running_var.fill_(2.0)
    x = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    with BNStatsLoss(model) as bn:
        model(x)
        # DeepInversion's first-BN scale
        assert bn.loss(first_weight=10.0).item() == pytest.approx(10 * 2.0 + 1.0)
        model(x)
        assert bn.loss("mean", first_weight=10.0).item() == pytest.approx(
            (10 * 2.0 + 1.0) / 2
        )


def test_competition_is_one_minus_clamped_js_by_hand():
    from cpsc_lite.methods.inversion import competition

    t = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    s = torch.tensor([[-1.0, 0.5, 2.0], [1.0, 0.0, 0.0]])
    p, q = torch.softmax(s / 3, 1), torch.softmax(t / 3, 1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    kl = lambda a, b: (b * (b.log() - a.log())).sum(1).mean()  # noqa: E731  KL(b || a), batch mean
    expected = 1 - (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp(0, 1)
    assert competition(t, s).item() == pytest.approx(expected.item(), rel=1e-6)
    # agreement is what the term penalises
    assert competition(t, t).item() == pytest.approx(1.0)
    assert competition(t, s).item() < 1.0


def test_bn_stats_loss_disabled_records_nothing():
    model = _TwoBN().eval()
    bn = BNStatsLoss(model)
    bn.enabled = False
    model(torch.randn(4, 1, 2, 2))
    with pytest.raises(RuntimeError):
        bn.loss()
    bn.remove()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_bn_stats_loss_needs_bn_layers():
    with pytest.raises(ValueError, match="BatchNorm"):
        BNStatsLoss(nn.Linear(2, 2))
