"""Images decoded from files: Tiny-ImageNet and a user's own image folders.

Importing this module registers (in :data:`cpsc_lite.registry.DATASETS`):

``tiny-imagenet``
    The standard ``tiny-imagenet-200/`` folder under the data root, decoded with PIL. It cannot
    be downloaded from here.
``folder:PATH``
    Your own images, one subfolder per class (see :func:`load_image_folder`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch

from . import CpscError
from .bundle import ArrayDataset, DataBundle, channel_stats
from .vision_datasets import (
    _FIX_ROOT,
    IMAGE_EXTENSIONS,
    NORMALIZATION,
    TINY_IMAGENET_URL,
    data_root,
    register_dataset,
)


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover  (torchvision depends on pillow)
        raise CpscError(
            f"Reading image files needs Pillow ({exc}). Install it: pip install pillow"
        ) from None
    return Image


def _unreadable(path: str, exc: Exception) -> CpscError:
    return CpscError(
        f"Cannot read image {path} ({type(exc).__name__}: {exc}). Delete or replace the file "
        "(it may be truncated or not an image)."
    )


def _decode_images(
    paths: Sequence[str], mode: str, size: int, resize: bool
) -> torch.Tensor:
    """Decode image files into one uint8 tensor ``[N, C, H, W]`` (C = 1 for mode 'L', 3 for 'RGB').

    Without ``resize`` every image must already be ``size`` x ``size`` (the file is named otherwise).
    PIL releases the GIL while decoding, so a few threads share the work.
    """
    Image = _pil()
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)

    def decode(i: int) -> None:
        path = paths[i]
        try:
            with Image.open(path) as im:
                if im.size != (size, size):
                    if not resize:
                        raise CpscError(
                            f"Image {path} is {im.size[0]}x{im.size[1]} pixels, but the other images "
                            f"are {size}x{size}. All images must have the same size: resize it."
                        )
                if im.mode in _SIXTEEN_BIT_MODES:
                    wide = np.asarray(im, dtype=np.float64)
                    # 16-bit data spans 0..65535; a 32-bit "I" image whose values fit in 0..255 is 8-bit data.
                    scale = 1.0 if im.mode == "I" and wide.max() <= 255 else 257.0
                    im = Image.fromarray(
                        np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8), "L"
                    )
                elif im.mode == "F":
                    raise CpscError(
                        f"Image {path} stores floating-point pixels (PIL mode F), whose range cpsc_lite "
                        "cannot know. Save it as an 8-bit PNG or JPEG."
                    )
                im = im.convert(mode)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BICUBIC)
                else:
                    im.load()
                arr = np.asarray(im, dtype=np.uint8)
        except CpscError:
            raise
        except (
            OSError,
            ValueError,
            SyntaxError,
        ) as exc:  # UnidentifiedImageError is an OSError
            raise _unreadable(path, exc) from exc
        out[i] = arr.reshape(size, size, channels)

    workers = max(1, min(8, os.cpu_count() or 1, len(paths) // 256 + 1))
    if workers == 1:
        for i in range(len(paths)):
            decode(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(decode, range(len(paths)), chunksize=64):
                pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _image_files_under(directory: str) -> list[str]:
    """Image files anywhere below ``directory`` (like torchvision's ImageFolder), sorted."""
    found, seen = [], {os.path.realpath(directory)}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            # a symlink loop (or a second link to one folder) is read once
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        found.extend(
            os.path.join(dirpath, f) for f in sorted(filenames) if _is_image_file(f)
        )
    return found


def _subdirs(directory: str) -> list[str]:
    return sorted(
        d
        for d in os.listdir(directory)
        if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))
    )


# --------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------------------------------


