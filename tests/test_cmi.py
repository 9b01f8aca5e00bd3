"""CMI (Fang et al. 2021) as the `cmi` method: its two loss terms by hand, the local views, the generator
reset, the persistent head and memory bank, and an exact resume."""

import math

import pytest
import torch
import torch.nn.functional as F

from cpsc_lite import checkpoint
from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.distill import Distiller
from cpsc_lite.methods.cmi import (
    agreeing_kl,
    instance_contrast,
    local_views,
    reinitialise,
)
from cpsc_lite.runner import run_distill

from conftest import saved_0_11
from cpsc_lite.generator import ConditionalGenerator
from cpsc_lite.teacher import load_classifier

T = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])
# agrees on rows 0 and 1 only
S = torch.tensor([[1.0, 0.5, -0.5], [0.0, 1.0, 0.5], [0.0, 1.0, 0.5]])


def test_agreeing_kl_by_hand():
    p, q = T.softmax(1), S.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1)
    assert agreeing_kl(T, S).item() == pytest.approx(
        float((kl[0] + kl[1]) / 3), rel=1e-5
    )


def test_instance_contrast_by_hand():
    g = torch.Generator().manual_seed(0)
    local = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    glob = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    tau = 0.2

    def ce(i):
        logits = [float(local[i] @ glob[j]) / tau for j in range(5)]
        return -(logits[i] - math.log(sum(math.exp(v) for v in logits)))

    assert instance_contrast(local, glob, tau, 5).item() == pytest.approx(
        sum(ce(i) for i in range(5)) / 5, rel=1e-5
    )
    # 3 current rows + 2 from the bank: the two means added
    expected = sum(ce(i) for i in range(3)) / 3 + sum(ce(i) for i in (3, 4)) / 2
    assert instance_contrast(local, glob, tau, 3).item() == pytest.approx(
        expected, rel=1e-5
    )
    # no gradient through the global views
    local.requires_grad_(True)
    glob.requires_grad_(True)
    instance_contrast(local, glob, tau, 5).backward()
    assert glob.grad is None and local.grad is not None


def test_local_views_crop_and_resize():
    torch.manual_seed(0)
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 3, 1, 1)
    v = local_views(x, flip=False)
    assert v.shape == x.shape
    assert not torch.equal(v, x)
    # the whole image at aspect 1 +- 1/3: close to x
    full = local_views(x, flip=False, scale=(1.0, 1.0))
    assert (full - x).abs().mean() < 8


def test_reinitialise_draws_new_weights():
    torch.manual_seed(0)
    g = ConditionalGenerator(10, 8, 1, nz=16, ngf=8, conditional=False)
    before = [p.clone() for p in g.parameters()]
    reinitialise(g)
    after = list(g.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(
        abs(float(m.weight.detach().std()) - 0.02) < 0.01
        for m in convs
        if m.weight.numel() > 200
    )


SMALL = dict(
    batch_size=16,
    ngf=8,
    nz=16,
    inversion_steps=3,
    inversion_every=2,
    cmi_negatives=8,
    eval_every=4,
    log_every=2,
    ckpt_every=3,
)


def test_cmi_iteration_fills_pool_and_bank_and_keeps_the_head(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cmi", iters=4, **SMALL))
    head_before = [p.clone() for p in d.method.head.parameters()]
    terms = d.iterate()
    assert {"g/cmi_contrast", "g/cmi_adv", "g/bn", "g/ce_teacher", "s/kd"} <= set(terms)
    assert (
        d.method.pool.size == 16
        and d.method.bank.size == 16
        and d.method.bank.images.shape[1] == 2
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(head_before, d.method.head.parameters())
    )
    d.iterate()  # inversion_every=2: no new batch
    assert d.method.pool.size == 16
    d.iterate()
    assert d.method.pool.size == 32 and d.method.bank.size == 32
    d.close()


def test_cmi_resume_is_exact(tmp_path, digits_teacher):
    bundle = load_dataset("digits")
    cfg = make_config("cmi", iters=6, **SMALL)
    run_distill(digits_teacher, bundle, cfg, str(tmp_path / "full"), progress=False)
    run_distill(
        digits_teacher,
        bundle,
        cfg,
        str(tmp_path / "part"),
        progress=False,
        stop_after=3,
    )
    run_distill(
        digits_teacher, bundle, cfg, str(tmp_path / "part"), progress=False, resume=True
    )
    a = checkpoint.load(str(tmp_path / "full" / "student.pt"), "student")["state_dict"]
    b = checkpoint.load(str(tmp_path / "part" / "student.pt"), "student")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "full" / "transfer_set.npz").exists()


def test_bn_input_means_are_the_channel_means_of_every_bn_input():
    from cpsc_lite.methods.cmi import BNInputMeans

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.BatchNorm2d(5),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    means = BNInputMeans(net)
    assert means.dim == 9
    net(x)  # not enabled: nothing recorded
    with pytest.raises(RuntimeError, match="no BN inputs"):
        means.collect()
    means.enabled = True
    net(x)
    got = means.collect()
    first = net[0](x).mean(dim=(2, 3))
    second = net[3](net[2](net[1](net[0](x)))).mean(dim=(2, 3))
    assert got.shape == (2, 9)
    assert torch.allclose(got, torch.cat([first, second], 1), atol=1e-6)
    means.remove()
    net(x)
    assert not means._means
    with pytest.raises(ValueError, match="cmi.features=penultimate"):
        BNInputMeans(torch.nn.Linear(2, 2))


def test_cmi_contrasts_cmi_own_features_and_the_old_form_stays_available(
    digits_teacher,
):
    from cpsc_lite.config import DistillConfig

    teacher, meta = load_classifier(digits_teacher)
    bn_channels = sum(
        m.num_features for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    d = Distiller(teacher, meta, make_config("cmi", iters=2, **SMALL))
    assert d.cfg.cmi.features == "bn_inputs"
    assert d.method.head[0].in_features == bn_channels
    d.iterate()
    assert d.method.bank.images.shape[1:] == (2, bn_channels)  # local and global views
    d.close()
    old = make_config("cmi:cmi_features=penultimate", iters=2, **SMALL)
    d = Distiller(teacher, meta, old)
    assert d.method.means is None and d.method.head[0].in_features != bn_channels
    d.iterate()
    d.close()
    saved = saved_0_11("cmi")
    del saved["cmi_features"]
    assert DistillConfig.from_saved(saved).cmi.features == "penultimate"  # a 0.5.0 run
