import pytest
import torch

from cpsc_lite.generator import (
    ClassConditionalBatchNorm2d,
    ConditionalGenerator,
    stage_sizes,
)


@pytest.mark.parametrize(
    "size,expected",
    [
        (8, [2, 4, 8]),
        (28, [7, 14, 28]),
        (32, [8, 16, 32]),
        (10, [3, 5, 10]),
        (64, [16, 32, 64]),
    ],
)
def test_stage_sizes(size, expected):
    assert stage_sizes(size) == expected


def test_64px_generator_has_the_authors_size():
    """Tiny-ImageNet: a 16x16 seed map and two upsampling stages, about 8.8M parameters at ngf=64."""
    g = ConditionalGenerator(num_classes=200, img_size=64, channels=3, nz=256, ngf=64)
    assert g.sizes == [16, 32, 64]
    n = sum(p.numel() for p in g.parameters())
    assert 8.4e6 < n < 9.0e6, n


@pytest.mark.parametrize("size", [8, 10, 16, 28, 32, 50, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(size, channels):
    g = ConditionalGenerator(
        num_classes=5, img_size=size, channels=channels, nz=16, ngf=8
    )
    z, y = g.sample_inputs(4)
    assert g(z, y).shape == (4, channels, size, size)


def test_same_noise_different_class_gives_different_images():
    torch.manual_seed(0)
    g = ConditionalGenerator(num_classes=3, img_size=8, channels=1, nz=16, ngf=8)
    # Make the class embeddings differ from their neutral initialisation, as training does.
    for m in g.modules():
        if isinstance(m, ClassConditionalBatchNorm2d):
            torch.nn.init.normal_(m.gamma.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.beta.weight, 0.0, 0.3)
    g.eval()
    z = torch.randn(1, 16).repeat(3, 1)
    x = g(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])
    # ...and the same (z, y) twice gives the same image
    assert torch.allclose(g(z[:1], torch.tensor([1])), x[1:2], atol=1e-6)


def test_unconditional_generator_ignores_the_label():
    torch.manual_seed(0)
    g = ConditionalGenerator(
        num_classes=3, img_size=8, channels=1, nz=16, ngf=8, conditional=False
    ).eval()
    z = torch.randn(1, 16).repeat(3, 1)
    x = g(z, torch.tensor([0, 1, 2]))
    assert torch.allclose(x[0], x[1]) and torch.allclose(x[1], x[2])


def test_ccbn_starts_as_plain_batchnorm():
    bn = ClassConditionalBatchNorm2d(4, num_classes=3)
    x = torch.randn(6, 4, 3, 3)
    out = bn(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    ref = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert torch.allclose(out, ref, atol=1e-5)


def test_gradients_reach_class_embeddings():
    g = ConditionalGenerator(num_classes=4, img_size=8, channels=3, nz=8, ngf=8)
    z, y = g.sample_inputs(8)
    g(z, y).pow(2).mean().backward()
    assert g.bn0.gamma.weight.grad.abs().sum() > 0
    assert g.bn_out.beta.weight.grad.abs().sum() > 0
