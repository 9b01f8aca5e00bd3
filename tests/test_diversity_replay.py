"""The two levers added in 0.7.0 for class-specific *and* varied samples: MSGAN's mode-seeking term
(``diversity``) and the student's replay of earlier images (``replay``); and the BN prior's first-layer
weight in the generator step (``bn_first_weight``)."""

import pytest
import torch

from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.distill import Distiller
from cpsc_lite.losses import BNStatsLoss
from cpsc_lite.methods.cpsc import mode_seeking
from cpsc_lite.runner import run_distill
from cpsc_lite.teacher import load_classifier

from conftest import TINY, saved_0_11

T = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
Y = torch.tensor([0, 0])


def test_mode_seeking_by_hand():
    images = torch.tensor(
        [[[[0.0, 1.0]]], [[[2.0, 4.0]]]]
    )  # two 1x1x2 images, one pair
    noise = torch.tensor([[0.0, 0.0, 1.0], [1.0, 2.0, 1.0]])
    # d_x = (2 + 3) / 2, d_z = (1 + 2 + 0) / 3
    assert mode_seeking(images, noise).item() == pytest.approx(1 / (2.5 / 1.0 + 1e-5))
    # the same image for two noise vectors: the largest value (collapse is penalised)
    same = torch.zeros(2, 1, 1, 2)
    assert mode_seeking(same, noise).item() == pytest.approx(1e5)


def test_diversity_is_its_own_weighted_term():
    images = torch.randn(4, 1, 2, 2, requires_grad=True)
    noise = torch.randn(4, 3)
    from cpsc_lite.methods.cpsc import CPSC

    batch = dict(images=images, noise=noise)
    for weight in (0.3, 0.0):

        class Weights:  # the part of the method the extra term reads
            weights = make_config("cpsc", diversity=weight).objective

        terms = {}
        total = CPSC.extra_terms(Weights(), torch.zeros(()), terms, batch)
        if weight:
            assert set(terms) == {"diversity"}
            expected = 0.3 * mode_seeking(images, noise).item()
            assert total.item() == pytest.approx(expected)
            total.backward()
            assert images.grad.abs().sum() > 0  # the term trains the generator
        else:
            assert not terms and total.item() == 0.0


def test_generator_step_pairs_labels_for_the_diversity_term(
    digits_teacher, monkeypatch
):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", diversity=0.5, **TINY))
    seen = {}
    real_forward = d.generator.forward

    def spy(z, y):
        seen["y"] = y.clone()
        return real_forward(z, y)

    monkeypatch.setattr(d.generator, "forward", spy)
    d._generator_train = d._generator_net = d.generator
    terms = d.method.generator_step()
    h = len(seen["y"]) // 2
    assert torch.equal(seen["y"][:h], seen["y"][h : 2 * h])
    assert "diversity" in terms and torch.isfinite(terms["diversity"])
    d.close()


def test_generator_step_weights_the_first_bn_layer(digits_teacher, monkeypatch):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", bn_first_weight=7.0, **TINY))
    calls = []
    real_loss = BNStatsLoss.loss

    def spy(self, reduce="sum", first_weight=1.0):
        calls.append((reduce, first_weight))
        return real_loss(self, reduce, first_weight)

    monkeypatch.setattr(BNStatsLoss, "loss", spy)
    d.method.generator_step()
    assert calls == [("mean", 7.0)]
    d.close()


def test_replay_mixes_old_and_fresh_images(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    cfg = make_config("cpsc", replay=0.75, replay_batches=2, **TINY)  # batch 16
    d = Distiller(teacher, meta, cfg)
    x, y = d.student_inputs(16)  # empty pool: all fresh
    assert x.shape[0] == 16 and d.method.replay_pool.size == 16
    x2, y2 = d.student_inputs(16)  # 4 fresh + 12 from the pool
    assert x2.shape == x.shape and len(y2) == 16
    pool_images = d.method.replay_pool.images[:16]
    old = x2[4:]
    assert all(any(torch.equal(o, p) for p in pool_images) for o in old)
    assert d.method.replay_pool.size == 20  # the 4 fresh ones joined it
    for _ in range(5):
        d.student_inputs(16)
    assert d.method.replay_pool.size == 32  # capacity: replay_batches x batch
    d.close()


def test_replay_is_off_by_default_and_for_inputs_without_a_generator(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    for method in ("cpsc", "noise", "deepinv"):
        d = Distiller(teacher, meta, make_config(method, **TINY))
        assert getattr(d.method, "replay_pool", None) is None
        d.close()
    d = Distiller(teacher, meta, make_config("noise", replay=0.5, **TINY))
    assert getattr(d.method, "replay_pool", None) is None
    d.close()


def test_resume_with_replay_and_diversity_is_exact(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config(
        "cpsc",
        **dict(TINY, iters=6, eval_every=3, ckpt_every=3),
        replay=0.5,
        replay_batches=3,
        diversity=0.3,
    )
    full = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "full"), progress=False
    )
    run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), stop_after=3, progress=False
    )
    resumed = run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "cut"), resume=True, progress=False
    )
    assert resumed["student_acc"] == full["student_acc"]
    a = torch.load(tmp_path / "full" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_settings_added_in_0_7_keep_old_runs_as_they_were():
    from cpsc_lite.config import DistillConfig

    old = saved_0_11("cpsc")
    for key in ("diversity", "replay", "replay_batches"):
        old.pop(key)
    cfg = DistillConfig.from_saved(old)
    assert cfg.objective.diversity == 0.0 and cfg.generator.replay == 0.0
