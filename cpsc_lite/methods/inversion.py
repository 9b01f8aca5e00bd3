"""DeepInversion (Yin et al. 2020; book chapter 7): no generator. Every ``inversion.every``
iterations a fresh batch of pixels x ~ N(0, I) is optimised for ``inversion.steps`` Adam steps to
make the teacher's BN statistics and its class predictions match (CE to target labels, the BN
prior, image priors, on jittered and flipped views; with ``inversion.adi``, Adaptive
DeepInversion's competition with the student); the batch joins a pool the student learns from
by KD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine import grad_scaler
from .base import PoolMethod, augment_views, inversion_terms


def competition(t_logits, s_logits, temperature: float = 3.0) -> torch.Tensor:
    """Adaptive DeepInversion's competition term: 1 - JS(p_S || p_T) with the probabilities at
    ``temperature`` clamped to [0.01, 0.99] as in the published code; minimising it pushes images
    to where teacher and student disagree. In [0, 1]."""
    p = F.softmax(s_logits / temperature, dim=1)
    q = F.softmax(t_logits / temperature, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(
        q.log(), m, reduction="batchmean"
    )
    return 1.0 - js.clamp(0.0, 1.0)


class DeepInversion(PoolMethod):
    family = "deepinv"

    def invert(self) -> dict:
        """Optimise one batch of pixels, every class in turn as its targets, and add it to the pool.
        The published code keeps the *last* images (its "best" copy shares the optimised tensor's
        storage), and so does this one."""
        run, cfg = self.run, self.cfg
        objective, steps = cfg.objective, cfg.inversion
        b = run.batch_size
        y = torch.arange(b, device=run.device) % run.num_classes
        shape = (b, run.channels, run.img_size, run.img_size)
        x = torch.randn(*shape, device=run.device).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=steps.lr)
        scaler = grad_scaler(run.device, run.amp_dtype)
        self._frozen_student()
        terms: dict = {}
        for _ in range(steps.steps):
            with run.autocast():
                x_in = augment_views(x, objective.jitter, objective.flip)
                t_logits = run.teacher_forward(x_in, bn=objective.beta > 0)
                s_logits = run.student_forward(x_in) if steps.adi else None
            loss, terms = inversion_terms(run, t_logits.float(), y, x_in)
            if steps.adi:
                terms["competition"] = competition(t_logits.float(), s_logits.float())
                loss = loss + steps.adi * terms["competition"]
            terms["total"] = loss
            # each rank's pixels are its own: nothing to average
            run.update(optimizer, scaler, loss)
        self._thawed_student()
        self.pool.add(x.detach(), y)
        return {k: v.detach() for k, v in terms.items()}


# DeepInversion uses none of CPSC-DFKD's generator terms.
_PRESET = dict(adv=0.0, alpha=0.0, gamma=0.0, eta_student=0.0)
#: Quick profile: 50 Adam steps per batch at lr 0.1, the BN prior averaged over layers with weight
#: 1. The published CIFAR-10 script (2000 steps, lr 0.05, 10 x the BN prior summed over layers,
#: jitter 2) left the teacher's CE at 6.4 (12 % agreement) after 50 steps on the digits teacher.
PRESETS: dict[str, dict] = {
    "deepinv": dict(
        _PRESET,
        beta=1.0,
        eta=1.0,
        bn_reduce="mean",
        jitter=1,
        prior_tv=1e-3,
        inversion_steps=50,
        inversion_lr=0.1,
        pool_batches=100000,
    ),
}
HELP: dict[str, str] = {
    "deepinv": "DeepInversion (Yin et al. 2020): batches of pixels optimised with CE, BN prior and "
    "priors, kept in a pool the student learns from by KD",
}
FAMILY = {"deepinv": DeepInversion}
#: Published settings at CIFAR scale: zju-vipa/DataFree, scripts/deepinv (1000 Adam steps per batch
#: at lr 0.1, BN prior x 10 summed over layers, CE x 1, competition x 1, TV 1e-3, jitter 4 pixels and
#: flips; that script then trains the student 400 steps per synthesised batch: add `s_steps: 400`
#: and a budget to match).
_CIFAR = dict(
    inversion_steps=1000,
    inversion_lr=0.1,
    beta=10.0,
    bn_reduce="sum",
    eta=1.0,
    adi_weight=1.0,
    prior_tv=1e-3,
    jitter=4,
    flip=True,
)
PUBLISHED: dict[str, dict] = {
    "cifar10": dict(deepinv=_CIFAR),
    "cifar100": dict(deepinv=_CIFAR),
}
