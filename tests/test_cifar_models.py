"""CIFAR-scale model families: sizes, shapes, checkpoint key names, community-checkpoint loading."""

import pytest
import torch

from cpsc_lite import CpscError
from cpsc_lite.models import available_models, create_model
from cpsc_lite.cifar_models import guess_community_model, load_community_state_dict
import json


from cpsc_lite import checkpoint
from cpsc_lite.data import load_dataset

from conftest import flat, make_colour_npz, run_cli

ALL = [
    "resnet18",
    "resnet34",
    "resnet18_64",
    "resnet34_64",
    "wrn16_1",
    "wrn16_2",
    "wrn40_1",
    "wrn40_2",
    "vgg11_bn",
]
SMALL = ["wrn16_1", "wrn16_2", "wrn40_1"]  # cheap to run, one per shape-test


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def forward(model, *shape, **kw):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(*shape), **kw)


def test_all_registered_with_descriptions():
    models = available_models()
    for name in ALL:
        assert name in models and "parameters" in models[name]


# Exact counts of the reference architectures, and the rounded figures they are quoted by.
@pytest.mark.parametrize(
    "name,exact,approx",
    [
        ("resnet18", 11_173_962, 11.17e6),
        ("resnet34", 21_282_122, 21.28e6),
        ("resnet18_64", 11_173_962, 11.17e6),
        ("resnet34_64", 21_282_122, 21.28e6),
        ("wrn40_2", 2_243_546, 2.2e6 * 1.02),  # 2.24M
        ("vgg11_bn", 9_231_114, 9.2e6),
        ("wrn16_2", 691_674, 0.69e6),
        ("wrn40_1", 563_930, 0.56e6),
        ("wrn16_1", 175_066, 0.175e6),
    ],
)
def test_parameter_counts_10_classes(name, exact, approx):
    count = n_params(create_model(name, 10))
    assert count == exact
    assert abs(count - approx) / approx < 0.01


@pytest.mark.parametrize(
    "name,approx",
    [
        ("wrn16_1", 0.18e6),
        ("wrn16_2", 0.70e6),
        ("wrn40_1", 0.57e6),
        ("wrn40_2", 2.26e6),
    ],
)
def test_wrn_counts_as_usually_quoted_for_100_classes(name, approx):
    assert abs(n_params(create_model(name, 100)) - approx) / approx < 0.01


@pytest.mark.parametrize("name", ["resnet18", "wrn16_1", "vgg11_bn"])
@pytest.mark.parametrize("k", [10, 100])
def test_logits_and_features(name, k):
    model = create_model(name, k)
    logits, feats = forward(model, 2, 3, 32, 32, return_features=True)
    assert logits.shape == (2, k)
    assert feats.shape == (2, model.feature_dim)
    assert forward(model, 2, 3, 32, 32).shape == (2, k)


def test_feature_sizes():
    assert create_model("resnet34", 10).feature_dim == 512
    assert create_model("wrn40_2", 10).feature_dim == 128
    assert create_model("wrn16_1", 10).feature_dim == 64
    assert create_model("vgg11_bn", 10).feature_dim == 512


@pytest.mark.parametrize("name", ["resnet18", "wrn16_2", "vgg11_bn"])
def test_one_channel_input(name):
    model = create_model(name, 10, in_channels=1, img_size=28)
    assert forward(model, 2, 1, 28, 28).shape == (2, 10)


@pytest.mark.parametrize("size", [8, 16, 48])
@pytest.mark.parametrize("name", ["resnet18", "wrn16_1", "vgg11_bn"])
def test_other_image_sizes(name, size):
    model = create_model(name, 10, img_size=size)
    assert forward(model, 2, 3, size, size).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18_64", "resnet34_64", "vgg11_bn", "wrn16_1"])
def test_64x64_forward(name):
    model = create_model(name, 200, img_size=64)
    logits, feats = forward(model, 2, 3, 64, 64, return_features=True)
    assert logits.shape == (2, 200) and feats.shape == (2, model.feature_dim)


def test_64_variants_share_the_32_layout():
    for base in ("resnet18", "resnet34"):
        a, b = (
            create_model(base, 200).state_dict(),
            create_model(base + "_64", 200).state_dict(),
        )
        assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)


