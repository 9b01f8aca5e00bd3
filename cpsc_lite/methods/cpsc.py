"""CPSC-DFKD (Shao, Zhang and Wang, Pattern Recognition 2023; book chapters 3-6).

A conditional generator G(z, y) makes a batch x for labels y; with t = T(x), s = S(x):

    generator:  L_G = -KL(t, s) - alpha * IKD(sg(t), s) + beta * L_BN + gamma * L_SCL(t, s; y) + eta * CE(t, y)
    student:    L_S =  KL(t, s) + alpha * IKD(t, s) + eta_student * CE(s, y)

:func:`generator_loss` and :func:`student_loss` are these two objectives, one term per line;
:class:`CPSC` runs them (and its presets: the ablations, the paper's weights, the authors' code).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..config import Objective
from ..losses import ikd_loss, kl_divergence, pseudo_ce, supcon_loss
from .base import GeneratorMethod


def contrast(t_feat, s_feat, labels, temperature: float) -> torch.Tensor:
    """L_SCL: SupCon over the teacher's and the student's L2-normalised view of each image (chapter 5).
    ``s_feat`` must already have the teacher's feature size (the run's projection does that)."""
    views = torch.stack([F.normalize(t_feat, dim=1), F.normalize(s_feat, dim=1)], 1)
    return supcon_loss(views, labels, temperature)


def generator_loss(
    t_logits, s_logits, labels, w: Objective, *, t_feat=None, s_feat=None, bn=None,
    adversarial=True, ce_on_softmax=False,
):  # fmt: skip
    """L_G for one batch x = G(z, y) (paper Sec. 3; book chapter 6); returns the total and its terms.
    ``bn`` is the BN prior already reduced over the teacher's layers, ``s_feat`` the student's
    features projected to the teacher's size; ``adversarial=False`` drops the first two terms."""
    terms, loss = {}, t_logits.new_zeros(())
    if adversarial and w.adv:
        terms["adv_kd"] = kl_divergence(t_logits, s_logits)
        loss = loss - w.adv * terms["adv_kd"]
        if (
            w.alpha
        ):  # the teacher's logits detached: G moves S towards errors, not T's scale
            terms["adv_ikd"] = ikd_loss(t_logits.detach(), s_logits)
            ikd = torch.log(terms["adv_ikd"] + 1e-8) if w.ikd_log else terms["adv_ikd"]
            loss = loss - w.alpha * ikd
    if w.beta:
        terms["bn"] = bn
        loss = loss + w.beta * bn
    if w.gamma:
        terms["scl"] = contrast(t_feat, s_feat, labels, w.temperature)
        loss = loss + w.gamma * terms["scl"]
    if w.eta:
        terms["ce_teacher"] = pseudo_ce(t_logits, labels, ce_on_softmax)
        loss = loss + w.eta * terms["ce_teacher"]
    terms["total"] = loss
    return loss, terms


def student_loss(
    t_logits, s_logits, w: Objective, *, labels=None, t_feat=None, s_feat=None,
    ce_on_softmax=False,
):  # fmt: skip
    """L_S for one batch (paper Sec. 3; book chapter 6); returns the total and its terms. The CE
    and contrast terms need the pseudo ``labels``; IKD is MSE(s, t), or with ``ikd_student_log``
    log ||t - s||_2 over the whole logit matrix (the authors' CIFAR-10 form)."""
    terms = {"kd": kl_divergence(t_logits, s_logits)}
    loss = terms["kd"]
    if w.alpha and w.ikd_student_log:
        terms["ikd"] = torch.log(torch.norm(t_logits - s_logits, 2) + 1e-8)
    elif w.alpha:
        terms["ikd"] = ikd_loss(t_logits, s_logits)
    if w.alpha:
        loss = loss + w.alpha * terms["ikd"]
    if labels is not None and w.eta_student:
        terms["ce_student"] = pseudo_ce(s_logits, labels, ce_on_softmax)
        loss = loss + w.eta_student * terms["ce_student"]
    if labels is not None and w.gamma_student:
        terms["scl_student"] = contrast(t_feat, s_feat, labels, w.temperature)
        loss = loss + w.gamma_student * terms["scl_student"]
    terms["total"] = loss
    return loss, terms


