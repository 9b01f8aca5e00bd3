"""Diagnostics for silent failure modes of data-free distillation (book chapter 7).

Mode collapse is the classic one: the generator keeps producing a few images
per class, the student overfits them, and nothing in the loss curves says so.
These numbers make it visible:

- ``diversity``: per class, the mean pairwise cosine *distance* between teacher
  features of synthetic images (0 = all identical); averaged over classes.
- ``separation``: mean cosine distance between the class centroids of those features
  (0 = every class looks the same to the teacher).
- ``class_balance``: entropy of the teacher's predicted-class histogram on the
  synthetic images, divided by log K (1 = perfectly balanced, 0 = one class).
- ``teacher_confidence``: mean max-softmax of the teacher on the synthetic images.
- ``fid``: Fréchet distance between Gaussians fitted to the teacher's features of
  synthetic and of real test images (the FID formula, in the teacher's own
  feature space rather than Inception's; lower = closer to real data).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .losses import batch_statistics
from .utils import batches


@torch.no_grad()
def teacher_view(teacher, x: torch.Tensor, batch_size: int = 512):
    """Teacher logits and penultimate features for a batch of images, in chunks."""
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        lo, fe = teacher(x[i : i + batch_size], return_features=True)
        logits.append(lo)
        feats.append(fe)
    return torch.cat(logits), torch.cat(feats)


@torch.no_grad()
def teacher_agreement(
    teacher,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int = 512,
) -> dict:
    """How the teacher sees images made for ``labels``: per class, the mean probability it gives
    that class (``confidence``) and the share it assigns to it (``agreement``), and both over all
    images (``mean_confidence``, ``mean_agreement``: the runs' teacher agreement)."""
    logits = teacher_view(teacher, images, batch_size)[0]
    prob, labels = logits.softmax(1), labels.to(logits.device)
    p_y = prob[torch.arange(len(labels), device=prob.device), labels]
    agree = (logits.argmax(1) == labels).float()
    return dict(
        confidence=[float(p_y[labels == c].mean()) for c in range(num_classes)],
        agreement=[float(agree[labels == c].mean()) for c in range(num_classes)],
        mean_confidence=float(p_y.mean()),
        mean_agreement=float(agree.mean()),
    )


def per_class_diversity(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> list[float]:
    """Mean pairwise cosine distance within each class (NaN for classes with < 2 samples)."""
    f = F.normalize(features.float(), dim=1)
    out = []
    for c in range(num_classes):
        fc = f[labels == c]
        n = len(fc)
        if n < 2:
            out.append(float("nan"))
            continue
        sim = fc @ fc.T
        mean_off_diag = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
        out.append(float(1.0 - mean_off_diag))
    return out


@torch.no_grad()
def class_separation(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> float:
    """Mean cosine distance between the centroids of different classes (normalised features);
    classes without samples are left out. Book chapter 5: synthetic images carry their class
    when this is high, whatever their within-class diversity."""
    f = F.normalize(features.float(), dim=1)
    present = [c for c in range(num_classes) if bool((labels == c).any())]
    k = len(present)
    if k < 2:
        return float("nan")
    centres = F.normalize(torch.stack([f[labels == c].mean(0) for c in present]), dim=1)
    sim = centres @ centres.T
    return float(1.0 - (sim.sum() - sim.diagonal().sum()) / (k * (k - 1)))


def class_balance(pred: torch.Tensor, num_classes: int) -> float:
    counts = torch.bincount(pred, minlength=num_classes).float()
    p = counts / counts.sum()
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum() / math.log(num_classes))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for row-sample matrices a, b.

    Tr((S_a S_b)^(1/2)) is computed as Tr((R S_b R)^(1/2)) with R = S_a^(1/2): the
    same value, but the matrix is symmetric, so an eigendecomposition is stable
    even when the covariances are singular (few samples, many features).
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = (
        np.atleast_2d(np.cov(a, rowvar=False)),
        np.atleast_2d(np.cov(b, rowvar=False)),
    )
    r = _psd_sqrt(s_a)
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s_b @ r), 0, None)).sum())
    return float(
        ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean
    )


@torch.no_grad()
def real_features(teacher, test_set, device, limit: int = 2000) -> np.ndarray:
    feats, n = [], 0
    for x, _ in batches(test_set, 512, device):
        feats.append(teacher(x, return_features=True)[1].float().cpu())
        n += len(x)
        if n >= limit:
            break
    return torch.cat(feats)[:limit].numpy().astype(np.float64)


@torch.no_grad()
def synthetic_diagnostics(
    teacher,
    images: torch.Tensor,
    cond_labels: Optional[torch.Tensor],
    num_classes: int,
    real_feats: Optional[np.ndarray] = None,
) -> dict:
    """All diagnostics for a batch of synthetic images (see module docstring).

    ``cond_labels`` are the labels the images were generated for; without them
    (unconditional generators, noise) classes are the teacher's predictions.
    """
    was_training = teacher.training
    teacher.eval()
    logits, feats = teacher_view(teacher, images)
    teacher.train(was_training)
    prob = logits.float().softmax(1)
    pred = prob.argmax(1)
    groups = cond_labels if cond_labels is not None else pred
    div = per_class_diversity(feats, groups, num_classes)
    finite = [d for d in div if not math.isnan(d)]
    out = dict(
        diversity=float(np.mean(finite)) if finite else 0.0,
        diversity_per_class=[None if math.isnan(d) else round(d, 4) for d in div],
        separation=class_separation(feats, groups, num_classes),
        class_balance=class_balance(pred, num_classes),
        teacher_confidence=float(prob.max(1).values.mean()),
    )
    if cond_labels is not None:
        out["teacher_agreement"] = float((pred == cond_labels).float().mean())
    if real_feats is not None:
        out["fid"] = frechet_distance(feats.double().cpu().numpy(), real_feats)
    out["collapsed_classes"] = collapsed_classes(out, pred, num_classes)
    return out


