"""The two objectives L_G and L_S as pure functions, checked term by term against hand-computed values,
the IKD stop-gradient in the generator step, and each quirk of the `reference_compat` preset."""

import math

import pytest
import torch
import torch.nn.functional as F

from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.distill import Distiller
from cpsc_lite.methods.adversarial import l1_distance
from cpsc_lite.methods.base import add_image_priors, augment_views
from cpsc_lite.methods.cpsc import authors_ikd_forms, generator_loss, student_loss
from cpsc_lite.teacher import load_teacher

# teacher logits, 2 samples x 3 classes
T = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
S = torch.tensor([[1.0, 0.5, -0.5], [0.0, 1.0, 0.5]])  # student logits
Y = torch.tensor([0, 1])
FT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher features
# student features (already the teacher's size)
FS = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
BN = torch.tensor(0.75)
IMG = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]]).repeat(2, 1, 1, 1)


def _kl(t, s):
    p, q = t.softmax(1), s.softmax(1)
    return float((p * (p.log() - q.log())).sum(1).mean())


def _mse(t, s):
    return float(((t - s) ** 2).mean())


def _ce(logits, y):
    return float(-logits.log_softmax(1)[torch.arange(len(y)), y].mean())


def _supcon(ft, fs, y, tau):
    """SupCon over 2B anchors by explicit loops."""
    views = [F.normalize(ft, dim=1), F.normalize(fs, dim=1)]
    vecs = [(views[v][i], int(y[i])) for v in range(2) for i in range(len(y))]
    total, n = 0.0, 0
    for a, (fa, ya) in enumerate(vecs):
        denom = sum(
            math.exp(float(fa @ fb) / tau) for b, (fb, _) in enumerate(vecs) if b != a
        )
        pos = [
            math.log(math.exp(float(fa @ fb) / tau) / denom)
            for b, (fb, yb) in enumerate(vecs)
            if b != a and yb == ya
        ]
        if pos:
            total += -sum(pos) / len(pos)
            n += 1
    return total / n


def _args(**kw):
    return dict(t_feat=FT, s_feat=FS, bn=BN, **kw)


def _w(method="cpsc", **settings):
    """The objective's weights of ``method`` with ``settings``."""
    return make_config(method, **settings).objective


