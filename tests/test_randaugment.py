"""The batched RandAugment against torchvision's, image by image.

The reference is ``torchvision.transforms.autoaugment._apply_op``: the function
``RandAugment.forward`` calls for each op, so it carries RandAugment's own
parameterisation (shear through atan, int translations, the shear centre).
"""
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import RandAugment, _apply_op

from convmixer.randaugment import OPS, apply_ops, draw_ops, magnitudes, rand_augment

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
EIGHT_BIT = ("Posterize", "Solarize", "Equalize")  # torchvision defines these on uint8 only
SIZES = [(32, 32), (24, 40)]


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Real-looking test images: smooth colour fields plus a little noise, on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 4, w // 4, generator=g)
    x = 0.8 * F.interpolate(coarse, size=(h, w), mode="bilinear") + 0.2 * torch.rand(n, 3, h, w, generator=g)
    x = torch.round(x * 255) / 255
    if n >= 2:  # channels AutoContrast and Equalize leave alone
        x[0, 1] = 128 / 255  # constant
        x[1, 2] = 153 / 255  # almost constant: fewer than 255 pixels below the maximum, Equalize's step is 0
        x[1, 2, 0, :5] = 51 / 255
    return x


def reference(x: torch.Tensor, name: str, m: int, sign: torch.Tensor, uint8: bool) -> torch.Tensor:
    """torchvision's op on each image in turn, on float or on uint8 images."""
    mags, signed = RandAugment()._augmentation_space(31, tuple(x.shape[-2:]))[name]
    out = []
    for img, s in zip(x, sign.tolist()):
        magnitude = float(mags[m]) * (s if signed else 1.0) if mags.ndim else 0.0
        if uint8:
            img_u8 = torch.round(img * 255).to(torch.uint8)
            out.append(_apply_op(img_u8, name, magnitude, InterpolationMode.NEAREST, None).float() / 255)
        else:
            out.append(_apply_op(img, name, magnitude, InterpolationMode.NEAREST, None))
    return torch.stack(out)


