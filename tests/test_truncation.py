"""Truncated sampling (the truncation trick): what is drawn, what runs record, the CLI."""

import numpy as np
import pytest
import torch

from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.generator import ConditionalGenerator, generate_per_class


def _trained_like_generator():
    torch.manual_seed(0)
    gen = ConditionalGenerator(num_classes=3, img_size=8, channels=1, nz=16, ngf=8)
    # class-specific scales and shifts, and running statistics, as after training
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if ".gamma." in name or ".beta." in name:
                p.add_(0.5 * torch.randn_like(p))
    gen.train()
    with torch.no_grad():
        for _ in range(5):
            gen(*gen.sample_inputs(64))
    return gen.eval()


def test_truncation_one_draws_the_untruncated_noise():
    gen = _trained_like_generator()
    a, la = generate_per_class(gen, 4, seed=3)
    b, lb = generate_per_class(gen, 4, seed=3, truncation=1.0)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_truncation_scales_the_noise():
    gen = _trained_like_generator()
    z = torch.randn(3 * 4, gen.nz, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(3).repeat_interleave(4)
    with torch.no_grad():
        expected = gen(0.5 * z, labels)
    got, _ = generate_per_class(gen, 4, seed=3, truncation=0.5)
    assert torch.allclose(got, expected)


def test_truncation_zero_gives_one_image_per_class_and_less_spread():
    gen = _trained_like_generator()
    x0, _ = generate_per_class(gen, 5, seed=1, truncation=0.0)
    x0 = x0.view(3, 5, -1)
    assert torch.allclose(x0, x0[:, :1].expand_as(x0))  # identical within a class
    assert not torch.allclose(x0[0, 0], x0[1, 0])  # but the classes differ
    spread = [
        generate_per_class(gen, 20, seed=1, truncation=p)[0]
        .view(3, 20, -1)
        .std(1)
        .mean()
        for p in (1.0, 0.5, 0.1)
    ]
    assert spread[0] > spread[1] > spread[2]


@pytest.mark.parametrize("psi", [-0.1, 1.5, float("nan")])
def test_truncation_outside_unit_interval_is_refused(psi):
    gen = _trained_like_generator()
    with pytest.raises(ValueError, match="truncation must lie in"):
        generate_per_class(gen, 2, truncation=psi)


def test_truncation_sweep_measures_each_psi():
    from cpsc_lite.diagnostics import PixelJudge, truncation_sweep
    from cpsc_lite.bundle import ArrayDataset
    from cpsc_lite.models import create_model

    gen = _trained_like_generator()
    teacher = create_model("cnn_small", num_classes=3, in_channels=1, img_size=8).eval()
    train = load_dataset("digits").train
    keep = train.labels < 3
    judge = PixelJudge(
        ArrayDataset(train.images[keep], train.labels[keep], [0.5], [0.25])
    )
    rows = truncation_sweep(gen, teacher, [1.0, 0.0], [0.5], [0.25], judge, per_class=6)
    assert [r["psi"] for r in rows] == [1.0, 0.0]
    for r in rows:
        assert 0 <= r["teacher_agreement"] <= 1 and 0 <= r["pixel_recognition"] <= 1
    # psi = 0: every image of a class is the same, so no within-class diversity
    assert rows[1]["diversity"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["diversity"] > 1e-4


def test_sample_command_draws_truncated_samples(tmp_path, digits_teacher, capsys):
    from cpsc_lite.cli import main
    from cpsc_lite.runner import run_distill

    run = tmp_path / "run"
    run_distill(
        digits_teacher,
        load_dataset("digits"),
        make_config(
            "cpsc", iters=4, batch_size=32, ngf=8, nz=16, eval_every=4, log_every=2
        ),
        str(run),
        progress=False,
    )
    args = ["sample", "--generator", str(run / "generator.pt"), "--per-class", "3"]
    out = tmp_path / "typical.npz"
    assert main(args + ["--truncation", "0", "--out", str(out)]) == 0
    x = np.load(out)["x_test"].reshape(10, 3, -1)
    assert (x == x[:, :1]).all()  # psi = 0: one image per class
    assert main(args + ["--truncation", "0.5", "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0
    capsys.readouterr()
    assert main(args + ["--truncation", "2", "--out", str(tmp_path / "bad.png")]) != 0
    assert "--truncation 2 is outside [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