def test_resnet_key_names():
    sd = create_model("resnet34", 10).state_dict()
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.2.bn2.bias",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.running_var",
        "layer3.5.conv2.weight",
        "layer4.2.bn1.num_batches_tracked",
        "linear.weight",
        "linear.bias",
    ]:
        assert key in sd, key
    for key in [
        "layer1.0.shortcut.0.weight",
        "layer2.1.shortcut.0.weight",
        "fc.weight",
        "layer3.6.conv1.weight",
    ]:
        assert key not in sd, key
    assert sd["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1)
    assert sd["linear.weight"].shape == (10, 512)
    # stem 6 + 16 blocks x 12 + 3 projection shortcuts x 6 + head 2
    assert len(sd) == 218


def test_wrn_key_names():
    sd = create_model("wrn40_2", 100).state_dict()
    for key in [
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.conv1.weight",
        "block1.layer.0.convShortcut.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.5.conv2.weight",
        "bn1.running_var",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in sd, key
    for key in [
        "block1.layer.1.convShortcut.weight",
        "block1.layer.6.bn1.weight",
        "linear.weight",
    ]:
        assert key not in sd, key
    assert sd["fc.weight"].shape == (100, 128)
    assert sd["block3.layer.0.convShortcut.weight"].shape == (128, 64, 1, 1)
    # WRN-16-1: block 1 keeps 16 channels, so its first block has no shortcut conv.
    assert (
        "block1.layer.0.convShortcut.weight"
        not in create_model("wrn16_1", 10).state_dict()
    )


def test_vgg_key_names():
    sd = create_model("vgg11_bn", 10).state_dict()
    for key in [
        "block0.0.weight",
        "block0.0.bias",
        "block0.1.running_mean",
        "block2.3.weight",
        "block2.4.weight",
        "block4.4.running_var",
        "classifier.weight",
        "classifier.bias",
    ]:
        assert key in sd, key
    assert "block0.2.weight" not in sd and "block2.5.weight" not in sd
    assert sd["classifier.weight"].shape == (10, 512)


def _perturbed_state(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if v.is_floating_point():
            v.add_(torch.randn_like(v) * 0.1)
    return state


@pytest.mark.parametrize("name", SMALL + ["vgg11_bn"])
def test_load_round_trip_with_wrappers(name):
    src = create_model(name, 10)
    state = _perturbed_state(src)
    src.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    src.eval()
    with torch.no_grad():
        expected = src(x)
    wrapped = [
        state,
        {"module." + k: v for k, v in state.items()},
        {
            "state_dict": {"module." + k: v for k, v in state.items()},
            "epoch": 200,
            "best_acc1": 0.95,
        },
        {"model": state, "optimizer": {"lr": 0.1}},
    ]
    for obj in wrapped:
        dst = create_model(name, 10)
        load_community_state_dict(dst, obj)
        dst.eval()
        with torch.no_grad():
            assert torch.equal(dst(x), expected)


def test_load_survives_a_save_and_weights_only_load(tmp_path):
    src = create_model("wrn16_1", 100)
    path = tmp_path / "cifar100_wrn16_1.pth"
    torch.save(
        {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path
    )
    dst = create_model("wrn16_1", 100)
    load_community_state_dict(dst, torch.load(path, weights_only=True))
    assert all(
        torch.equal(a, b)
        for a, b in zip(src.state_dict().values(), dst.state_dict().values())
    )


def test_missing_num_batches_tracked_is_tolerated():
    state = {
        k: v
        for k, v in create_model("wrn16_1", 10).state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    load_community_state_dict(create_model("wrn16_1", 10), state)


def test_wrong_architecture_names_the_right_one():
    state = create_model("wrn16_2", 100).state_dict()
    with pytest.raises(CpscError) as err:
        load_community_state_dict(create_model("wrn40_2", 10), {"state_dict": state})
    msg = str(err.value)
    assert "missing" in msg and "block1.layer." in msg
    assert "shape mismatch" in msg and "fc.weight" in msg
    assert (
        "wrn16_2" in msg and "100 classes" in msg and "--teacher-model wrn16_2" in msg
    )

    with pytest.raises(CpscError) as err:
        load_community_state_dict(
            create_model("resnet18", 10), create_model("wrn16_1", 10).state_dict()
        )
    msg = str(err.value)
    assert "unexpected" in msg and "block1.layer.0" in msg and "wrn16_1" in msg


def test_wrong_class_count_is_explained():
    state = create_model("wrn16_1", 100).state_dict()
    with pytest.raises(
        CpscError,
        match=r"fc\.weight \(file \[100, 64\], model \[10, 64\]\).*100 classes",
    ):
        load_community_state_dict(create_model("wrn16_1", 10), state)


def test_guess_from_keys():
    assert (
        guess_community_model(create_model("wrn40_1", 10).state_dict())["name"]
        == "wrn40_1"
    )
    g = guess_community_model(create_model("vgg11_bn", 100, in_channels=1).state_dict())
    assert (g["name"], g["num_classes"], g["in_channels"], g["registered"]) == (
        "vgg11_bn",
        100,
        1,
        True,
    )
    resnet_keys = {k: torch.empty(0) for k in create_model("resnet34", 10).state_dict()}
    resnet_keys["linear.weight"] = torch.empty(10, 512)
    resnet_keys["conv1.weight"] = torch.empty(64, 3, 3, 3)
    assert guess_community_model(resnet_keys)["name"] == "resnet34"
    assert guess_community_model({"foo.weight": torch.zeros(1)}) is None


def test_not_a_state_dict():
    model = create_model("wrn16_1", 10)
    with pytest.raises(CpscError, match="not a state dict"):
        load_community_state_dict(model, {"epoch": 3, "best_acc1": 0.9})
    with pytest.raises(CpscError, match="not a state dict"):
        load_community_state_dict(model, [1, 2, 3])


# ------------------------------------------------------------ community teachers
@pytest.fixture(scope="module")
def colour32(tmp_path_factory):
    """A 10-class, 3-channel 32x32 dataset (CIFAR's shape) that needs no download."""
    return make_colour_npz(
        tmp_path_factory.mktemp("c32") / "shapes32.npz",
        num_classes=10,
        size=32,
        n_train=40,
        n_test=40,
    )


def save_community(path, model_name, num_classes=10, prefix="module.", wrap=True):
    """A randomly initialised model saved the way CMI/DataFree publish teachers: DataParallel keys, wrapped."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes, 3, 32)
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "best_acc": 0.1, "epoch": 200} if wrap else sd, path)
    return str(path), model


def test_community_teacher_distils_and_evaluates(tmp_path, capsys, colour32):
    path, model = save_community(tmp_path / "wrn16_1.pth", "wrn16_1")
    code, out, err = run_cli(
        capsys,
        "evaluate",
        path,
        "--teacher-model",
        "wrn16_1",
        "--dataset",
        f"npz:{colour32}",
    )
    assert code == 0, err
    assert "wrn16_1" in out and "accuracy" in out
    code, out, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        path,
        "--teacher-model",
        "wrn16_1",
        "--dataset",
        f"npz:{colour32}",
        "--out",
        tmp_path / "run",
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--no-progress",
        "--set",
        "ngf=8",
        "--set",
        "nz=16",
        "--set",
        "diagnostics=false",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"] == "wrn16_1" and metrics["iters"] == 2
    # The student checkpoint carries the dataset's normalisation (it came from the bundle, not the file).
    bundle = load_dataset(f"npz:{colour32}")
    meta = checkpoint.load(str(tmp_path / "run" / "student.pt"), "student")["meta"]
    assert (
        meta["mean"] == list(bundle.mean)
        and meta["num_classes"] == 10
        and "source_file" not in meta
    )


def test_community_teacher_loads_the_exact_weights(tmp_path, colour32):
    from cpsc_lite.teacher import load_teacher

    path, model = save_community(
        tmp_path / "bare.pth", "wrn16_1", prefix="module.", wrap=False
    )
    loaded, meta = load_teacher(path, load_dataset(f"npz:{colour32}"), "wrn16_1")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert meta["model"] == "wrn16_1" and meta["img_size"] == 32


def test_community_teacher_errors(tmp_path, capsys, colour32):
    path, _ = save_community(tmp_path / "wrn16_1.pth", "wrn16_1")
    # Without --teacher-model: today's message, which names the flag.
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        path,
        "--dataset",
        f"npz:{colour32}",
        "--out",
        tmp_path / "o",
    )
    assert (
        code == 2 and "not a cpsc_lite" in flat(err) and "--teacher-model" in flat(err)
    )
    # The wrong architecture: a strict load that names the right one.
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        path,
        "--teacher-model",
        "wrn16_2",
        "--dataset",
        f"npz:{colour32}",
        "--out",
        tmp_path / "o",
    )
    assert (
        code == 2 and "Traceback" not in err and "--teacher-model wrn16_1" in flat(err)
    )
    # The wrong dataset (class count): the shapes say so.
    four = make_colour_npz(
        tmp_path / "four.npz", num_classes=4, size=32, n_train=32, n_test=8
    )
    code, _, err = run_cli(
        capsys,
        "evaluate",
        path,
        "--teacher-model",
        "wrn16_1",
        "--dataset",
        f"npz:{four}",
    )
    assert code == 2 and "10 classes" in flat(err)
    # evaluate needs the dataset to build a community teacher.
    code, _, err = run_cli(capsys, "evaluate", path, "--teacher-model", "wrn16_1")
    assert code == 2 and "--dataset" in flat(err)
    # A file that needs full unpickling is refused, with the way out.
    import numpy as np

    torch.save(
        {"state_dict": {}, "best_acc": np.float64(0.9)}, tmp_path / "pickled.pth"
    )
    code, _, err = run_cli(
        capsys,
        "evaluate",
        tmp_path / "pickled.pth",
        "--teacher-model",
        "wrn16_1",
        "--dataset",
        f"npz:{colour32}",
    )
    assert code == 2 and "weights_only=false" in flat(err)


def test_cpsc_teacher_with_teacher_model_still_loads(tmp_path, capsys, digits_teacher):
    code, out, err = run_cli(
        capsys, "evaluate", digits_teacher, "--teacher-model", "cnn_base"
    )
    assert code == 0, err
    assert "accuracy" in out