def forced(x: torch.Tensor, name: str, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our op on the whole batch, with alternating signs; returns (output, signs)."""
    sign = torch.tensor([1.0, -1.0]).repeat(len(x) // 2 + 1)[: len(x)]
    return apply_ops(x, torch.full((len(x),), OPS.index(name)), sign, m), sign


@pytest.mark.parametrize("m", [0, 7, 12, 30])
@pytest.mark.parametrize("size", SIZES)
def test_magnitudes_are_torchvisions(m, size):
    ours = magnitudes(m, *size)
    for name, (mags, _) in RandAugment()._augmentation_space(31, size).items():
        if mags.ndim:
            assert ours[name] == float(mags[m]), name


@pytest.mark.parametrize("name", [op for op in OPS if op not in EIGHT_BIT])
@pytest.mark.parametrize("m", [12, 30])
@pytest.mark.parametrize("size", SIZES)
def test_matches_torchvision_on_float_images(name, m, size):
    x = smooth_images(6, *size)
    ours, sign = forced(x, name, m)
    expected = reference(x, name, m, sign, uint8=False)
    if name in GEOMETRIC:  # nearest pixel: a half-pixel tie may round the other way on another BLAS
        assert (ours == expected).all(dim=1).float().mean() >= 0.999
    else:
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("m", [12, 30])
@pytest.mark.parametrize("size", SIZES)
def test_matches_torchvision_on_uint8_images(name, m, size):
    """What RandAugment does to uint8 CIFAR images: 8-bit ops exactly; blends up to truncation.

    torchvision truncates each blend to uint8 and, for Color and Contrast, also
    truncates the grey image it blends with, so those differ by under 2/255.
    """
    x = smooth_images(6, *size)
    ours, sign = forced(x, name, m)
    expected = reference(x, name, m, sign, uint8=True)
    if name in GEOMETRIC:
        assert (ours == expected).all(dim=1).float().mean() >= 0.999
        return
    atol = {"Brightness": 1, "AutoContrast": 1, "Color": 2, "Contrast": 2, "Sharpness": 2}.get(name, 0) / 255
    torch.testing.assert_close(ours, expected, rtol=0, atol=atol + 1e-6)


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize"])
def test_flat_channels_are_left_alone(name):
    x = smooth_images(4, 32, 32)
    ours, _ = forced(x, name, 9)
    torch.testing.assert_close(ours[0, 1], x[0, 1], rtol=0, atol=0)
    if name == "Equalize":
        torch.testing.assert_close(ours[1, 2], x[1, 2], rtol=0, atol=0)
    assert not torch.equal(ours[2], x[2])


@pytest.mark.parametrize("name", GEOMETRIC)
def test_magnitude_zero_geometry_is_identity(name):
    x = torch.rand(4, 3, 32, 32)
    ours, _ = forced(x, name, 0)
    assert torch.equal(ours, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_and_range(dtype):
    x = torch.rand(8, 3, 24, 40, dtype=dtype)  # not on the 8-bit grid
    out = rand_augment(x, 3, 30, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype
    assert out.min() >= 0 and out.max() <= 1


def test_reproducible_from_the_generator():
    x = smooth_images(16, 32, 32)
    a = rand_augment(x, 2, 12, torch.Generator().manual_seed(1))
    b = rand_augment(x, 2, 12, torch.Generator().manual_seed(1))
    c = rand_augment(x, 2, 12, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_is_n_rounds_of_apply_ops():
    x = smooth_images(16, 32, 32)
    out = rand_augment(x, 2, 9, torch.Generator().manual_seed(5))
    g, y = torch.Generator().manual_seed(5), x
    for _ in range(2):
        op, sign = draw_ops(len(y), g, y.device)
        y = apply_ops(y, op, sign, 9)
    assert torch.equal(out, y)


def test_each_image_draws_its_own_op():
    op, sign = draw_ops(4000, torch.Generator().manual_seed(0), "cpu")
    freq = torch.bincount(op, minlength=len(OPS)) / len(op)
    assert len(freq) == len(OPS) and ((freq > 0.05) & (freq < 0.095)).all()  # 1/14 = 0.071
    assert set(sign.tolist()) == {-1.0, 1.0}
    # one image repeated: different draws give different results
    x = smooth_images(1, 32, 32).expand(64, -1, -1, -1)
    out = rand_augment(x, 1, 15, torch.Generator().manual_seed(0))
    assert len(torch.unique(out.flatten(1), dim=0)) >= 10


def test_no_data_dependent_host_code():
    """On meta tensors (shapes, no data) any .item(), boolean-mask indexing or
    Python branch on a value raises, so passing here means one round never waits
    for the device."""
    x = torch.empty(8, 3, 32, 32, device="meta")
    op = torch.empty(8, dtype=torch.long, device="meta")
    sign = torch.empty(8, device="meta")
    assert apply_ops(x, op, sign, 12).shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_sync_on_cuda():
    x = smooth_images(64, 32, 32).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    rand_augment(x, 2, 12, g)  # warm up lazy CUDA initialisation
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = rand_augment(x, 2, 12, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape


def test_arguments_are_checked():
    x = torch.rand(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(rand_augment(x, 0, 9, g), x)
    with pytest.raises(ValueError):
        rand_augment(x, 2, 31, g)
    with pytest.raises(ValueError):
        rand_augment(x[:, :1], 2, 9, g)


def test_augment_batch_uses_it():
    from convmixer.augment import Augment, augment_batch
    from convmixer.data import MEAN

    x = smooth_images(8, 32, 32)
    aug = Augment(flip=False, ra_n=2, ra_m=9)
    out = augment_batch(x, aug, torch.Generator().manual_seed(3), MEAN)
    assert torch.equal(out, rand_augment(x, 2, 9, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("m", [0, 12, 30])
def test_grouped_cpu_path_equals_the_sync_free_path(m):
    """The CPU path (each op on its own images) returns exactly what the GPU path (where) does."""
    g = torch.Generator().manual_seed(m)
    x = torch.rand(300, 3, 32, 32, generator=g)
    op, sign = draw_ops(len(x), g, x.device)
    assert torch.equal(apply_ops(x, op, sign, m, grouped=True), apply_ops(x, op, sign, m, grouped=False))