def _tiny_imagenet_missing(
    base: str, root: str, what: str, download: bool
) -> CpscError:
    first = (
        "Tiny-ImageNet cannot be downloaded automatically (--download does not apply to it). "
        if download
        else ""
    )
    return CpscError(
        f"{first}Tiny-ImageNet not found in {root}: {what}. The loader expects the standard layout {base}{os.sep} "
        "with wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt. "
        f"Get tiny-imagenet-200.zip from {TINY_IMAGENET_URL} (about 240 MB) and unzip it inside {root}, "
        f"{_FIX_ROOT} (the directory that contains tiny-imagenet-200/)."
    )


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n\r") for line in f if line.strip()]


@register_dataset(
    "tiny-imagenet",
    "Tiny-ImageNet: 110000 colour 64x64 images, 200 classes (unzip "
    "tiny-imagenet-200.zip into the data root; no download)",
)
def load_tiny_imagenet(
    root: Optional[str] = None, download: bool = False
) -> DataBundle:
    """Tiny-ImageNet from ``ROOT/tiny-imagenet-200/``; its labelled ``val`` split is the test split.

    Class indices follow the *sorted* wnids (the order torchvision's ImageFolder gives
    ``train/``, which is what teachers trained on that folder use); class names are
    the first name in ``words.txt`` (else the wnid). Grey JPEGs are converted to RGB.
    Normalisation: the ImageNet constants, see :data:`NORMALIZATION`.
    """
    root = data_root(root)
    base = os.path.join(root, "tiny-imagenet-200")
    if not os.path.isdir(base):
        raise _tiny_imagenet_missing(base, root, f"{base} does not exist", download)
    for needed in ("wnids.txt", "train", "val"):
        if not os.path.exists(os.path.join(base, needed)):
            raise _tiny_imagenet_missing(
                base, root, f"{os.path.join(base, needed)} is missing", download
            )
    wnids = sorted(set(w.strip() for w in _read_lines(os.path.join(base, "wnids.txt"))))
    if not wnids:
        raise _tiny_imagenet_missing(
            base, root, f"{os.path.join(base, 'wnids.txt')} is empty", download
        )
    index = {w: i for i, w in enumerate(wnids)}

    words = {}
    words_path = os.path.join(base, "words.txt")
    if os.path.isfile(words_path):
        for line in _read_lines(words_path):
            wnid, _, text = line.partition("\t")
            if wnid.strip() in index:
                words[wnid.strip()] = text.split(",")[0].strip()
    class_names = [words.get(w) or w for w in wnids]

    train_paths, train_labels = [], []
    for wnid in wnids:
        class_dir = os.path.join(base, "train", wnid)
        images_dir = os.path.join(class_dir, "images")
        files = _image_files_under(
            images_dir if os.path.isdir(images_dir) else class_dir
        )
        if not files:
            raise _tiny_imagenet_missing(
                base,
                root,
                f"{images_dir} holds no .JPEG images (wnid {wnid} is listed "
                "in wnids.txt)",
                download,
            )
        train_paths += files
        train_labels += [index[wnid]] * len(files)

    val_dir = os.path.join(base, "val")
    annotations = os.path.join(val_dir, "val_annotations.txt")
    test_paths, test_labels = [], []
    if os.path.isfile(annotations):
        for n, line in enumerate(_read_lines(annotations), 1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in index:
                raise CpscError(
                    f"{annotations}, line {n}: expected 'FILE<TAB>WNID<TAB>...' with a wnid from "
                    f"wnids.txt, got {line!r}. Restore the file from tiny-imagenet-200.zip."
                )
            path = os.path.join(val_dir, "images", fields[0].strip())
            if not os.path.isfile(path):
                raise _tiny_imagenet_missing(
                    base,
                    root,
                    f"{path} (listed in val_annotations.txt) is missing",
                    download,
                )
            test_paths.append(path)
            test_labels.append(index[fields[1].strip()])
    else:  # a val/ already sorted into val/<wnid>/[images/]*.JPEG, as some scripts do
        for wnid in wnids:
            if os.path.isdir(os.path.join(val_dir, wnid)):
                files = _image_files_under(os.path.join(val_dir, wnid))
                test_paths += files
                test_labels += [index[wnid]] * len(files)
    if not test_paths:
        raise _tiny_imagenet_missing(
            base,
            root,
            f"{annotations} is missing (and {val_dir} has no <wnid>/ folders)",
            download,
        )

    mean, std = NORMALIZATION["tiny-imagenet"]
    x_train = _decode_images(train_paths, "RGB", 64, resize=False)
    x_test = _decode_images(test_paths, "RGB", 64, resize=False)
    return DataBundle(
        name="tiny-imagenet",
        train=ArrayDataset(
            x_train, torch.tensor(train_labels, dtype=torch.long), mean, std
        ),
        test=ArrayDataset(
            x_test, torch.tensor(test_labels, dtype=torch.long), mean, std
        ),
        num_classes=len(wnids),
        channels=3,
        img_size=64,
        mean=tuple(mean),
        std=tuple(std),
        class_names=class_names,
        augment_pad=4,
        augment_flip=True,
    )


# --------------------------------------------------------------------------------------------------
# folder:PATH
# --------------------------------------------------------------------------------------------------

_GREY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B", "I")
#: 16-bit grey images (PIL opens 16-bit PNGs as "I;16" or "I"): scaled to 8 bits, not clipped to white.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")
#: The image sizes a folder may hold: the conditional generator's range (generator.stage_sizes).
_FOLDER_SIZES = (4, 128)
_FOLDER_LAYOUT = (
    "one subfolder per class: PATH/train/<class>/*.png|jpg and PATH/test/<class>/... "
    "(or PATH/val/...), or just PATH/<class>/... which is then the test split"
)


def _class_folders(split_dir: str) -> tuple[list[str], list[str], list[int]]:
    """Class names (sorted subfolders), image paths and labels of one split folder."""
    classes = _subdirs(split_dir)
    if not classes:
        loose = [f for f in os.listdir(split_dir) if _is_image_file(f)]
        found = f"only loose images such as {loose[0]}" if loose else "nothing usable"
        raise CpscError(
            f"{split_dir} has no class subfolders ({found}). An image folder dataset needs "
            f"{_FOLDER_LAYOUT}. Move the images of each class into a folder named after it."
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _image_files_under(os.path.join(split_dir, name))
        if not files:
            raise CpscError(
                f"Class folder {os.path.join(split_dir, name)} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder."
            )
        paths += files
        labels += [label] * len(files)
    return classes, paths, labels


def load_image_folder(path: str, size: Optional[int] = None) -> DataBundle:
    """Your own images in ImageFolder layout (``folder:PATH``).

    Layouts: ``PATH/train/<class>/...`` plus ``PATH/test/<class>/...`` (or ``PATH/val/...``;
    ``test`` wins if both exist), or a single ``PATH/<class>/...`` tree, which becomes the
    test split only (data-free distillation needs nothing else). Class names are the
    folder names, sorted; train and test must have the same ones.

    Images must be square. With ``size=None`` (what ``folder:PATH`` uses) every image
    must have the size of the first one; with ``size`` given they are all resized to
    ``size`` x ``size``. If every image is grey (PIL modes 1/L/LA) the dataset has one
    channel, else all are converted to RGB. Mean/std are measured on the train split if
    present, else on the test split. Horizontal flips are off (we cannot know whether
    mirrored images keep their class); the random shift is ``size // 8`` pixels.
    """
    Image = _pil()
    path = os.path.expanduser(os.fspath(path))
    if not path:
        raise CpscError(
            f"folder: needs a path, e.g. folder:./my_images, holding {_FOLDER_LAYOUT}."
        )
    if not os.path.isdir(path):
        raise CpscError(
            f"Image folder {path} does not exist or is not a directory. Check the path after "
            "'folder:' (it is relative to the current directory)."
        )
    if size is not None and (not isinstance(size, int) or size < 1):
        raise CpscError(
            f"Image size must be a positive number of pixels, got {size!r}."
        )

    top = _subdirs(path)
    test_name = "test" if "test" in top else ("val" if "val" in top else None)
    if "train" in top and test_name is None:
        raise CpscError(
            f"{path} has a train/ folder but no test/ or val/ folder. Data-free distillation evaluates "
            f"on the test split: move some images of each class to {os.path.join(path, 'test')}"
            f"{os.sep}<class>/."
        )
    if test_name is not None:
        test_dir = os.path.join(path, test_name)
        train_dir = os.path.join(path, "train") if "train" in top else None
    else:
        test_dir, train_dir = path, None

    test_classes, test_paths, test_labels = _class_folders(test_dir)
    train_paths, train_labels = [], []
    if train_dir is not None:
        train_classes, train_paths, train_labels = _class_folders(train_dir)
        if train_classes != test_classes:
            only_train = sorted(set(train_classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(train_classes))
            raise CpscError(
                f"The class folders of {train_dir} and {test_dir} differ (only in train: "
                f"{', '.join(only_train) or 'none'}; only in {test_name}: {', '.join(only_test) or 'none'}). "
                "Both splits need the same class folders (an empty class folder is not allowed either)."
            )

    # Pass 1: headers only (cheap), to choose the size and the number of channels and to fail early.
    resize = size is not None
    grey = True
    for p in train_paths + test_paths:
        try:
            with Image.open(p) as im:
                im_size, im_mode = im.size, im.mode
        except (OSError, ValueError, SyntaxError) as exc:
            raise _unreadable(p, exc) from exc
        if size is None:
            if im_size[0] != im_size[1]:
                raise CpscError(
                    f"Image {p} is {im_size[0]}x{im_size[1]} pixels, not square. The first image sets "
                    "the size of the dataset, which must be square: resize (or crop) all images to the "
                    "same square size first, e.g. 32x32."
                )
            size, first = im_size[0], p
            low, high = _FOLDER_SIZES
            if not low <= size <= high:
                raise CpscError(
                    f"Image {p} is {size}x{size} pixels; image folders must hold square images of "
                    f"{low} to {high} pixels (the generator's range). Resize all images first, e.g. to "
                    "32x32 (PIL: Image.open(f).resize((32, 32)).save(f))."
                )
        elif not resize and im_size != (size, size):
            raise CpscError(
                f"Image {p} is {im_size[0]}x{im_size[1]} pixels, but the first image ({first}) is "
                f"{size}x{size}. All images must have the same square size: resize them first."
            )
        grey = grey and im_mode in _GREY_MODES
    if len(test_classes) < 2:
        raise CpscError(
            f"{test_dir} holds a single class folder ({test_classes[0]}); a classifier needs at least "
            f"two. Add a folder per class ({_FOLDER_LAYOUT})."
        )
    mode = "L" if grey else "RGB"
    x_test = _decode_images(test_paths, mode, size, resize=resize)
    y_test = torch.tensor(test_labels, dtype=torch.long)
    x_train = y_train = None
    if train_dir is not None:
        x_train = _decode_images(train_paths, mode, size, resize=resize)
        y_train = torch.tensor(train_labels, dtype=torch.long)
    mean, std = channel_stats(x_train if x_train is not None else x_test)
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    return DataBundle(
        name=f"folder:{name}",
        train=ArrayDataset(x_train, y_train, mean, std)
        if x_train is not None
        else None,
        test=ArrayDataset(x_test, y_test, mean, std),
        num_classes=len(test_classes),
        channels=1 if grey else 3,
        img_size=size,
        mean=mean,
        std=std,
        class_names=list(test_classes),
        augment_pad=max(1, size // 8),
        augment_flip=False,
    )


register_dataset(
    "folder",
    "your own images, one subfolder per class: PATH/train/<class>/ and PATH/test/<class>/ "
    "(or PATH/val/), or just PATH/<class>/ as the test split",
    takes_path=True,
)(lambda path: load_image_folder(path))
