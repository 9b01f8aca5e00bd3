"""Generator-based baselines without class conditioning (book chapter 7).

* DFAD (Fang et al. 2019): an unconditional generator maximises the mean absolute difference of
  the teacher's and the student's logits; the student minimises it, and steps first.
* DAFL (Chen et al. 2019): a generator that does not look at the student: confident one-hot
  teacher predictions, large teacher features, balanced classes; the student learns by KL.

The student's optimiser and schedule are the benchmark's (the same for every method), so the
quick-profile table compares how the transfer set is made; :data:`PUBLISHED` holds each method's
own settings at CIFAR scale for config files (``methods: cifar10``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import GeneratorMethod


def l1_distance(t_logits, s_logits) -> torch.Tensor:
    """DFAD's teacher/student distance: the mean absolute difference of the logits."""
    return (s_logits - t_logits).abs().mean()


def dafl_terms(t_logits, t_feat, log10: bool) -> dict:
    """DAFL's three generator losses: cross-entropy to the teacher's own argmax (confident
    predictions), minus the mean absolute feature (large activations), and minus the entropy of the
    batch's mean prediction (balanced classes; its published code takes it with log10)."""
    p_mean = t_logits.softmax(1).mean(0)
    log = torch.log10 if log10 else torch.log
    return dict(
        onehot=F.cross_entropy(t_logits, t_logits.detach().argmax(1)),
        activation=-t_feat.abs().mean(),
        info_entropy=(p_mean * log(p_mean + 1e-8)).sum(),  # = -H(mean prediction)
    )


class DFAD(GeneratorMethod):
    family = "dfad"

    def trains(self) -> bool:
        return bool(self.cfg.objective.adv)

    def needs_student(self) -> bool:
        return bool(self.cfg.objective.adv)

    def generator_objective(self, batch: dict):
        terms, loss = {}, batch["t_logits"].new_zeros(())
        if self.adversarial_on():
            terms["adv_kd"] = l1_distance(batch["t_logits"], batch["s_logits"])
            loss = loss - self.cfg.objective.adv * terms["adv_kd"]
        return loss, terms

    def student_objective(self, t_logits, s_logits, labels, t_feat, s_feat):
        terms = {"kd": l1_distance(t_logits, s_logits)}
        terms["total"] = terms["kd"]
        return terms["kd"], terms


class DAFL(GeneratorMethod):
    family = "dafl"
    sections = ("generator", "objective", "dafl")

    def generator_objective(self, batch: dict):
        w = self.cfg.dafl
        terms = dafl_terms(batch["t_logits"], batch["t_feat"], w.log10)
        loss = (
            batch["t_logits"].new_zeros(())
            + w.onehot * terms["onehot"]
            + w.activation * terms["activation"]
            + w.entropy * terms["info_entropy"]
        )
        return loss, terms


# Neither method uses CPSC-DFKD's other terms.
_NO_CPSC_TERMS = dict(alpha=0.0, beta=0.0, gamma=0.0, eta=0.0, eta_student=0.0)

#: Quick profile. Measured on digits, seed 0, 300 iterations (book appendix): the published MNIST
#: student settings (DFAD SGD 0.01 constant; DAFL Adam 2e-3) gave 54 % and 24 %, and DAFL's MNIST
#: generator lr 0.2 collapses our generator (25 % with our student).
PRESETS: dict[str, dict] = {
    # DFAD_mnist.py: 5 student steps, then 1 generator step maximising the L1 distance; generator
    # Adam 1e-3 with default betas; nz 100
    "dfad": dict(
        _NO_CPSC_TERMS,
        conditional=False,
        adv_warmup=0.0,
        student_first=True,
        lr_generator=1e-3,
        generator_betas=(0.9, 0.999),
        nz=100,
    ),
    # DAFL-train.py: one-hot 1, information entropy 5 (log10), activation 0.1 (its MNIST weights),
    # generator Adam with default betas and no schedule, nz 100; generator lr 1e-3 (the DataFree
    # toolbox's DAFL script) because the MNIST 0.2 collapses our generator
    "dafl": dict(
        _NO_CPSC_TERMS,
        adv=0.0,
        conditional=False,
        lr_generator=1e-3,
        generator_betas=(0.9, 0.999),
        generator_cosine=False,
        nz=100,
    ),
}
HELP: dict[str, str] = {
    "dfad": "DFAD (Fang et al. 2019): unconditional generator maximises the L1 teacher/student "
    "discrepancy; student steps first; its own optimiser settings",
    "dafl": "DAFL (Chen et al. 2019): non-adversarial generator with one-hot, activation and log10 "
    "entropy losses; its own optimiser settings",
}
FAMILY = {"dfad": DFAD, "dafl": DAFL}

# Published settings at CIFAR scale, read in the authors' code. DFAD:
# VainF/Data-Free-Adversarial-Distillation, DFAD_cifar.py and README (5 student steps, then 1
# generator step; SGD 0.1, weight decay 5e-4; generator Adam 1e-3; both x 0.1 at epochs 100 and 200
# of 500; nz 256; CIFAR-100 changes only the data set). DAFL: huawei-noah/Efficient-Computing,
# DAFL/DAFL-train.py and README (generator Adam 0.02, default betas, constant; student SGD 0.1,
# weight decay 5e-4, x 0.1 at epochs 800 and 1600 of 2000; one-hot / entropy (log10) / activation
# weights 0.05 / 5 / 0.01 on CIFAR-10 and 0.5 / 20 / 0.1 on CIFAR-100; nz 1000; one G and one S
# update per batch, here 5 S steps as in the DataFree toolbox's DAFL script).
_DFAD_CIFAR = dict(
    g_steps=1,
    s_steps=5,
    student_first=True,
    lr_student=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    student_optimizer="sgd",
    lr_schedule="step",
    lr_steps=(0.2, 0.4),
    warmup_frac=0.0,
    lr_generator=1e-3,
    generator_betas=(0.9, 0.999),
    generator_cosine=True,
    nz=256,
)
_DAFL_CIFAR = dict(
    g_steps=1,
    s_steps=5,
    lr_student=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    student_optimizer="sgd",
    lr_schedule="step",
    lr_steps=(0.4, 0.8),
    warmup_frac=0.0,
    lr_generator=0.02,
    generator_betas=(0.9, 0.999),
    generator_cosine=False,
    nz=1000,
)
PUBLISHED: dict[str, dict] = {
    "cifar10": dict(
        dfad=_DFAD_CIFAR,
        dafl={
            **_DAFL_CIFAR,
            "dafl.onehot": 0.05,
            "dafl.entropy": 5.0,
            "dafl.activation": 0.01,
        },
    ),
    "cifar100": dict(
        dfad=_DFAD_CIFAR,
        dafl={
            **_DAFL_CIFAR,
            "dafl.onehot": 0.5,
            "dafl.entropy": 20.0,
            "dafl.activation": 0.1,
        },
    ),
}