def test_generator_loss_all_terms_by_hand():
    w = _w(alpha=2.0, beta=0.5, gamma=0.3, eta=0.7, ikd_log=False)
    total, terms = generator_loss(T, S, Y, w, **_args())
    kl, mse, ce, scl = _kl(T, S), _mse(T, S), _ce(T, Y), _supcon(FT, FS, Y, 0.07)
    assert terms["adv_kd"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["adv_ikd"].item() == pytest.approx(mse, rel=1e-5)
    assert terms["bn"].item() == pytest.approx(0.75)
    assert terms["scl"].item() == pytest.approx(scl, rel=1e-5)
    assert terms["ce_teacher"].item() == pytest.approx(ce, rel=1e-5)
    assert total.item() == pytest.approx(
        -kl - 2.0 * mse + 0.5 * 0.75 + 0.3 * scl + 0.7 * ce, rel=1e-5
    )
    assert terms["total"] is total


def test_generator_loss_log_ikd_and_warmup():
    w = _w(alpha=2.0, ikd_log=True, beta=0, gamma=0, eta=0)
    total, terms = generator_loss(T, S, Y, w)
    assert total.item() == pytest.approx(
        -_kl(T, S) - 2.0 * math.log(_mse(T, S) + 1e-8), rel=1e-5
    )
    # the warm-up: no adversary
    total, terms = generator_loss(T, S, Y, w, adversarial=False)
    assert set(terms) == {"total"} and total.item() == 0.0


@pytest.mark.parametrize(
    "weight,term",
    [
        ("adv", "adv_kd"),
        ("alpha", "adv_ikd"),
        ("beta", "bn"),
        ("gamma", "scl"),
        ("eta", "ce_teacher"),
    ],
)
def test_a_weight_of_zero_removes_exactly_its_term(weight, term):
    on = _w(ikd_log=False)
    off = _w(ikd_log=False, **{weight: 0.0})
    total_on, terms_on = generator_loss(T, S, Y, on, **_args())
    total_off, terms_off = generator_loss(T, S, Y, off, **_args())
    assert term in terms_on and term not in terms_off
    removed = set(terms_on) - set(terms_off) - {"total"}
    assert removed == ({"adv_kd", "adv_ikd"} if weight == "adv" else {term})
    weights = dict(
        adv_kd=-on.adv, adv_ikd=-on.alpha, bn=on.beta, scl=on.gamma, ce_teacher=on.eta
    )
    diff = sum(weights[k] * terms_on[k].item() for k in removed)
    assert (total_on - total_off).item() == pytest.approx(diff, rel=1e-5, abs=1e-6)


def test_legacy_switches_are_weights_of_zero():
    """``use_scl=false`` and friends, from older YAML files and ``--set``, turn the term's weight to 0."""
    old = make_config("cpsc", use_adv=False, use_ikd=False, use_bn=False, use_scl=False)
    w = old.objective
    assert (w.adv, w.alpha, w.beta, w.gamma) == (0, 0, 0, 0) and w.eta == 1.0
    assert make_config("cpsc", teacher_ce=False).objective.eta == 0
    assert make_config("cpsc_paper", student_ce=False).objective.eta_student == 0


def test_generator_image_priors_by_hand():
    w = _w(prior_tv=2.0, prior_l2=0.5)
    terms = {}
    total = add_image_priors(torch.zeros(()), terms, IMG, w)
    tv = (abs(2 - 0) + abs(4 - 1)) / 2 + (
        abs(1 - 0) + abs(4 - 2)
    ) / 2  # vertical + horizontal means
    l2 = (0 + 1 + 4 + 16) / 4
    assert terms["prior_tv"].item() == pytest.approx(tv)
    assert terms["prior_l2"].item() == pytest.approx(l2)
    assert total.item() == pytest.approx(2.0 * tv + 0.5 * l2)


def test_student_loss_by_hand_and_switches():
    w = _w(alpha=3.0, eta_student=0.4)
    total, terms = student_loss(T, S, w, labels=Y)
    assert total.item() == pytest.approx(
        _kl(T, S) + 3.0 * _mse(T, S) + 0.4 * _ce(S, Y), rel=1e-5
    )
    # noise / real data: no pseudo labels
    total, terms = student_loss(T, S, w, labels=None)
    assert set(terms) == {"kd", "ikd", "total"}
    total, terms = student_loss(T, S, _w(alpha=0, eta_student=0), labels=Y)
    assert set(terms) == {"kd", "total"} and total.item() == pytest.approx(
        _kl(T, S), rel=1e-5
    )
    # the student's CE does not depend on the generator's: two independent weights
    _, terms = student_loss(T, S, _w(eta=0, eta_student=1.0), labels=Y)
    assert terms["ce_student"].item() == pytest.approx(_ce(S, Y), rel=1e-5)
    total, terms = student_loss(
        T, S, _w(gamma_student=0.5), labels=Y, t_feat=FT, s_feat=FS
    )
    assert terms["scl_student"].item() == pytest.approx(
        _supcon(FT, FS, Y, 0.07), rel=1e-5
    )
    # DFAD's distance
    assert l1_distance(T, S).item() == pytest.approx(float((T - S).abs().mean()))


def test_student_log_norm_ikd_is_the_authors_cifar10_form():
    _, terms = student_loss(T, S, _w(alpha=1.0, ikd_student_log=True))
    assert terms["ikd"].item() == pytest.approx(
        math.log(float(torch.norm(T - S, 2))), rel=1e-5
    )


def test_generator_ikd_does_not_backpropagate_through_the_teacher():
    t = T.clone().requires_grad_(True)
    s = S.clone().requires_grad_(True)
    w = _w(beta=0, gamma=0, eta=0, ikd_log=False, alpha=1.0)
    loss, terms = generator_loss(t, s, Y, w)
    (grad_t_total,) = torch.autograd.grad(loss, t, retain_graph=True)
    (grad_t_kl,) = torch.autograd.grad(-terms["adv_kd"], t, retain_graph=True)
    # IKD adds nothing to the teacher's side
    assert torch.allclose(grad_t_total, grad_t_kl)
    (grad_s,) = torch.autograd.grad(terms["adv_ikd"], s)
    assert grad_s.abs().sum() > 0  # but it does reach the student's logits


def test_generator_step_ikd_gradient_ignores_the_teacher_logits(digits_teacher):
    """On real networks, IKD's gradient on the image is the one through the student alone."""
    bundle = load_dataset("digits")
    teacher, meta = load_teacher(digits_teacher, bundle)
    cfg = make_config(
        "cpsc",
        iters=4,
        batch_size=16,
        ngf=8,
        nz=16,
        adv_warmup=0.0,
        beta=0,
        gamma=0,
        eta=0,
        ikd_log=False,
    )
    d = Distiller(teacher, meta, cfg)
    x = d.generator(*d.generator.sample_inputs(16)).detach().requires_grad_(True)
    t_logits = d.teacher(x)
    s_logits = d.student(x)
    labels = torch.zeros(16, dtype=torch.long)
    loss, terms = generator_loss(t_logits, s_logits, labels, cfg.objective)
    (g_ikd,) = torch.autograd.grad(terms["adv_ikd"], x, retain_graph=True)
    (g_via_student,) = torch.autograd.grad(F.mse_loss(s_logits, t_logits.detach()), x)
    assert torch.allclose(g_ikd, g_via_student)


def test_ce_on_softmax_is_the_double_softmax():
    w = _w(adv=0, beta=0, gamma=0, eta=1.0)
    total, terms = generator_loss(T, S, Y, w, ce_on_softmax=True)
    assert terms["ce_teacher"].item() == pytest.approx(_ce(T.softmax(1), Y), rel=1e-5)
    # the quirk: for 10 classes its gradient is several times flatter than CE on logits
    t = (
        3 * torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    ).requires_grad_(True)
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    (g_soft,) = torch.autograd.grad(
        generator_loss(t, None, y, w, ce_on_softmax=True)[0], t
    )
    (g_clean,) = torch.autograd.grad(generator_loss(t, None, y, w)[0], t)
    assert g_soft.norm() < 0.25 * g_clean.norm()


def test_ikd_authors_form_depends_on_the_dataset():
    cfg = make_config("reference_compat")
    assert cfg.authors.ikd_authors_form
    c10 = authors_ikd_forms(cfg.objective, "cifar10")
    other = authors_ikd_forms(cfg.objective, "digits")
    assert (c10.ikd_log, c10.ikd_student_log) == (True, True)
    assert (other.ikd_log, other.ikd_student_log) == (False, False)


def test_reference_compat_turns_on_every_quirk_and_nothing_else_is_hidden():
    ref, paper = (
        make_config("reference_compat").flat(),
        make_config("cpsc_paper").flat(),
    )
    diff = {k for k in ref if ref[k] != paper[k]} - {"method"}
    assert diff == {
        "authors.ce_on_softmax",
        "authors.generator_adam_reset",
        "authors.ikd_authors_form",
        "authors.report_best",
    }
    clean = make_config("cpsc")
    assert not (
        clean.authors.ce_on_softmax
        or clean.authors.generator_adam_reset
        or clean.authors.ikd_authors_form
        or clean.authors.report_best
    )


def test_generator_adam_reset_makes_every_step_a_sign_step(digits_teacher):
    """A fresh Adam's first step moves every weight by lr * sign(grad): the authors' re-created optimiser."""
    bundle = load_dataset("digits")
    teacher, meta = load_teacher(digits_teacher, bundle)
    lr = 1e-3
    for reset in (True, False):
        cfg = make_config(
            "cpsc",
            iters=20,
            batch_size=16,
            ngf=8,
            nz=16,
            s_steps=1,
            gamma=0,
            lr_generator=lr,
            generator_adam_reset=reset,
            generator_cosine=True,
        )
        d = Distiller(teacher, meta, cfg)
        for _ in range(8):
            d.iterate()
        before = d.generator.fc.weight.detach().clone()
        d.method.generator_step()
        step = (d.generator.fc.weight.detach() - before).abs()
        moved = step[step > 0]
        if reset:  # |step| = lr * |g| / (|g| + eps): lr up to the eps, and the LR schedule has no effect
            assert moved.numel() > 0.9 * step.numel()
            assert torch.allclose(moved.median(), torch.tensor(lr), rtol=0.05)
            assert d.opt_g.param_groups[0]["lr"] == lr
        else:
            assert moved.median() < 0.5 * lr


def test_report_best_chooses_the_reported_accuracy(tmp_path, digits_teacher):
    from cpsc_lite.runner import run_distill

    bundle = load_dataset("digits")
    small = dict(
        iters=6, batch_size=32, ngf=8, nz=16, eval_every=2, log_every=2, ckpt_every=6
    )
    for best in (False, True):
        m = run_distill(
            digits_teacher,
            bundle,
            make_config("cpsc", report_best=best, **small),
            str(tmp_path / str(best)),
            progress=False,
        )
        assert m["best_student_acc"] >= m["student_acc"]
        assert m["reported_acc"] == (
            m["best_student_acc"] if best else m["student_acc"]
        )
        assert (
            0.0 <= m["teacher_agreement"] <= 1.0
            and 0.0 <= m["pixel_recognition"] <= 1.0
        )


def test_augment_views_shift_and_flip():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(augment_views(x, 0, False), x)
    torch.manual_seed(0)
    outs = [augment_views(x, 1, True) for _ in range(20)]
    assert any(not torch.equal(o, x) for o in outs)
    # a shift (with wrap-around) and/or a mirror: the same pixels, rearranged
    for o in outs:
        assert torch.equal(o.flatten().sort().values, x.flatten())


def test_sample_npz_is_a_transfer_set_the_teacher_can_be_evaluated_on(
    tmp_path, digits_teacher, capsys
):
    import numpy as np
    from cpsc_lite.cli import main
    from cpsc_lite.runner import run_distill
    from cpsc_lite.generator import generate_per_class
    from cpsc_lite import checkpoint
    from cpsc_lite.generator import ConditionalGenerator

    bundle = load_dataset("digits")
    run = tmp_path / "run"
    run_distill(
        digits_teacher,
        bundle,
        make_config(
            "cpsc",
            iters=4,
            batch_size=32,
            ngf=8,
            nz=16,
            eval_every=4,
            log_every=2,
            ckpt_every=4,
        ),
        str(run),
        progress=False,
    )
    out = tmp_path / "transfer.npz"
    assert (
        main(
            [
                "sample",
                "--generator",
                str(run / "generator.pt"),
                "--per-class",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    arrays = np.load(out, allow_pickle=False)
    assert arrays["x_test"].dtype == np.uint8 and arrays["x_test"].shape == (60, 8, 8)
    assert arrays["y_test"].tolist() == [c for c in range(10) for _ in range(6)]
    # the pixels are the generator's images de-normalised to the teacher's data range (0..255 here)
    obj = checkpoint.load(str(run / "generator.pt"), kind="generator")
    gen = ConditionalGenerator(**obj["meta"]["generator"])
    gen.load_state_dict(obj["state_dict"])
    images, _ = generate_per_class(gen, 6, torch.device("cpu"), seed=0)
    m, s = obj["meta"]["mean"][0], obj["meta"]["std"][0]
    expected = ((images[:, 0] * s + m).clamp(0, 1) * 255).round()
    assert np.abs(arrays["x_test"].astype(float) - expected.numpy()).max() <= 1
    # npz:FILE reads it; evaluate gives the teacher's agreement with the conditioning labels
    capsys.readouterr()
    assert main(["evaluate", digits_teacher, "--dataset", f"npz:{out}"]) == 0
    assert "60 images" in capsys.readouterr().out
    assert (
        main(
            [
                "sample",
                "--generator",
                str(run / "generator.pt"),
                "--out",
                str(tmp_path / "x.txt"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("method", ["cpsc", "noise"])
def test_diagnostics_leave_every_random_stream_untouched(digits_teacher, method):
    bundle = load_dataset("digits")
    teacher, meta = load_teacher(digits_teacher, bundle)
    d = Distiller(
        teacher,
        meta,
        make_config(method, iters=2, batch_size=16, ngf=8, nz=16),
        bundle.test,
    )
    before = torch.get_rng_state()
    d.diagnostics(per_class=4)
    assert torch.equal(before, torch.get_rng_state())
    x1 = torch.randn(3)
    torch.set_rng_state(before)
    assert torch.equal(x1, torch.randn(3))
