"""The loss terms of CPSC-DFKD that other methods share, one function each, named as in the paper.

With teacher logits t = T(x), student logits s = S(x) for generated x = G(z, y):

- :func:`kl_divergence`  KL(softmax(t) || softmax(s)), the distillation term (chapter 2)
- :func:`ikd_loss`       MSE(s, t), the extra logit-matching term "IKD"
- :func:`pseudo_ce`      CE(logits, y) against the *conditioning* label y (chapter 4)
- :class:`BNStatsLoss`   DeepInversion's prior: the batch statistics that x induces
                         in every teacher BN layer should match its running ones (chapter 3)
- :func:`supcon_loss`    supervised contrastive loss over teacher and student views (chapter 5)
- :func:`total_variation` an image prior from DeepInversion (optional)

These are the terms several method families share; a term only one family uses lives in that
family's module (:mod:`cpsc_lite.methods`), which combines them into its objectives.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p_t || p_s) with p = softmax(logits / temperature), averaged over the batch.

    Multiplied by temperature**2 (Hinton et al. 2015) so its gradient scale does
    not depend on the temperature; at temperature 1 that factor is 1.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature**2


def ikd_loss(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor
) -> torch.Tensor:
    """Mean squared difference of the logits (averaged over batch and classes)."""
    return F.mse_loss(student_logits, teacher_logits)


def pseudo_ce(
    logits: torch.Tensor, pseudo_labels: torch.Tensor, on_softmax: bool = False
) -> torch.Tensor:
    """Cross-entropy of raw *logits* against the labels the images were generated for.

    The authors' code applies CE to softmax outputs (a double softmax, which
    flattens the gradient 9-13x for 10 classes); ``on_softmax=True`` reproduces
    that for the ``reference_compat`` preset. By default CE takes logits, as it should.
    """
    return F.cross_entropy(
        logits.softmax(dim=1) if on_softmax else logits, pseudo_labels
    )


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels
    (DeepInversion's smoothness prior, Yin et al. 2020)."""
    return (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean() + (
        images[:, :, :, 1:] - images[:, :, :, :-1]
    ).abs().mean()


def supcon_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), contrast mode "all".

    ``features``: [B, V, D], L2-normalised, V views of each of B samples
    (CPSC-DFKD: V = 2, the teacher's and the student's features of one image).
    Every one of the B*V vectors is an anchor. Its positives are all *other*
    vectors whose sample has the same label (the other view of itself
    included); the denominator runs over all other vectors. For anchor i with
    positive set P(i)::

        loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(f_i.f_p / T) / sum_{a != i} exp(f_i.f_a / T) )

    The result is the mean over anchors that have at least one positive. No
    extra base-temperature factor is applied.
    """
    if features.dim() != 3:
        raise ValueError(
            f"features must be [batch, views, dim], got shape {tuple(features.shape)}"
        )
    b, v, _ = features.shape
    # view-major: rows 0..B-1 are view 0
    flat = features.transpose(0, 1).reshape(b * v, -1)
    lab = labels.repeat(v)
    logits = flat @ flat.T / temperature
    self_mask = torch.eye(b * v, dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    # Subtracting the row max changes nothing mathematically and keeps exp() finite.
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (lab[:, None] == lab[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has_pos = (n_pos > 0).to(log_prob.dtype)
    # Masked means instead of boolean indexing: no data-dependent shapes, so no GPU->host sync.
    mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(
        dim=1
    ) / n_pos.clamp_min(1)
    return -(mean_log_prob_pos * has_pos).sum() / has_pos.sum().clamp_min(1)


def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of a batch of feature maps ``[B, C, H, W]``: what a BN
    layer normalises with in training, and what the BN prior matches to its running statistics."""
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)


class BNStatsLoss:
    """DeepInversion's BN-statistics prior over all BatchNorm2d layers of a model.

    Forward hooks record, for each BN layer, the per-channel mean and variance of
    the layer's *input* on the current batch; :meth:`loss` returns

        sum_layers ||mu_batch - running_mean||_2 + ||var_batch - running_var||_2

    Use as a context manager (or call :meth:`remove`) so no hook outlives its use.
    """

    def __init__(self, model: nn.Module):
        self._terms: list[torch.Tensor] = []
        self.enabled = True
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)
        ]
        if not self._handles:
            raise ValueError(
                "the model has no BatchNorm2d layer, so the BN-statistics loss cannot be used; "
                "turn it off (beta = 0)"
            )

    def _hook(self, module: nn.BatchNorm2d, inputs, output) -> None:
        if not self.enabled:
            return
        mean, var = batch_statistics(inputs[0])
        self._terms.append(
            torch.norm(mean - module.running_mean, 2)
            + torch.norm(var - module.running_var, 2)
        )

    def loss(self, reduce: str = "sum", first_weight: float = 1.0) -> torch.Tensor:
        """The terms recorded since the last call, summed over layers (the paper) or averaged
        (``reduce="mean"``: the same size whatever the teacher's depth); clears them.
        ``first_weight`` multiplies the first BN layer's term (DeepInversion's ImageNet code: 10),
        the one closest to the pixels."""
        if not self._terms:
            raise RuntimeError(
                "no BN statistics were recorded: run the teacher forward pass first"
            )
        stacked = torch.stack(self._terms)
        self._terms = []
        if first_weight != 1.0:
            weights = torch.ones_like(stacked)
            weights[0] = first_weight
            stacked = stacked * weights
        return stacked.mean() if reduce == "mean" else stacked.sum()

    def clear(self) -> None:
        self._terms = []

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._terms = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Float32BNStatsLoss(BNStatsLoss):
    """The BN-statistics prior with the batch mean and variance taken in float32 under autocast
    (a bf16 mean carries 8 bits of mantissa: too coarse for a loss that matches statistics)."""

    def _hook(self, module, inputs, output) -> None:
        super()._hook(module, (inputs[0].float(),), output)
