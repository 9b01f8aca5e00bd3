"""Image datasets beyond the built-in digits, read by torchvision: CIFAR, SVHN, MNIST
(:mod:`cpsc_lite.image_folders` reads Tiny-ImageNet and a user's image folders).

Importing this module registers (in :data:`cpsc_lite.registry.DATASETS`)
``cifar10``, ``cifar100``, ``svhn``, ``mnist``, ``fashion-mnist``: read (and, only with
``download=True``, fetched) by torchvision's dataset classes, in torchvision's on-disk layout
under the data root.

The data root is the ``root`` argument (``--data-root`` on the command line),
else the environment variable ``CPSC_LITE_DATA``, else ``~/.cache/cpsc_lite/data``.

Every split is converted once into an in-memory :class:`~cpsc_lite.data.ArrayDataset`
straight from the arrays torchvision already holds (no per-image PIL round trip),
so items come out as normalised float tensors ``[C, H, W]`` with the constants in
:data:`NORMALIZATION`.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from . import CpscError
from .bundle import ArrayDataset, DataBundle
from .registry import DATASETS

register_dataset = DATASETS.register

DATA_ENV_VAR = "CPSC_LITE_DATA"
DEFAULT_DATA_ROOT = os.path.join("~", ".cache", "cpsc_lite", "data")

#: Per-dataset ``(mean, std)`` per channel, for images scaled to [0, 1]. The loaders
#: normalise with these and display code de-normalises with the same numbers
#: (:func:`cpsc_lite.data.denormalize`).
#:
#: * CIFAR-10's std (0.2023, 0.1994, 0.2010) is the constant used by the usual
#:   CIFAR training code (and the DFKD codebases whose teachers we reuse), not the
#:   exact per-pixel std (about 0.247, 0.243, 0.261); a teacher must be evaluated
#:   with the constants it was trained with, so we keep the customary ones.
#: * Tiny-ImageNet uses the ImageNet constants (Tiny-ImageNet is an ImageNet
#:   subset, and that is what ImageNet-pretrained and most Tiny-ImageNet teachers use).
#: * ``folder:PATH`` datasets have no entry: their mean/std is measured from the
#:   images (train split if present, else test) and stored on the bundle.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "tiny-imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

_FIX_ROOT = "or pass --data-root DIR (or set CPSC_LITE_DATA=DIR) if your copy is stored elsewhere"

# Errors that mean "the files are missing, corrupt or the download failed" (never TypeError & co,
# which would be bugs and must surface as such).
_DATA_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    EOFError,
    AssertionError,
    KeyError,
    IndexError,
    pickle.UnpicklingError,
    tarfile.TarError,
    zipfile.BadZipFile,
)


def default_data_root() -> str:
    """``$CPSC_LITE_DATA`` if set (and not empty), else ``~/.cache/cpsc_lite/data``, user-expanded."""
    return os.path.expanduser(os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT)


def data_root(root: Optional[str]) -> str:
    """The directory datasets live in: ``root`` if given, else :func:`default_data_root`."""
    if root is None:
        return default_data_root()
    return os.path.expanduser(os.fspath(root))


def _torchvision_datasets():
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise CpscError(
            f"This dataset is read with torchvision, which cannot be imported ({exc}). "
            "Install it: pip install torchvision"
        ) from None
    return tvd


# --------------------------------------------------------------------------------------------------
# torchvision datasets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where torchvision looks for one dataset's files, in words and as paths."""

    where: str  # e.g. "ROOT/cifar-10-batches-py/ holding data_batch_1, ..."
    paths: list  # every file torchvision's existence/integrity check needs
    manual: str  # how to get the files by hand


def _cifar_layout(cls, root: str) -> _Layout:
    folder = os.path.join(root, cls.base_folder)
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return _Layout(
        where=f"{folder}{os.sep} holding {', '.join(names)} (the unpacked {cls.filename})",
        paths=[os.path.join(folder, n) for n in names],
        manual=(
            f"If you already have {cls.filename} (from {cls.url}), put it in {root} and run with "
            "--download: it is checked and unpacked, not downloaded again"
        ),
    )


def _mnist_layout(cls, root: str) -> _Layout:
    raw = os.path.join(root, cls.__name__, "raw")
    gz = [f for f, _ in cls.resources]
    names = [os.path.splitext(f)[0] for f in gz]
    return _Layout(
        where=f"{raw}{os.sep} holding the uncompressed idx files {', '.join(names)}",
        paths=[os.path.join(raw, n) for n in names],
        manual=(
            f"If you already have the .gz files ({', '.join(gz)}, from {cls.mirrors[0]}), put them in "
            f"{raw} and run with --download: they are checked and unpacked, not downloaded again"
        ),
    )