def collapsed_classes(diag: dict, pred: torch.Tensor, num_classes: int) -> list[int]:
    """Classes whose samples are near-identical, or that the teacher (almost) never predicts."""
    div = [d for d in diag["diversity_per_class"]]
    finite = [d for d in div if d is not None]
    typical = float(np.median(finite)) if finite else 0.0
    counts = torch.bincount(pred, minlength=num_classes).float()
    share = counts / counts.sum()
    bad = []
    for c in range(num_classes):
        low_div = div[c] is not None and (div[c] < 0.01 or div[c] < 0.2 * typical)
        missing = share[c] < 0.1 / num_classes
        if low_div or missing:
            bad.append(c)
    return bad


def collapse_warning(diag: dict, class_names) -> Optional[str]:
    bad = diag.get("collapsed_classes") or []
    if not bad:
        return None
    names = ", ".join(str(class_names[c]) for c in bad)
    return (
        f"possible mode collapse in class(es) {names}: their synthetic images are nearly identical "
        "or the teacher hardly ever predicts them. Check samples.png; try a larger BN or contrast weight "
        "or a lower generator learning rate."
    )


def unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """Real images as float pixels in [0, 1] (uint8 split images are divided by 255)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class PixelJudge:
    """An independent judge of synthetic images: 5 nearest neighbours on raw pixels in [0, 1],
    fitted to real images (the training split). It shares nothing with the teacher, so a high
    recognition rate means the samples *look* like their class, not only that they fool the
    teacher (book chapter 4)."""

    def __init__(self, real_set, k: int = 5, limit: int = 20000):
        from sklearn.neighbors import KNeighborsClassifier

        x = unit_pixels(real_set.images[:limit])
        self.shape = tuple(x.shape[1:])
        labels = real_set.labels[:limit].numpy()
        self.knn = KNeighborsClassifier(n_neighbors=max(1, min(k, len(labels)))).fit(
            x.flatten(1).numpy(), labels
        )

    def predict(self, images: torch.Tensor, mean, std) -> np.ndarray:
        """Classes for normalised images (as the generator makes them)."""
        from .data import denormalize

        x = denormalize(images.detach().float().cpu(), mean, std).clamp(0, 1)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"images of shape {tuple(x.shape[1:])} cannot be judged against real ones of "
                f"{self.shape}"
            )
        return self.knn.predict(x.flatten(1).numpy())

    def recognition(
        self, images: torch.Tensor, labels: torch.Tensor, mean, std
    ) -> float:
        """Share of ``images`` the judge assigns to ``labels`` (their conditioning classes)."""
        return float((self.predict(images, mean, std) == labels.cpu().numpy()).mean())


@torch.no_grad()
def bn_statistics(model: nn.Module, images: torch.Tensor) -> list:
    """Chapter 3: per BN layer of ``model``, the batch mean/variance that ``images`` induce and the running ones.

    Returns a list of dicts with numpy arrays ``batch_mean, batch_var, running_mean, running_var``.
    """
    stats = []

    def hook(module, inputs, output):
        # what the BN prior (losses.BNStatsLoss) compares
        mean, var = batch_statistics(inputs[0])
        stats.append(
            dict(
                batch_mean=mean.numpy(),
                batch_var=var.numpy(),
                running_mean=module.running_mean.numpy().copy(),
                running_var=module.running_var.numpy().copy(),
            )
        )

    model = model.cpu().eval()
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        model(images.cpu())
    finally:
        for h in handles:
            h.remove()
    return stats


@torch.no_grad()
def truncation_sweep(
    generator,
    teacher: nn.Module,
    psis: Sequence[float],
    mean,
    std,
    judge: Optional[PixelJudge] = None,
    per_class: int = 100,
    seed: int = 4321,
) -> list[dict]:
    """Class-wise samples drawn with the noise scaled by each ``psi`` (the truncation trick, book
    chapter 4), measured as a run's final diagnostics measure them: per ``psi`` a dict with the
    teacher agreement, the pixel judge's recognition (None without a ``judge``) and the mean
    within-class diversity of the teacher's features. Same noise for every ``psi``."""
    from .generator import generate_per_class

    teacher.eval()
    device = next(generator.parameters()).device
    rows = []
    for psi in psis:
        x, y = generate_per_class(
            generator, per_class, device, seed=seed, batch_size=256, truncation=psi
        )
        logits, feats = teacher_view(
            teacher, x.to(next(teacher.parameters()).device), 256
        )
        y_t = y.to(logits.device)
        rows.append(
            dict(
                psi=float(psi),
                teacher_agreement=float((logits.argmax(1) == y_t).float().mean()),
                pixel_recognition=judge.recognition(x, y, mean, std)
                if judge is not None
                else None,
                diversity=float(
                    np.nanmean(per_class_diversity(feats, y_t, generator.num_classes))
                ),
            )
        )
    return rows
