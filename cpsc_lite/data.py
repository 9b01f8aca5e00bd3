"""Datasets by name, all returned as a :class:`DataBundle`.

The built-in default is scikit-learn's handwritten digits (8x8 grey images,
10 classes, shipped with scikit-learn: no download). ``npz:PATH`` reads a user's
own arrays. Larger datasets (CIFAR, SVHN, MNIST, Tiny-ImageNet, image folders)
register themselves from :mod:`cpsc_lite.vision_datasets`.

In data-free distillation only the *test* split is ever read by the student's
side (to evaluate); the training split exists for training the teacher and for
the ``data`` upper-bound baseline (book chapter 2).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from . import CpscError
from . import image_folders  # noqa: F401  (registers tiny-imagenet, folder:)
from . import vision_datasets  # noqa: F401  (registers cifar10, cifar100, svhn, mnist, ...)
from .bundle import (
    ArrayDataset,
    DataBundle,
    channel_stats,
    denormalize,
    with_normalization,  # noqa: F401  (re-exported)
)
from .checkpoint import atomic_write_bytes
from .registry import DATASETS


#: Decorator: ``fn(root: str | None, download: bool) -> DataBundle`` becomes loadable by name
#: (``takes_path=True``: ``fn(path)`` loads ``name:PATH``).
register_dataset = DATASETS.register


def available_datasets() -> dict[str, str]:
    """Registered datasets as written on the command line, with a one-line description each."""
    return DATASETS.describe()


def load_dataset(
    spec: str, root: Optional[str] = None, download: bool = False
) -> DataBundle:
    """Load ``digits``, another registered name, or a path prefix (``npz:PATH``, ``folder:PATH``)."""
    load, path = DATASETS.resolve(spec)
    return load(path) if path is not None else load(root, download)


@register_dataset(
    "digits",
    "scikit-learn's handwritten digits: 1797 grey 8x8 images, 10 classes "
    "(built in, no download)",
)
def load_digits(root: Optional[str] = None, download: bool = False) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    # [N, 1, 8, 8] in [0, 1]
    images = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(d.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=0, stratify=d.target
    )
    mean, std = channel_stats(images[idx_train])
    return DataBundle(
        name="digits",
        train=ArrayDataset(images[idx_train], labels[idx_train], mean, std),
        test=ArrayDataset(images[idx_test], labels[idx_test], mean, std),
        num_classes=10,
        channels=1,
        img_size=8,
        mean=mean,
        std=std,
        class_names=[str(i) for i in range(10)],
        augment_pad=1,
        augment_flip=False,
    )


def _npz_problem(path: str, what: str) -> CpscError:
    return CpscError(
        f"{path} is not a usable dataset file: {what}. An npz dataset needs arrays x_test (uint8 images of "
        "shape (N,H,W) or (N,H,W,C) with C = 1 or 3, square, 8 to 64 pixels) and y_test (integer labels "
        "0..K-1), and may add x_train and y_train in the same format. Save them with numpy.savez(path, x_test=..., "
        "y_test=...)."
    )


#: More classes than any dataset cpsc_lite targets (ImageNet has 1000); a label above it is a mistake.
MAX_CLASSES = 1000


def _npz_member(path: str, arrays, key: str) -> np.ndarray:
    """One array of the archive; numpy reads members lazily, so every way a member can be broken
    (not an .npy, pickled objects, truncated, a bad CRC) shows up here."""
    try:
        return np.asarray(arrays[key])
    except Exception as exc:  # ValueError (pickled/object, bad header), zipfile.BadZipFile (CRC), EOFError, OSError
        detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}"
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            detail = "it holds Python objects (an object array), which are never unpickled; store numbers"
        raise _npz_problem(path, f"array {key} cannot be read ({detail})") from None


def _npz_split(
    path: str, arrays, xkey: str, ykey: str
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _npz_member(path, arrays, xkey), _npz_member(path, arrays, ykey)
    if x.dtype != np.uint8:
        raise _npz_problem(path, f"{xkey} has dtype {x.dtype}, expected uint8 (0..255)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise _npz_problem(path, f"{xkey} has shape {arrays[xkey].shape}")
    if x.shape[1] != x.shape[2]:
        raise _npz_problem(
            path, f"{xkey} images are {x.shape[1]}x{x.shape[2]}, not square"
        )
    if not 8 <= x.shape[1] <= 64:
        raise _npz_problem(
            path, f"{xkey} images are {x.shape[1]} pixels wide, outside 8..64"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise _npz_problem(
            path, f"{ykey} has shape {y.shape} but {xkey} holds {len(x)} images"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise _npz_problem(path, f"{ykey} has dtype {y.dtype}, expected integers")
    if len(y) == 0:
        raise _npz_problem(path, f"{ykey} is empty")
    if y.min() < 0:
        raise _npz_problem(path, f"{ykey} holds negative labels")
    if y.max() >= MAX_CLASSES:
        raise _npz_problem(
            path,
            f"{ykey} holds the label {int(y.max())}, but at most {MAX_CLASSES} classes "
            f"(labels 0..{MAX_CLASSES - 1}) are supported",
        )
    return torch.from_numpy(
        np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    ), torch.from_numpy(y.astype(np.int64))


def _check_labels(
    path: str, y_fit: torch.Tensor, y_test: torch.Tensor, fit_key: str
) -> int:
    """The number of classes K, after checking that the labels are exactly 0..K-1: all present in
    ``y_fit`` (the split a teacher learns from), at least two, and none in the test split beyond them."""
    present = torch.unique(y_fit)
    num_classes = int(present.max()) + 1
    if len(present) < 2:
        raise _npz_problem(
            path,
            f"{fit_key} holds a single class ({int(present[0])}); a classifier needs at "
            "least two",
        )
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise _npz_problem(
            path,
            f"{fit_key} uses labels up to {num_classes - 1} but never {shown}; labels must "
            "be 0..K-1 with every class present (renumber them with "
            "numpy.unique(y, return_inverse=True)[1])",
        )
    if int(y_test.max()) >= num_classes:
        raise _npz_problem(
            path,
            f"y_test holds the label {int(y_test.max())}, which {fit_key} never uses "
            f"(its classes are 0..{num_classes - 1})",
        )
    return num_classes


@register_dataset(
    "npz",
    "your own arrays: x_test, y_test (and optionally x_train, y_train), uint8 images",
    takes_path=True,
)
def load_npz(path: str) -> DataBundle:
    """A user's own dataset from a ``.npz`` file (see :func:`_npz_problem` for the format)."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise CpscError(
            f"Dataset file {path} is a folder, not an .npz file. For a folder of images (one "
            "sub-folder per class) use --dataset folder:PATH."
        )
    if not os.path.isfile(path):
        raise CpscError(
            f"Dataset file {path} does not exist. Check the path after 'npz:' "
            "(it is relative to the current directory)."
        )
    try:
        arrays = np.load(path, allow_pickle=False)
        keys = set(arrays.files)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError...
        # not a zip: numpy would only read it as a pickle, which we never do
        if "pickled" in str(exc):
            raise _npz_problem(
                path,
                "numpy cannot read it as an .npz archive (it is not a zip of arrays)",
            ) from None
        raise _npz_problem(
            path, f"numpy cannot read it ({exc.__class__.__name__}: {exc})"
        ) from None
    for key in ("x_test", "y_test"):
        if key not in keys:
            raise _npz_problem(
                path,
                f"array {key} is missing (found: {', '.join(sorted(keys)) or 'nothing'})",
            )
    x_test, y_test = _npz_split(path, arrays, "x_test", "y_test")
    x_train = y_train = None
    if ("x_train" in keys) != ("y_train" in keys):
        raise _npz_problem(path, "it has only one of x_train and y_train")
    if "x_train" in keys:
        x_train, y_train = _npz_split(path, arrays, "x_train", "y_train")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise _npz_problem(
                path,
                f"x_train images are {tuple(x_train.shape[1:])} but x_test images are "
                f"{tuple(x_test.shape[1:])} (channels, height, width)",
            )
    num_classes = _check_labels(
        path,
        y_train if y_train is not None else y_test,
        y_test,
        "y_train" if y_train is not None else "y_test",
    )
    class_names = [str(i) for i in range(num_classes)]
    if "class_names" in keys:
        names = _npz_member(path, arrays, "class_names")
        if names.ndim != 1:
            raise _npz_problem(
                path,
                f"class_names has shape {names.shape}, expected one name per class",
            )
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise _npz_problem(
                path,
                f"class_names has {len(names)} entries but the labels imply {num_classes} classes",
            )
        class_names = names
    mean, std = channel_stats(x_train if x_train is not None else x_test)
    channels, size = x_test.shape[1], x_test.shape[2]
    name = os.path.splitext(os.path.basename(path))[0]
    return DataBundle(
        name=f"npz:{name}",
        train=ArrayDataset(x_train, y_train, mean, std)
        if x_train is not None
        else None,
        test=ArrayDataset(x_test, y_test, mean, std),
        num_classes=num_classes,
        channels=channels,
        img_size=size,
        mean=mean,
        std=std,
        class_names=class_names,
        augment_pad=max(1, size // 8),
        augment_flip=False,
    )


def save_transfer_set(
    path: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    replace: bool = True,
) -> None:
    """Synthetic images as an ``.npz`` that :func:`load_npz` reads: ``x_test`` uint8 of shape (N, H, W)
    (one channel) or (N, H, W, C), de-normalised to the pixel range of the teacher's data, ``y_test`` the
    conditioning labels, ``class_names``. Written atomically; with ``replace=False`` an existing file
    is never replaced."""
    x = (
        (denormalize(images.detach().float().cpu(), mean, std) * 255.0)
        .round()
        .to(torch.uint8)
    )
    x = x.permute(0, 2, 3, 1).numpy()
    x = x[..., 0] if x.shape[-1] == 1 else x
    arrays = dict(
        x_test=x,
        y_test=labels.cpu().numpy().astype(np.int64),
        class_names=np.array([str(n) for n in class_names]),
    )
    atomic_write_bytes(path, lambda fh: np.savez(fh, **arrays), replace)


def make_shapes(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Procedural colour images: 5 shapes x 2 colour families = 10 classes.

    Each image is a shape (disc, square, triangle, cross, ring) in a warm or a
    cool hue, at a random position and scale, over a noisy background of random
    tint. Returns uint8 images (n, size, size, 3) and labels (n,).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    for i, label in enumerate(labels):
        shape, warm = label // 2, label % 2 == 0
        bg = rng.uniform(0, 90, size=3) + rng.normal(0, 12, size=(size, size, 3))
        r = rng.uniform(0.22, 0.36) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        dy, dx = yy - cy, xx - cx
        if shape == 0:
            mask = dy**2 + dx**2 <= r**2
        elif shape == 1:
            mask = (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
        elif shape == 2:
            mask = (dy <= 0.8 * r) & (dy >= -r + 2 * np.abs(dx))
        elif shape == 3:
            mask = (
                ((np.abs(dy) <= 0.3 * r) | (np.abs(dx) <= 0.3 * r))
                & (np.abs(dy) <= r)
                & (np.abs(dx) <= r)
            )
        else:
            d2 = dy**2 + dx**2
            mask = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
        hue = rng.uniform(0.0, 0.12) if warm else rng.uniform(0.5, 0.68)
        colour = 255 * np.array(
            _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
        )
        img = bg
        img[mask] = colour + rng.normal(0, 10, size=(int(mask.sum()), 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


SHAPE_CLASSES = [
    f"{tone} {shape}"
    for shape in ("disc", "square", "triangle", "cross", "ring")
    for tone in ("warm", "cool")
]


@register_dataset(
    "shapes",
    "procedural colour shapes: 16x16 RGB, 10 classes (5 shapes x warm/cool), "
    "3000 train / 1000 test, generated on the fly (no download)",
)
def load_shapes(root: Optional[str] = None, download: bool = False) -> DataBundle:
    return procedural_bundle(
        "shapes",
        make_shapes(3000, seed=1),
        make_shapes(1000, seed=2),
        SHAPE_CLASSES,
        augment_pad=2,
        augment_flip=True,
    )


def procedural_bundle(
    name: str,
    train: tuple,
    test: tuple,
    class_names: Sequence[str],
    augment_pad: int,
    augment_flip: bool,
) -> DataBundle:
    """A :class:`DataBundle` from generated uint8 ``(images (N, H, W, 3), labels)`` splits, normalised
    with the training split's channel statistics."""
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    (x_train, y_train), (x_test, y_test) = train, test
    mean, std = channel_stats(to_t(x_train))
    return DataBundle(
        name=name,
        train=ArrayDataset(to_t(x_train), torch.from_numpy(y_train), mean, std),
        test=ArrayDataset(to_t(x_test), torch.from_numpy(y_test), mean, std),
        num_classes=len(class_names),
        channels=3,
        img_size=x_train.shape[1],
        mean=mean,
        std=std,
        class_names=list(class_names),
        augment_pad=augment_pad,
        augment_flip=augment_flip,
    )


# ------------------------------------------------------------------ scenes
#: The 6 object shapes and the 5 hue families of ``scenes``; a class is one shape in one hue family.
SCENE_SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")
SCENE_HUES = (
    ("red", 0.0),
    ("yellow", 0.15),
    ("green", 0.33),
    ("blue", 0.6),
    ("purple", 0.8),
)
SCENE_CLASSES = [f"{hue} {shape}" for shape in SCENE_SHAPES for hue, _ in SCENE_HUES]


def _shape_mask(
    shape: int, dy: np.ndarray, dx: np.ndarray, r: float, angle: float
) -> np.ndarray:
    """Pixels inside ``SCENE_SHAPES[shape]`` of radius ``r`` centred at (0, 0), rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if shape == 0:
        return u**2 + v**2 <= r**2
    if shape == 1:
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == 2:
        return (v <= 0.75 * r) & (v >= -r + 1.9 * np.abs(u))
    if shape == 3:
        return (
            ((np.abs(u) <= 0.28 * r) | (np.abs(v) <= 0.28 * r))
            & (np.abs(u) <= r)
            & (np.abs(v) <= r)
        )
    if shape == 4:
        d2 = u**2 + v**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    return (np.abs(u) <= r) & (np.abs(v) <= 0.3 * r)


def make_scenes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Procedural cluttered colour scenes: 6 shapes x 5 hue families = 30 classes (book chapter 7).

    Each image shows one large object (the class: its shape and hue family, at a random position,
    scale and rotation, with a little texture) over a textured background (stripes of random period,
    angle and tint, plus noise), with two to four small distractor objects of random shape and hue.
    Harder for data-free distillation than ``shapes``: three times the classes, fine hue distinctions,
    and clutter a generator must learn to tell from the object. Returns uint8 images
    (n, size, size, 3) and labels (n,); the same ``seed`` gives the same images.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(SCENE_CLASSES), size=n)
    n_hues = len(SCENE_HUES)
    for i, label in enumerate(labels):
        shape, hue_family = label // n_hues, label % n_hues
        period, angle = rng.uniform(3, 9), rng.uniform(0, np.pi)
        stripes = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
        tint_a, tint_b = rng.uniform(20, 110, size=3), rng.uniform(20, 110, size=3)
        img = (
            tint_a
            + (tint_b - tint_a) * (0.5 + 0.5 * stripes)[..., None]
            + rng.normal(0, 10, (size, size, 3))
        )
        for _ in range(rng.integers(2, 5)):  # distractors: small, any shape, any hue
            r = rng.uniform(0.07, 0.13) * size
            cy, cx = rng.uniform(0, size, size=2)
            mask = _shape_mask(
                int(rng.integers(0, len(SCENE_SHAPES))),
                yy - cy,
                xx - cx,
                r,
                rng.uniform(0, np.pi),
            )
            img[mask] = 255 * np.array(
                _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 1), rng.uniform(0.6, 1))
            )
        r = rng.uniform(0.2, 0.32) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        mask = _shape_mask(int(shape), yy - cy, xx - cx, r, rng.uniform(0, np.pi / 2))
        hue = (SCENE_HUES[hue_family][1] + rng.uniform(-0.04, 0.04)) % 1.0
        colour = 255 * np.array(
            _hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
        )
        img[mask] = colour + rng.normal(0, 14, size=(int(mask.sum()), 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


@register_dataset(
    "scenes",
    "procedural cluttered colour scenes: 32x32 RGB, 30 classes (6 shapes x 5 hues) on "
    "striped backgrounds with distractors, 9000 train / 3000 test, generated on the fly",
)
def load_scenes(root: Optional[str] = None, download: bool = False) -> DataBundle:
    return procedural_bundle(
        "scenes",
        make_scenes(9000, seed=1),
        make_scenes(3000, seed=2),
        SCENE_CLASSES,
        augment_pad=4,
        augment_flip=False,
    )