def mode_seeking(images, noise, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019), an optional extra against a class collapsing to
    one image: ``images`` and ``noise`` hold two halves whose rows share labels; the term is
    ``1 / (d_x / d_z + eps)`` with d the mean absolute difference of the paired rows."""
    h = len(images) // 2
    d_x = (images[:h] - images[h : 2 * h]).abs().mean()
    d_z = (noise[:h] - noise[h : 2 * h]).abs().mean()
    return 1.0 / (d_x / d_z + eps)


def authors_ikd_forms(w: Objective, dataset) -> Objective:
    """The authors' code uses -log MSE / log ||t - s||_2 on CIFAR-10 only and plain -MSE / MSE on
    every other data set (``authors.ikd_authors_form``): ``w`` with those two forms set so."""
    cifar10 = (dataset or "").lower() in ("cifar10", "cifar-10")
    return dataclasses.replace(w, ikd_log=cifar10, ikd_student_log=cifar10)


class CPSC(GeneratorMethod):
    """CPSC-DFKD: a conditional generator trained with :func:`generator_loss`; the student learns
    with :func:`student_loss` from fresh batches. Optional extras: the image priors, MSGAN's
    diversity term, replay."""

    family = "cpsc"
    sections = ("generator", "objective", "authors")

    def __init__(self, run):
        super().__init__(run)
        self.weights = self.cfg.objective
        if self.cfg.authors.ikd_authors_form:
            self.weights = authors_ikd_forms(
                self.weights, run.teacher_meta.get("dataset")
            )

    @classmethod
    def uses_bn_prior(cls, cfg) -> bool:
        return cfg.objective.beta > 0

    def trains(self) -> bool:
        w = self.weights
        return bool(w.adv or w.beta or w.gamma or w.eta)

    def needs_student(self) -> bool:
        return bool(self.weights.adv or self.weights.gamma)

    def generator_inputs(self):
        z, y = super().generator_inputs()
        if (
            self.weights.diversity
        ):  # mode seeking compares two images of one label: pair the halves
            h = len(y) // 2
            y = torch.cat([y[:h], y[:h], y[2 * h :]])
        return z, y

    def generator_objective(self, batch: dict):
        w, run = self.weights, self.run
        t_logits = batch["t_logits"]
        return generator_loss(
            t_logits,
            batch["s_logits"],
            self.pseudo_labels(batch["labels"], t_logits),
            w,
            t_feat=batch["t_feat"],
            s_feat=run.projection(batch["s_feat"]) if w.gamma else None,
            bn=run.bn_prior() if w.beta else None,
            adversarial=self.adversarial_on(),
            ce_on_softmax=self.cfg.authors.ce_on_softmax,
        )

    def extra_terms(self, loss, terms: dict, batch: dict):
        if self.weights.diversity:
            terms["diversity"] = mode_seeking(batch["images"].float(), batch["noise"])
            loss = loss + self.weights.diversity * terms["diversity"]
        return loss

    def before_generator_update(self) -> None:
        if (
            self.cfg.authors.generator_adam_reset
        ):  # the authors build a new Adam every step
            opt = self.run.opt_g
            opt.state.clear()
            for group in opt.param_groups:
                group["lr"] = self.cfg.optim.lr_generator

    def student_objective(self, t_logits, s_logits, labels, t_feat, s_feat):
        w = self.weights
        return student_loss(
            t_logits,
            s_logits,
            w,
            labels=None if labels is None else self.pseudo_labels(labels, t_logits),
            t_feat=t_feat,
            s_feat=self.run.projection(s_feat) if w.gamma_student else s_feat,
            ce_on_softmax=self.cfg.authors.ce_on_softmax,
        )


_PAPER = dict(
    alpha=5.0,
    gamma=0.7,
    eta=0.7,
    eta_student=0.7,
    adv_warmup=0.0,
    lr_generator=1e-3,
    bn_reduce="sum",
    warmup_frac=1 / 60,  # ten epochs of the paper's 600
)

#: Method name -> how its settings differ from the defaults (which are CPSC-DFKD's quick profile).
PRESETS: dict[str, dict] = {
    "cpsc": {},
    # a conditional generator trained with the BN prior and CE only (no adversary, no contrast)
    "bn_ce": dict(adv=0.0, alpha=0.0, gamma=0.0, eta_student=0.0),
    # ablations: one idea removed at a time
    "cpsc_no_cond": dict(conditional=False),
    "cpsc_no_ce": dict(eta=0.0, eta_student=0.0),
    "cpsc_no_scl": dict(gamma=0.0, gamma_student=0.0),
    "cpsc_no_bn": dict(beta=0.0),
    "cpsc_no_ikd": dict(alpha=0.0),
    # the paper's weights, which the quick profile changes for short runs
    "cpsc_paper": _PAPER,
    # what the authors' published code does: the paper's weights plus every quirk of that code
    "reference_compat": dict(
        _PAPER,
        ce_on_softmax=True,
        generator_adam_reset=True,
        ikd_authors_form=True,
        report_best=True,
    ),
}
HELP: dict[str, str] = {
    "cpsc": "CPSC-DFKD: conditional generator, pseudo-supervised CE, teacher/student contrast, "
    "BN prior, KL+IKD",
    "bn_ce": "conditional generator trained with the BN prior and teacher CE only (no adversary, "
    "no contrast)",
    "cpsc_no_cond": "ablation: unconditional generator (pseudo labels = teacher's argmax)",
    "cpsc_no_ce": "ablation: no pseudo-supervised CE",
    "cpsc_no_scl": "ablation: no teacher/student contrast",
    "cpsc_no_bn": "ablation: no BN-statistics prior",
    "cpsc_no_ikd": "ablation: no IKD logit term",
    "cpsc_paper": "CPSC-DFKD as in the paper: IKD weight 5, contrast weight 0.7, student CE on, "
    "adversarial from the start, generator lr 1e-3, BN prior summed over layers, student warm-up 1/60",
    "reference_compat": "CPSC-DFKD as the authors' published code runs it: paper weights, CE on "
    "softmax outputs, a generator Adam re-created every step, their IKD form, best accuracy reported",
}
FAMILY = {name: CPSC for name in PRESETS}
