"""CMI, contrastive model inversion (Fang et al. 2021; book chapter 7).

For every batch a freshly initialised unconditional generator and its inputs z are optimised
together (Adam) on the BN prior, CE to random target labels, an adversarial term (the
teacher/student KL of the images both classify alike, maximised) and an *instance contrast*: a
projection head on the teacher's view of each image must match the image's local view (a random
crop, resized) to its own global view, among the batch and a memory bank of earlier images. The
lowest-loss images join the pool the student learns from; their features join the bank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import grad_scaler
from ..generator import ClassConditionalBatchNorm2d
from .base import PoolMethod, SamplePool, augment_views, inversion_terms


def agreeing_kl(t_logits, s_logits) -> torch.Tensor:
    """CMI's adversarial term: KL(p_T || p_S) per image, averaged over the batch with 0 for the
    images on which the two networks' top classes differ; the synthesiser maximises it, so it seeks
    images the student still gets wrong in its probabilities but not yet in its decision."""
    log_t, log_s = F.log_softmax(t_logits, 1), F.log_softmax(s_logits, 1)
    kl = (F.softmax(t_logits, 1) * (log_t - log_s)).sum(1)
    agree = (t_logits.argmax(1) == s_logits.argmax(1)).float()
    return (kl * agree).mean()


def instance_contrast(local, global_, temperature: float, n_current: int):
    """Row i of ``local`` (L2-normalised projections of local views) must pick row i of ``global_``
    (the same images' global views, not differentiated) among all rows, at ``temperature``. The
    first ``n_current`` rows are the batch being synthesised, the rest come from the memory bank;
    the loss is the batch's mean cross-entropy plus the bank's."""
    logits = local @ global_.detach().T / temperature
    targets = torch.arange(len(local), device=local.device)
    ce = F.cross_entropy(logits, targets, reduction="none")
    loss = ce[:n_current].mean()
    return loss + ce[n_current:].mean() if len(ce) > n_current else loss


def local_views(
    x: torch.Tensor, flip: bool, scale: tuple = (0.25, 1.0)
) -> torch.Tensor:
    """Per image, a random crop of ``scale`` of its area (aspect ratio 3/4 to 4/3) resized back to
    the full size (bilinear), mirrored at random when ``flip``."""
    b, dev = x.shape[0], x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    # fractions of a side
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - h)
    sign = (
        torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
        if flip
        else torch.ones(b, device=dev)
    )
    zero = torch.zeros(b, device=dev)
    theta = torch.stack(
        [torch.stack([w * sign, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def reinitialise(generator: nn.Module) -> None:
    """CMI's reset before each batch: conv and linear weights ~ N(0, 0.02), biases 0, batch-norm
    scales ~ N(1, 0.02) and shifts 0 (also the class-conditional ones)."""
    for m in generator.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ClassConditionalBatchNorm2d):
            nn.init.normal_(m.gamma.weight, 1.0, 0.02)
            nn.init.zeros_(m.beta.weight)


class BNInputMeans:
    """CMI's image features: for each image, the channel means of the input of every BatchNorm2d
    layer of a model, concatenated in module order.

    Forward hooks record them while :attr:`enabled`; :meth:`collect` returns the ``(batch, dim)``
    features of the forward passes since the last call and clears them. ``dim`` is the sum of the
    BN layers' channels.
    """

    def __init__(self, model: nn.Module):
        self._means: list[torch.Tensor] = []
        self.enabled = False
        layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not layers:
            raise ValueError(
                "the model has no BatchNorm2d layer, so CMI's BN-input features do not exist; "
                "use cmi.features=penultimate"
            )
        self.dim = sum(m.num_features for m in layers)
        self._handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.BatchNorm2d, inputs, output) -> None:
        if self.enabled:
            self._means.append(inputs[0].float().mean(dim=(2, 3)))

    def collect(self) -> torch.Tensor:
        if not self._means:
            raise RuntimeError(
                "no BN inputs were recorded: run a forward pass while enabled"
            )
        features, self._means = torch.cat(self._means, dim=1), []
        return features

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._means = [], []


class CMI(PoolMethod):
    family = "cmi"
    sections = ("generator", "objective", "inversion", "cmi")

    def __init__(self, run):
        super().__init__(run)
        s = self.cfg.cmi
        self.means = self.head = self.opt_head = self.bank = None
        if s.weight:  # the projection head and the memory bank persist across batches
            if s.features == "bn_inputs":
                self.means = BNInputMeans(run.teacher)
            dim = run.teacher_dim if self.means is None else self.means.dim
            self.head = nn.Sequential(
                nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, s.head_dim)
            ).to(run.device)
            self.opt_head = torch.optim.Adam(
                self.head.parameters(), lr=self.cfg.optim.lr_generator
            )
            self.bank = SamplePool(s.bank)

    def _teacher(self, x, bn: bool = False):
        """The teacher's logits and CMI's features of ``x``: the BN inputs' channel means, or the
        teacher's penultimate features."""
        if self.means is None:
            return self.run.teacher_forward(x, features=True, bn=bn)
        self.means.enabled = True
        try:
            logits = self.run.teacher_forward(x, bn=bn)
        finally:
            self.means.enabled = False
        return logits, self.means.collect()

    def _contrast(self, local_feat, t_feat, b: int) -> torch.Tensor:
        s = self.cfg.cmi
        feats = torch.stack([local_feat.float(), t_feat.float()], 1)  # (b, 2 views, d)
        if self.bank.size and s.negatives:
            negatives = self.bank.sample(min(s.negatives, self.bank.size))[0]
            feats = torch.cat([feats, negatives])
        proj = self.head(feats.flatten(0, 1))
        proj = F.normalize(proj, dim=1).view(len(feats), 2, -1)
        return instance_contrast(proj[:, 0], proj[:, 1], s.temperature, b)

    def invert(self) -> dict:
        """Re-initialise the generator, draw learnable inputs z and sorted random target labels,
        optimise both; the lowest-loss images go to the pool, their features to the bank."""
        run, cfg = self.run, self.cfg
        objective, s = cfg.objective, cfg.cmi
        b = run.batch_size
        y = torch.randint(0, run.num_classes, (b,), device=run.device).sort().values
        reinitialise(run.generator)
        run.generator.train()
        z = torch.randn(b, run.generator.nz, device=run.device, requires_grad=True)
        params = [{"params": list(run.generator.parameters())}, {"params": [z]}]
        betas = tuple(cfg.optim.generator_betas)
        optimizer = torch.optim.Adam(params, lr=cfg.optim.lr_generator, betas=betas)
        scaler = grad_scaler(run.device, run.amp_dtype)
        also = (self.opt_head,) if self.head is not None else ()
        self._frozen_student()
        best_loss, best, terms = float("inf"), None, {}
        for _ in range(cfg.inversion.steps):
            with run.autocast():
                x = run.generate(z, y)
                x_global = augment_views(x, objective.jitter, objective.flip)
                t_logits, t_feat = self._teacher(x_global, bn=objective.beta > 0)
                s_logits = run.student_forward(x_global) if s.adv else None
                local_feat = None
                if self.head is not None:
                    local_feat = self._teacher(local_views(x, objective.flip))[1]
            loss, terms = inversion_terms(run, t_logits.float(), y, x_global)
            if s.adv:
                terms["cmi_adv"] = agreeing_kl(t_logits.float(), s_logits.float())
                loss = loss - s.adv * terms["cmi_adv"]
            if self.head is not None:
                terms["cmi_contrast"] = self._contrast(local_feat, t_feat, b)
                loss = loss + s.weight * terms["cmi_contrast"]
                feats_now = torch.stack([local_feat, t_feat], 1).detach().float()
            terms["total"] = loss
            value = float(
                loss.detach()
            )  # one host sync per step, as published (it keeps the best)
            if value < best_loss:
                best_loss = value
                kept = feats_now if self.head is not None else None
                best = (x.detach().float().clone(), kept)
            run.update(optimizer, scaler, loss, also=also)
        self._thawed_student()
        self.pool.add(best[0], y)
        if self.head is not None:
            self.bank.add(best[1], y)
        return {k: v.detach() for k, v in terms.items()}

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.head is not None:
            state.update(
                cmi_head=self.head.state_dict(),
                opt_head=self.opt_head.state_dict(),
                cmi_bank=self.bank.state_dict(),
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.head is not None and "cmi_head" in state:
            self.head.load_state_dict(state["cmi_head"])
            self.opt_head.load_state_dict(state["opt_head"])
            self.bank.load_state_dict(state["cmi_bank"], self.run.device)

    def close(self) -> None:
        if self.means is not None:
            self.means.remove()


#: Quick profile: 30 steps per batch (published: 200), a batch every 4 iterations (published: every
#: 80), the BN prior averaged over layers; the contrast on CMI's own features (the spatial means of
#: every teacher BN layer's input; `cmi:cmi.features=penultimate` uses the teacher's penultimate
#: features instead).
PRESETS: dict[str, dict] = {
    "cmi": dict(
        adv=0.0,
        alpha=0.0,
        gamma=0.0,
        eta_student=0.0,
        conditional=False,
        beta=1.0,
        eta=1.0,
        bn_reduce="mean",
        inversion_steps=30,
        inversion_every=4,
        lr_generator=1e-3,
        generator_betas=(0.5, 0.999),
        jitter=1,
        pool_batches=100000,
    ),
}
HELP: dict[str, str] = {
    "cmi": "CMI (Fang et al. 2021): a generator re-initialised per batch inverts the teacher with "
    "BN prior, CE, an adversarial term and an instance contrast against a memory bank; images "
    "kept in a pool",
}
FAMILY = {"cmi": CMI}
#: Published settings at CIFAR scale: zju-vipa/DataFree, scripts/cmi (200 steps per batch at lr
#: 1e-3, adv 0.5, BN 1, CE 1, contrast 0.8 at temperature 0.1, bank 40960 with 4096 negatives, a
#: 256-d head; also 400 student steps per batch).
_CIFAR = dict(
    inversion_steps=200,
    lr_generator=1e-3,
    generator_betas=(0.5, 0.999),
    beta=1.0,
    bn_reduce="sum",
    eta=1.0,
    cmi_adv=0.5,
    cmi_weight=0.8,
    cmi_temperature=0.1,
    cmi_bank=40960,
    cmi_negatives=4096,
    cmi_head_dim=256,
    jitter=4,
    flip=True,
    nz=256,
    ngf=64,
)
PUBLISHED: dict[str, dict] = {"cifar10": dict(cmi=_CIFAR), "cifar100": dict(cmi=_CIFAR)}
