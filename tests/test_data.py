import numpy as np
import torch

from cpsc_lite.data import (
    ArrayDataset,
    SCENE_CLASSES,
    denormalize,
    load_dataset,
    make_scenes,
    make_shapes,
)

from conftest import make_colour_npz


def test_digits_bundle():
    b = load_dataset("digits")
    assert (b.num_classes, b.channels, b.img_size) == (10, 1, 8)
    assert len(b.train) == 1347 and len(b.test) == 450
    x, y = b.test[0]
    assert x.shape == (1, 8, 8) and isinstance(y, int)
    # normalised with the training split's statistics
    xs, _ = b.train.batch(slice(0, len(b.train)))
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1) < 0.05


def test_shapes_is_deterministic_and_balanced():
    x1, y1 = make_shapes(200, seed=5)
    x2, y2 = make_shapes(200, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (200, 16, 16, 3) and x1.dtype == np.uint8
    assert set(np.unique(y1)) == set(range(10))
    b = load_dataset("shapes")
    assert (b.num_classes, b.channels, b.img_size) == (10, 3, 16) and len(
        b.class_names
    ) == 10


def test_scenes_are_deterministic_and_balanced():
    x1, y1 = make_scenes(300, seed=5)
    x2, y2 = make_scenes(300, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (300, 32, 32, 3) and x1.dtype == np.uint8
    assert set(np.unique(y1)) == set(range(30)) and len(SCENE_CLASSES) == 30 == len(
        set(SCENE_CLASSES)
    )
    assert not np.array_equal(make_scenes(5, seed=6)[0], x1[:5])


def test_npz_colour_dataset_reads_shape_and_classes(tmp_path):
    path = make_colour_npz(tmp_path / "c.npz", num_classes=5, size=12)
    b = load_dataset(f"npz:{path}")
    assert (b.num_classes, b.channels, b.img_size) == (5, 3, 12)
    assert b.train is not None and b.name == "npz:c"


def test_npz_class_names(tmp_path):
    path = tmp_path / "named.npz"
    np.savez(
        path,
        x_test=np.zeros((3, 8, 8), np.uint8),
        y_test=np.array([0, 1, 1]),
        class_names=np.array(["cat", "dog"]),
    )
    assert load_dataset(f"npz:{path}").class_names == ["cat", "dog"]


def test_array_dataset_keeps_uint8_and_normalises_per_batch():
    images = torch.full((4, 3, 2, 2), 255, dtype=torch.uint8)
    ds = ArrayDataset(
        images, torch.arange(4), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    assert ds.images.dtype == torch.uint8
    x, y = ds.batch(torch.tensor([1, 3]))
    assert torch.allclose(x, torch.full((2, 3, 2, 2), 2.0)) and y.tolist() == [1, 3]
    assert torch.allclose(
        denormalize(x, ds.mean.flatten().tolist(), ds.std.flatten().tolist()),
        torch.ones(2, 3, 2, 2),
    )
