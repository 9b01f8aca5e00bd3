"""cpsc_lite.vision_datasets on tiny files written in each dataset's real on-disk format.

Nothing here touches the network: an autouse fixture makes every socket connection
fail, and the download tests replace torchvision's download function.

torchvision's own checks, and what these tests do about them:

* CIFAR10/CIFAR100 (``_check_integrity`` and ``_load_meta``) and SVHN compare the MD5
  of every file with the published archive's checksums, which tiny stand-in files
  cannot match. The tests keep those checks running and point them at the stand-ins:
  they monkeypatch the class attributes holding the expected MD5s (``train_list``,
  ``test_list``, ``meta``, ``tgz_md5``, ``split_list``) to the MD5s of the files they
  wrote. ``monkeypatch`` restores the real values after each test.
* MNIST/FashionMNIST's ``_check_exists`` only checks that the raw idx files exist (no
  checksum), so nothing is patched for them.
* The real CIFAR pickles come from Python 2: their keys (b'data', b'labels', ...) are
  byte strings that torchvision's ``pickle.load(f, encoding="latin1")`` turns into
  ``str``. A Python 3 pickle with ``bytes`` keys would stay ``bytes`` and torchvision
  would fail with KeyError 'data', so the stand-ins are written with ``str`` keys,
  which load into exactly the dict torchvision gets from the real files.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
import torchvision.datasets as tvd  # noqa: E402
from PIL import Image  # noqa: E402

from cpsc_lite import CpscError  # noqa: E402
from cpsc_lite import data as cdata  # noqa: E402
from cpsc_lite import image_folders  # noqa: E402
from cpsc_lite import vision_datasets as vd  # noqa: E402


# ------------------------------------------------------------------------------------------------
# fixtures and writers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails at once instead of hanging or downloading."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv(vd.DATA_ENV_VAR, raising=False)


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def write_pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_cifar10(root, n=4, seed=0) -> dict:
    """cifar-10-batches-py/ with 5 train batches of n images, a test batch of n, batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        # rows: R plane, G plane, B plane
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        write_pickle(
            folder / name,
            {
                "batch_label": name,
                "labels": y,
                "data": x,
                "filenames": [f"{name}_{i}.png" for i in range(n)],
            },
        )
        out[name] = (x, y)
    write_pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": n, "label_names": CIFAR10_NAMES, "num_vis": 3072},
    )
    return out


def patch_cifar_md5(monkeypatch, cls, folder) -> None:
    """Point torchvision's checksum lists at the stand-in files (see the module docstring)."""
    monkeypatch.setattr(
        cls, "train_list", [[f, md5(folder / f)] for f, _ in cls.train_list]
    )
    monkeypatch.setattr(
        cls, "test_list", [[f, md5(folder / f)] for f, _ in cls.test_list]
    )
    monkeypatch.setattr(
        cls, "meta", dict(cls.meta, md5=md5(folder / cls.meta["filename"]))
    )


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    arrays = write_cifar10(tmp_path)
    patch_cifar_md5(monkeypatch, tvd.CIFAR10, tmp_path / "cifar-10-batches-py")
    return tmp_path, arrays