def _svhn_layout(cls, root: str) -> _Layout:
    entries = [cls.split_list[s] for s in ("train", "test")]
    return _Layout(
        where=" and ".join(os.path.join(root, e[1]) for e in entries)
        + " (directly in the data root)",
        paths=[os.path.join(root, e[1]) for e in entries],
        manual=f"The files come from {' and '.join(e[0] for e in entries)}",
    )


@dataclass(frozen=True)
class _TorchvisionDataset:
    name: str
    title: str
    class_name: str  # attribute of torchvision.datasets
    layout: Callable  # (cls, root) -> _Layout
    split_kwargs: tuple  # (train kwargs, test kwargs) for the constructor
    to_arrays: Callable  # torchvision dataset -> (uint8 [N,C,H,W], long [N])
    size: str  # download size, for the messages
    augment_pad: int
    augment_flip: bool


def _hwc_arrays(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR: ``.data`` is uint8 numpy (N, H, W, C), ``.targets`` a list of ints."""
    images = (
        torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    )
    return images, torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))


def _chw_arrays(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """SVHN: ``.data`` is uint8 numpy (N, C, H, W), ``.labels`` int64 numpy (10 already mapped to 0)."""
    images = torch.from_numpy(np.ascontiguousarray(ds.data))
    return images, torch.as_tensor(np.asarray(ds.labels, dtype=np.int64)).reshape(-1)


def _grey_arrays(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST family: ``.data`` is a uint8 tensor (N, H, W), ``.targets`` a tensor."""
    images = torch.as_tensor(ds.data, dtype=torch.uint8).unsqueeze(1).contiguous()
    return images, torch.as_tensor(ds.targets).long().reshape(-1)


_TORCHVISION_DATASETS = {
    d.name: d
    for d in (
        _TorchvisionDataset(
            "cifar10",
            "CIFAR-10",
            "CIFAR10",
            _cifar_layout,
            ({"train": True}, {"train": False}),
            _hwc_arrays,
            "about 170 MB",
            4,
            True,
        ),
        _TorchvisionDataset(
            "cifar100",
            "CIFAR-100",
            "CIFAR100",
            _cifar_layout,
            ({"train": True}, {"train": False}),
            _hwc_arrays,
            "about 170 MB",
            4,
            True,
        ),
        _TorchvisionDataset(
            "svhn",
            "SVHN",
            "SVHN",
            _svhn_layout,
            ({"split": "train"}, {"split": "test"}),
            _chw_arrays,
            "about 250 MB",
            4,
            False,
        ),
        _TorchvisionDataset(
            "mnist",
            "MNIST",
            "MNIST",
            _mnist_layout,
            ({"train": True}, {"train": False}),
            _grey_arrays,
            "about 12 MB",
            2,
            False,
        ),
        _TorchvisionDataset(
            "fashion-mnist",
            "Fashion-MNIST",
            "FashionMNIST",
            _mnist_layout,
            ({"train": True}, {"train": False}),
            _grey_arrays,
            "about 30 MB",
            2,
            False,
        ),
    )
}


def _open_torchvision_split(
    spec: _TorchvisionDataset, cls, root: str, download: bool, kwargs: dict
):
    """``cls(root, download=download, **kwargs)``, with every failure turned into a CpscError."""
    try:
        return cls(root, download=download, **kwargs)
    except (
        ImportError
    ) as exc:  # SVHN reads .mat files with scipy, imported only when needed
        missing = getattr(exc, "name", None) or "an optional package"
        raise CpscError(
            f"Reading {spec.title} needs {missing}, which is not installed ({exc}). "
            f"Install it: pip install {'scipy' if missing.startswith('scipy') else missing}"
        ) from exc
    except _DATA_ERRORS as exc:
        layout = spec.layout(cls, root)
        missing = [p for p in layout.paths if not os.path.isfile(p)]
        if download:
            raise CpscError(
                f"Could not download {spec.title} into {root} ({type(exc).__name__}: {exc}). Check the internet "
                f"connection and that {root} is writable, or fetch the files by hand: torchvision expects "
                f"{layout.where}. {layout.manual}. Then run without --download, {_FIX_ROOT}."
            ) from exc
        if missing:
            present = len(layout.paths) - len(missing)
            what = (
                "none of them exists"
                if present == 0
                else f"missing: {', '.join(os.path.relpath(p, root) for p in missing)}"
            )
            raise CpscError(
                f"{spec.title} not found in {root}: torchvision expects {layout.where}, and {what}. "
                f"Run with --download to fetch it ({spec.size}) into {root}, {_FIX_ROOT}. {layout.manual}."
            ) from exc
        raise CpscError(
            f"{spec.title} files in {root} are there but cannot be used ({type(exc).__name__}: {exc}); "
            f"torchvision checks their checksums, so they are probably a partial download or a different "
            f"version. Delete {', '.join(layout.paths)} and run with --download to fetch fresh copies, "
            f"{_FIX_ROOT}."
        ) from exc


def load_torchvision_dataset(
    name: str, root: Optional[str] = None, download: bool = False
) -> DataBundle:
    """Load ``cifar10``, ``cifar100``, ``svhn``, ``mnist`` or ``fashion-mnist`` as a :class:`DataBundle`.

    Files are read from torchvision's layout under :func:`data_root` and fetched
    only when ``download`` is true.
    """
    if name not in _TORCHVISION_DATASETS:
        raise CpscError(
            f"{name!r} is not a torchvision dataset here. Use one of: "
            f"{', '.join(_TORCHVISION_DATASETS)}."
        )
    spec = _TORCHVISION_DATASETS[name]
    root = data_root(root)
    cls = getattr(_torchvision_datasets(), spec.class_name)
    mean, std = NORMALIZATION[name]
    splits, class_names = [], None
    for kwargs in spec.split_kwargs:
        ds = _open_torchvision_split(spec, cls, root, download, kwargs)
        images, labels = spec.to_arrays(ds)
        class_names = class_names or [
            str(c) for c in getattr(ds, "classes", None) or []
        ]
        splits.append((images, labels))
        del ds  # keep only the tensors: torchvision's copy of the arrays can go
    (x_train, y_train), (x_test, y_test) = splits
    # the digit datasets without .classes (SVHN) have 10
    num_classes = len(class_names) or 10
    if not class_names:
        class_names = [str(i) for i in range(num_classes)]
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise CpscError(
                f"{spec.title}'s {split} labels run from {int(y.min())} to {int(y.max())}, outside "
                f"0..{num_classes - 1}: the files in {root} are not the standard ones. Delete them and "
                "run with --download."
            )
    return DataBundle(
        name=name,
        train=ArrayDataset(x_train, y_train, mean, std),
        test=ArrayDataset(x_test, y_test, mean, std),
        num_classes=num_classes,
        channels=int(x_test.shape[1]),
        img_size=int(x_test.shape[2]),
        mean=tuple(mean),
        std=tuple(std),
        class_names=class_names,
        augment_pad=spec.augment_pad,
        augment_flip=spec.augment_flip,
    )


def _register_torchvision(name: str, description: str) -> None:
    def loader(root: Optional[str] = None, download: bool = False) -> DataBundle:
        return load_torchvision_dataset(name, root, download)

    loader.__name__ = loader.__qualname__ = "load_" + name.replace("-", "_")
    loader.__doc__ = f"{description} (see :func:`load_torchvision_dataset`)."
    register_dataset(name, description)(loader)
    globals()[loader.__name__] = loader


_register_torchvision(
    "cifar10",
    "CIFAR-10: 60000 colour 32x32 images, 10 classes "
    "(torchvision; --download fetches ~170 MB)",
)
_register_torchvision(
    "cifar100",
    "CIFAR-100: 60000 colour 32x32 images, 100 classes "
    "(torchvision; --download fetches ~170 MB)",
)
_register_torchvision(
    "svhn",
    "SVHN: 99289 colour 32x32 house-number digits, 10 classes "
    "(torchvision + scipy; --download fetches ~250 MB)",
)
_register_torchvision(
    "mnist",
    "MNIST: 70000 grey 28x28 handwritten digits, 10 classes "
    "(torchvision; --download fetches ~12 MB)",
)
_register_torchvision(
    "fashion-mnist",
    "Fashion-MNIST: 70000 grey 28x28 clothing images, 10 classes "
    "(torchvision; --download fetches ~30 MB)",
)


# --------------------------------------------------------------------------------------------------
# Decoding image files with PIL
# --------------------------------------------------------------------------------------------------
