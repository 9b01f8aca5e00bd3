"""The loss terms of CPSC-DFKD, one function each, named as in the paper.

With teacher logits t = T(x), student logits s = S(x) for generated x = G(z, y):

- :func:`kl_divergence`  KL(softmax(t) || softmax(s)), the distillation term (chapter 2)
- :func:`ikd_loss`       MSE(s, t), the extra logit-matching term "IKD"
- :func:`pseudo_ce`      CE(logits, y) against the *conditioning* label y (chapter 4)
- :class:`BNStatsLoss`   DeepInversion's prior: the batch statistics that x induces
                         in every teacher BN layer should match its running ones (chapter 3)
- :func:`supcon_loss`    supervised contrastive loss over teacher and student views (chapter 5)
- :func:`total_variation` an image prior from DeepInversion (optional)
- :func:`mode_seeking`   MSGAN's diversity term for a conditional generator (optional)

:mod:`cpsc_lite.distill` combines them into the generator and student objectives.
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


def mode_seeking(
    images: torch.Tensor, noise: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al. 2019) for a conditional generator.

    ``images`` and ``noise`` hold two halves, row i of the second half generated with the same
    label as row i of the first: the term is ``1 / (d_x / d_z + eps)`` with d_x the mean absolute
    difference of the paired images and d_z that of their noise vectors. Minimising it makes two
    noise vectors of one class give different images, against a collapse of each class to one
    mode (book chapter 4)."""
    h = len(images) // 2
    ratio = (images[:h] - images[h : 2 * h]).abs().mean() / (
        noise[:h] - noise[h : 2 * h]
    ).abs().mean()
    return 1.0 / (ratio + eps)


def competition(
    t_logits: torch.Tensor, s_logits: torch.Tensor, temperature: float = 3.0
) -> torch.Tensor:
    """Adaptive DeepInversion's competition term (Yin et al. 2020): 1 - JS(p_S || p_T) with the
    probabilities at ``temperature`` clamped to [0.01, 0.99] as in the published code; minimising it
    pushes images to where teacher and student disagree. In [0, 1]."""
    p = F.softmax(s_logits / temperature, dim=1)
    q = F.softmax(t_logits / temperature, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(
        q.log(), m, reduction="batchmean"
    )
    return 1.0 - js.clamp(0.0, 1.0)


def agreeing_kl(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """CMI's adversarial term (Fang et al. 2021): KL(p_T || p_S) per image, averaged over the batch with
    0 for the images on which the two networks' top classes differ; maximised by the synthesiser, so it
    seeks images the student still gets wrong in its probabilities but not yet in its decision."""
    kl = (
        F.softmax(t_logits, 1)
        * (F.log_softmax(t_logits, 1) - F.log_softmax(s_logits, 1))
    ).sum(1)
    agree = (t_logits.argmax(1) == s_logits.argmax(1)).float()
    return (kl * agree).mean()


def instance_contrast(
    local: torch.Tensor, global_: torch.Tensor, temperature: float, n_current: int
) -> torch.Tensor:
    """CMI's instance contrast (Fang et al. 2021): row i of ``local`` (L2-normalised projections of
    local views) must pick row i of ``global_`` (projections of the same images' global views, not
    differentiated) among all rows, at ``temperature``. The first ``n_current`` rows are the batch
    being synthesised, the rest come from the memory bank; the loss is the batch's mean cross-entropy
    plus the bank's."""
    logits = local @ global_.detach().T / temperature
    ce = F.cross_entropy(
        logits, torch.arange(len(local), device=local.device), reduction="none"
    )
    loss = ce[:n_current].mean()
    return loss + ce[n_current:].mean() if len(ce) > n_current else loss


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


class BNInputMeans:
    """CMI's image features (Fang et al. 2021): for each image, the channel means of the input of
    every BatchNorm2d layer of a model, concatenated in module order.

    Forward hooks record them while :attr:`enabled`; :meth:`collect` returns the ``(batch, dim)``
    features of the forward passes since the last call (one pass: one block of ``dim`` columns),
    and clears them. ``dim`` is the sum of the BN layers' channels.
    """

    def __init__(self, model: nn.Module):
        self._means: list[torch.Tensor] = []
        self.enabled = False
        layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not layers:
            raise ValueError(
                "the model has no BatchNorm2d layer, so CMI's BN-input features do not exist; "
                "use cmi_features=penultimate"
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
                "turn it off (beta = 0 / use_bn = False)"
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