def write_idx(path, array: np.ndarray) -> None:
    """Uncompressed idx ("SN3 Pascal Vincent") file of uint8: magic 0x08 0x0N, big-endian dims."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n_train=6, n_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out[prefix] = (x, y)
    return out


def save_image(path, array: np.ndarray, fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def rgb(rng, size=8) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def grey(rng, size=8) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size), dtype=np.uint8)


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """ArrayDataset keeps uint8 images as they are (float images in [0, 1]: back to bytes)."""
    if images.dtype == torch.uint8:
        return images.numpy()
    return (images * 255).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------------
# registry, constants, data root
# ------------------------------------------------------------------------------------------------


def test_all_datasets_are_registered():
    names = cdata.available_datasets()
    for name in (
        "cifar10",
        "cifar100",
        "svhn",
        "mnist",
        "fashion-mnist",
        "tiny-imagenet",
        "folder:PATH",
        "npz:PATH",
    ):
        assert name in names, name


def test_normalization_constants():
    assert vd.NORMALIZATION["cifar10"] == (
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
    )
    assert vd.NORMALIZATION["cifar100"] == (
        (0.5071, 0.4867, 0.4408),
        (0.2675, 0.2565, 0.2761),
    )
    assert vd.NORMALIZATION["mnist"] == ((0.1307,), (0.3081,))
    assert vd.NORMALIZATION["svhn"] == (
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
    )
    assert vd.NORMALIZATION["fashion-mnist"] == ((0.2860,), (0.3530,))
    assert vd.NORMALIZATION["tiny-imagenet"] == (
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )


def test_data_root_default_and_env(monkeypatch, tmp_path):
    assert vd.data_root(None) == os.path.expanduser(
        os.path.join("~", ".cache", "cpsc_lite", "data")
    )
    monkeypatch.setenv(vd.DATA_ENV_VAR, str(tmp_path))
    assert vd.data_root(None) == str(tmp_path)
    assert vd.data_root(str(tmp_path / "x")) == str(tmp_path / "x")


# ------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ------------------------------------------------------------------------------------------------


def test_cifar10_through_load_dataset(cifar10_root):
    root, arrays = cifar10_root
    b = cdata.load_dataset("cifar10", root=str(root), download=False)
    assert (b.name, b.num_classes, b.channels, b.img_size) == ("cifar10", 10, 3, 32)
    assert b.class_names == CIFAR10_NAMES
    assert (b.mean, b.std) == vd.NORMALIZATION["cifar10"]
    assert (b.augment_pad, b.augment_flip) == (4, True)
    assert isinstance(b.test, cdata.ArrayDataset) and isinstance(
        b.train, cdata.ArrayDataset
    )
    assert len(b.train) == 20 and len(b.test) == 4

    # pixels in CIFAR's plane order end up as [C, H, W] in the right place
    x_test, y_test = arrays["test_batch"]
    expected = x_test.reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(as_uint8(b.test.images), expected)
    assert b.test.labels.tolist() == y_test
    x_train = np.concatenate(
        [arrays[f"data_batch_{i}"][0] for i in range(1, 6)]
    ).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(as_uint8(b.train.images), x_train)

    # an item is a normalised float tensor
    x, y = b.test[1]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == y_test[1]
    mean = torch.tensor(b.mean).view(3, 1, 1)
    std = torch.tensor(b.std).view(3, 1, 1)
    torch.testing.assert_close(
        x, (torch.from_numpy(expected[1]).float() / 255 - mean) / std
    )


def test_cifar10_root_from_environment(cifar10_root, monkeypatch):
    root, _ = cifar10_root
    monkeypatch.setenv(vd.DATA_ENV_VAR, str(root))
    assert len(cdata.load_dataset("cifar10").test) == 4


def test_cifar10_missing_names_path_and_download(tmp_path, monkeypatch):
    monkeypatch.setattr(
        tvd.CIFAR10,
        "download",
        lambda self: pytest.fail("downloaded with download=False"),
    )
    with pytest.raises(CpscError) as info:
        cdata.load_dataset("cifar10", root=str(tmp_path), download=False)
    msg = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    for name in (
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        "cifar-10-python.tar.gz",
    ):
        assert name in msg
    assert "--download" in msg and "--data-root" in msg


def test_cifar10_partly_missing_lists_the_missing_file(cifar10_root):
    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(
        CpscError, match="missing: cifar-10-batches-py.data_batch_3"
    ) as info:
        vd.load_torchvision_dataset("cifar10", str(root))
    assert "data_batch_1" not in str(info.value).split("missing:")[1]


def test_cifar10_checksum_mismatch_is_reported_as_corrupt(tmp_path):
    # real checksums left in place: the stand-ins do not match them
    write_cifar10(tmp_path)
    with pytest.raises(CpscError, match="checksum") as info:
        vd.load_torchvision_dataset("cifar10", str(tmp_path))
    assert "--download" in str(info.value) and "Delete" in str(info.value)


def test_cifar10_download_unpacks_local_tarball_without_network(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_cifar10(src)
    folder = src / "cifar-10-batches-py"
    patch_cifar_md5(monkeypatch, tvd.CIFAR10, folder)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5(root / "cifar-10-python.tar.gz"))
    b = vd.load_torchvision_dataset("cifar10", str(root), download=True)
    assert len(b.test) == 4 and (root / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar10_failed_download_is_a_cpsc_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tvd.cifar, "download_and_extract_archive", offline)
    with pytest.raises(CpscError, match="Could not download CIFAR-10") as info:
        vd.load_torchvision_dataset("cifar10", str(tmp_path), download=True)
    assert "cifar-10-batches-py" in str(info.value)


def test_cifar100(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i:02d}" for i in range(100)]
    arrays = {}
    for split, n in (("train", 6), ("test", 3)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 100, size=n)]
        write_pickle(
            folder / split,
            {
                "filenames": [f"{i}.png" for i in range(n)],
                "batch_label": split,
                "fine_labels": y,
                "coarse_labels": [v // 5 for v in y],
                "data": x,
            },
        )
        arrays[split] = (x, y)
    write_pickle(
        folder / "meta",
        {"fine_label_names": names, "coarse_label_names": [f"s{i}" for i in range(20)]},
    )
    patch_cifar_md5(monkeypatch, tvd.CIFAR100, folder)

    b = cdata.load_dataset("cifar100", root=str(tmp_path))
    assert (b.num_classes, b.channels, b.img_size, b.class_names) == (100, 3, 32, names)
    assert (b.mean, b.std) == vd.NORMALIZATION["cifar100"]
    assert (b.augment_pad, b.augment_flip) == (4, True)
    assert b.test.labels.tolist() == arrays["test"][1]
    np.testing.assert_array_equal(
        as_uint8(b.test.images), arrays["test"][0].reshape(-1, 3, 32, 32)
    )
    assert len(b.train) == 6


def test_cifar100_missing(tmp_path):
    with pytest.raises(CpscError, match="cifar-100-python") as info:
        cdata.load_dataset("cifar100", root=str(tmp_path))
    assert "--download" in str(info.value)


# ------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, folder, classes",
    [
        ("mnist", "MNIST", tvd.MNIST.classes),
        ("fashion-mnist", "FashionMNIST", tvd.FashionMNIST.classes),
    ],
)
def test_mnist_family(tmp_path, name, folder, classes):
    arrays = write_mnist(tmp_path, folder)
    b = cdata.load_dataset(name, root=str(tmp_path))
    assert (b.name, b.num_classes, b.channels, b.img_size) == (name, 10, 1, 28)
    assert b.class_names == list(classes)
    assert (b.mean, b.std) == vd.NORMALIZATION[name]
    assert (b.augment_pad, b.augment_flip) == (2, False)
    assert len(b.train) == 6 and len(b.test) == 5
    x_test, y_test = arrays["t10k"]
    np.testing.assert_array_equal(as_uint8(b.test.images), x_test[:, None])
    assert b.test.labels.tolist() == y_test.tolist()
    x, y = b.test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(
        x, (torch.from_numpy(x_test[0]).float()[None] / 255 - b.mean[0]) / b.std[0]
    )


def test_mnist_missing_names_raw_folder(tmp_path):
    with pytest.raises(CpscError) as info:
        cdata.load_dataset("mnist", root=str(tmp_path))
    msg = str(info.value)
    assert (
        str(tmp_path / "MNIST" / "raw") in msg
        and "train-images-idx3-ubyte" in msg
        and "--download" in msg
    )


def test_fashion_mnist_missing_one_file(tmp_path):
    write_mnist(tmp_path, "FashionMNIST")
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CpscError, match="t10k-labels-idx1-ubyte"):
        cdata.load_dataset("fashion-mnist", root=str(tmp_path))


# ------------------------------------------------------------------------------------------------
# SVHN
# ------------------------------------------------------------------------------------------------


def test_svhn(tmp_path, monkeypatch):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    arrays = {}
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for split, n in (("train", 5), ("test", 4)):
        # SVHN's (H, W, C, N)
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        # label 10 is the digit 0
        y = np.array([[10], [1], [9], [10], [3]][:n], dtype=np.uint8)
        sio.savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": y})
        split_list[split][2] = md5(tmp_path / f"{split}_32x32.mat")
        arrays[split] = (x, y)
    # the real MD5s cannot match stand-ins
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)

    b = cdata.load_dataset("svhn", root=str(tmp_path))
    assert (b.num_classes, b.channels, b.img_size) == (10, 3, 32)
    assert b.class_names == [str(i) for i in range(10)]
    assert (b.mean, b.std) == vd.NORMALIZATION["svhn"]
    assert (b.augment_pad, b.augment_flip) == (4, False)
    assert b.test.labels.tolist() == [0, 1, 9, 0]
    # torchvision turns (H, W, C, N) into (N, C, W, H) by transposing (3, 2, 0, 1); we keep its orientation
    np.testing.assert_array_equal(
        as_uint8(b.test.images), arrays["test"][0].transpose(3, 2, 0, 1)
    )
    assert b.test[0][0].shape == (3, 32, 32)


def test_svhn_missing(tmp_path):
    with pytest.raises(CpscError) as info:
        cdata.load_dataset("svhn", root=str(tmp_path))
    msg = str(info.value)
    assert (
        str(tmp_path / "train_32x32.mat") in msg
        and str(tmp_path / "test_32x32.mat") in msg
    )
    assert "--download" in msg


# ------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ------------------------------------------------------------------------------------------------

WNIDS = ["n02124075", "n01443537"]  # wnids.txt is not sorted in the real dataset either


def write_tiny_imagenet(root, n_train=3, seed=3):
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text(
        "n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\n"
        "n02124075\tEgyptian cat\n"
    )
    for wnid in WNIDS:
        folder = base / "train" / wnid
        boxes = []
        for i in range(n_train):
            # Tiny-ImageNet has some grey JPEGs
            img = grey(rng, 64) if i == 0 else rgb(rng, 64)
            save_image(folder / "images" / f"{wnid}_{i}.JPEG", img, "JPEG")
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        (folder / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    val_labels = [WNIDS[0], WNIDS[1], WNIDS[1]]
    lines = []
    for i, wnid in enumerate(val_labels):
        save_image(base / "val" / "images" / f"val_{i}.JPEG", rgb(rng, 64), "JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t1\t2\t60\t61")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    # unlabelled: ignored
    save_image(base / "test" / "images" / "test_0.JPEG", rgb(rng, 64), "JPEG")
    return base


def test_tiny_imagenet(tmp_path):
    write_tiny_imagenet(tmp_path)
    b = cdata.load_dataset("tiny-imagenet", root=str(tmp_path))
    assert (b.num_classes, b.channels, b.img_size) == (2, 3, 64)
    # sorted wnids: n01443537, n02124075
    assert b.class_names == [
        "goldfish",
        "Egyptian cat",
    ]
    assert (b.mean, b.std) == vd.NORMALIZATION["tiny-imagenet"]
    assert (b.augment_pad, b.augment_flip) == (4, True)
    assert len(b.train) == 6 and len(b.test) == 3
    assert b.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert b.test.labels.tolist() == [1, 0, 0]
    # the grey JPEG became RGB with three equal channels
    grey_img = b.train.images[0]
    torch.testing.assert_close(grey_img[0], grey_img[1])
    x, _ = b.test[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32


def test_tiny_imagenet_wrong_size_names_the_file(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    bad = base / "val" / "images" / "val_1.JPEG"
    save_image(bad, rgb(np.random.default_rng(0), 32), "JPEG")
    with pytest.raises(CpscError, match="val_1.JPEG"):
        cdata.load_dataset("tiny-imagenet", root=str(tmp_path))


def test_tiny_imagenet_missing_explains_manual_download(tmp_path):
    with pytest.raises(CpscError) as info:
        cdata.load_dataset("tiny-imagenet", root=str(tmp_path), download=True)
    msg = str(info.value)
    assert "cannot be downloaded" in msg and "tiny-imagenet-200.zip" in msg
    assert str(tmp_path / "tiny-imagenet-200") in msg and "--data-root" in msg


# ------------------------------------------------------------------------------------------------
# folder:PATH
# ------------------------------------------------------------------------------------------------


def write_split(folder, classes, n, make, rng, ext="png"):
    images = {}
    for c in classes:
        for i in range(n):
            img = make(rng)
            save_image(folder / c / f"{i}.{ext}", img)
            images[(c, i)] = img
    return images


def test_folder_train_test_layout(tmp_path):
    rng = np.random.default_rng(4)
    train = write_split(tmp_path / "train", ["dog", "cat"], 2, rgb, rng)
    test = write_split(tmp_path / "test", ["dog", "cat"], 1, rgb, rng)
    (tmp_path / "test" / "cat" / "notes.txt").write_text("not an image")
    b = cdata.load_dataset(f"folder:{tmp_path}", root="ignored", download=False)
    assert b.name == f"folder:{tmp_path.name}"
    assert (b.num_classes, b.channels, b.img_size, b.class_names) == (
        2,
        3,
        8,
        ["cat", "dog"],
    )
    assert len(b.train) == 4 and len(b.test) == 2
    assert b.test.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(
        as_uint8(b.test.images),
        np.stack([test[("cat", 0)], test[("dog", 0)]]).transpose(0, 3, 1, 2),
    )
    train_u8 = torch.from_numpy(
        np.stack([train[k] for k in [("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1)]])
        .transpose(0, 3, 1, 2)
        .copy()
    )
    np.testing.assert_array_equal(as_uint8(b.train.images), train_u8.numpy())
    # measured on the train split
    assert (b.mean, b.std) == cdata.channel_stats(train_u8)
    assert (b.augment_pad, b.augment_flip) == (1, False)
    x, y = b.test[1]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y == 1


def test_folder_val_and_jpeg(tmp_path):
    rng = np.random.default_rng(5)
    write_split(tmp_path / "train", ["a", "b"], 1, rgb, rng, ext="jpg")
    write_split(tmp_path / "val", ["a", "b"], 2, rgb, rng, ext="JPG")
    b = image_folders.load_image_folder(str(tmp_path))
    assert len(b.test) == 4 and len(b.train) == 2 and b.class_names == ["a", "b"]


def test_folder_single_tree_grey_is_test_only(tmp_path):
    rng = np.random.default_rng(6)
    imgs = write_split(tmp_path, ["0", "1", "2"], 2, grey, rng)
    b = cdata.load_dataset(f"folder:{tmp_path}")
    assert b.train is None
    assert (b.num_classes, b.channels, b.img_size, b.class_names) == (
        3,
        1,
        8,
        ["0", "1", "2"],
    )
    assert b.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(as_uint8(b.test.images)[2, 0], imgs[("1", 0)])
    assert (b.mean, b.std) == cdata.channel_stats(b.test.images)
    assert b.test[0][0].shape == (1, 8, 8)


def test_folder_mixed_grey_and_rgb_becomes_rgb(tmp_path):
    rng = np.random.default_rng(7)
    g = grey(rng)
    save_image(tmp_path / "a" / "0.png", g)
    save_image(tmp_path / "b" / "0.png", rgb(rng))
    b = image_folders.load_image_folder(str(tmp_path))
    assert b.channels == 3
    for c in range(3):
        np.testing.assert_array_equal(as_uint8(b.test.images)[0, c], g)


def test_folder_size_mismatch_names_file(tmp_path):
    rng = np.random.default_rng(8)
    save_image(tmp_path / "a" / "0.png", rgb(rng, 8))
    save_image(tmp_path / "b" / "odd.png", rgb(rng, 10))
    with pytest.raises(CpscError, match=r"odd\.png is 10x10.*8x8"):
        cdata.load_dataset(f"folder:{tmp_path}")
    # an explicit size resizes instead
    b = image_folders.load_image_folder(str(tmp_path), size=4)
    assert b.img_size == 4 and b.test.images.shape == (2, 3, 4, 4)


def test_folder_non_square_first_image(tmp_path):
    save_image(tmp_path / "a" / "0.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(CpscError, match="not square.*resize"):
        image_folders.load_image_folder(str(tmp_path))


def test_folder_class_mismatch(tmp_path):
    rng = np.random.default_rng(9)
    write_split(tmp_path / "train", ["cat", "dog", "fox"], 1, rgb, rng)
    write_split(tmp_path / "test", ["cat", "dog", "owl"], 1, rgb, rng)
    with pytest.raises(CpscError, match="only in train: fox; only in test: owl"):
        image_folders.load_image_folder(str(tmp_path))


@pytest.mark.parametrize(
    "setup, pattern",
    [
        ("missing", "does not exist"),
        ("train_only", "no test/ or val/"),
        ("loose", "no class subfolders"),
        ("empty_class", "holds no images"),
        ("broken", "Cannot read image"),
    ],
)
def test_folder_problems(tmp_path, setup, pattern):
    rng = np.random.default_rng(10)
    path = tmp_path / "ds"
    if setup == "train_only":
        write_split(path / "train", ["a"], 1, rgb, rng)
    elif setup == "loose":
        save_image(path / "0.png", rgb(rng))
    elif setup == "empty_class":
        write_split(path, ["a"], 1, rgb, rng)
        (path / "b").mkdir()
    elif setup == "broken":
        write_split(path, ["a"], 1, rgb, rng)
        (path / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CpscError, match=pattern):
        cdata.load_dataset(f"folder:{path}")


def test_folder_many_images_use_the_threaded_decoder(tmp_path):
    rng = np.random.default_rng(11)
    # 300 files: several threads
    imgs = write_split(tmp_path, ["a", "b"], 150, lambda r: grey(r, 4), rng)
    b = image_folders.load_image_folder(str(tmp_path))
    order = [("a", i) for i in sorted(range(150), key=lambda i: f"{i}.png")]
    order += [("b", i) for i in sorted(range(150), key=lambda i: f"{i}.png")]
    np.testing.assert_array_equal(
        as_uint8(b.test.images)[:, 0], np.stack([imgs[k] for k in order])
    )
    # a file whose header is fine but whose pixel data is cut off fails while decoding, in a worker thread
    bad = tmp_path / "b" / "99.png"
    save_image(bad, rgb(rng, 64))
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(CpscError, match=r"Cannot read image .*99\.png"):
        image_folders.load_image_folder(str(tmp_path), size=4)


@pytest.mark.parametrize("size", [3, 136, 300])
def test_folder_images_outside_the_generators_range_are_refused(tmp_path, size):
    rng = np.random.default_rng(0)
    write_split(tmp_path, ["a", "b"], 2, lambda r: grey(r, size), rng)
    with pytest.raises(
        CpscError,
        match=f"is {size}x{size} pixels; image folders must hold square images of 4 to 128",
    ):
        image_folders.load_image_folder(str(tmp_path))


def test_folder_16_bit_grey_pngs_are_scaled_not_clipped_to_white(tmp_path):
    wide = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000  # 0 .. 63000 of 65535
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(wide).save(tmp_path / c / "0.png")  # PIL: mode I;16
    b = image_folders.load_image_folder(str(tmp_path))
    assert b.channels == 1
    got = as_uint8(b.test.images)[0, 0]
    np.testing.assert_array_equal(
        got, np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    )
    assert got.min() == 0 and got.max() == 245  # the range survives: not all white


def test_folder_symlink_loop_reads_each_image_once(tmp_path):
    rng = np.random.default_rng(0)
    write_split(tmp_path, ["a", "b"], 1, lambda r: grey(r, 8), rng)
    # a/loop -> a: os.walk would go round and round
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    b = image_folders.load_image_folder(str(tmp_path))
    assert len(b.test) == 2


def test_folder_with_a_single_class_is_refused(tmp_path):
    write_split(tmp_path, ["only"], 2, lambda r: grey(r, 8), np.random.default_rng(0))
    with pytest.raises(CpscError, match="single class folder"):
        image_folders.load_image_folder(str(tmp_path))


def test_folder_32_bit_grey_images_with_8_bit_values_are_not_darkened(tmp_path):
    # 0..189 stored as 32-bit "I"
    small = np.arange(64, dtype=np.int32).reshape(8, 8) * 3
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(small, "I").save(tmp_path / c / "0.tif")
    b = image_folders.load_image_folder(str(tmp_path))
    np.testing.assert_array_equal(as_uint8(b.test.images)[0, 0], small.astype(np.uint8))
