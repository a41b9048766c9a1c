"""The batch augmentations: what each transform may do to an image, and what it must not.

torchvision's transforms draw their random numbers differently, so these tests check each
transform's definition (every output is a mirror, a window, a crop resized back, an image with
one rectangle filled) rather than pixel equality with torchvision; RandAugment, whose ops can be
compared one by one, is checked against torchvision in test_randaugment.py.
"""
import pytest
import torch
import torch.nn.functional as F

from convmixer.augment import (Augment, augment_batch, batch_crop, batch_erase, batch_flip, batch_resized_crop,
                               resized_crop)
from convmixer.data import MEAN
from convmixer.randaugment import rand_augment


def images(n=64, h=32, w=32, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed=1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_about_half_the_images_and_leaves_the_input_alone():
    x = images(400)
    before = x.clone()
    out = batch_flip(x, gen())
    assert torch.equal(x, before)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all()  # every image is itself or its mirror, nothing in between
    assert 150 < mirrored.sum() < 250


def test_flip_cpu_path_is_the_where_path():
    x = images(100)
    flip = torch.rand(len(x), generator=gen()) < 0.5  # the draw batch_flip makes first
    assert torch.equal(batch_flip(x, gen()), torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x))


def test_pad_crop_returns_windows_of_the_reflect_padded_image():
    x, p = images(50), 4
    out = batch_crop(x, p, gen())
    padded = F.pad(x, (p,) * 4, mode="reflect")
    for img, pad in zip(out, padded):
        windows = pad.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32): every possible window
        assert (windows == img[:, None, None]).flatten(3).all(3).all(0).any()
    assert torch.equal(batch_crop(x, 0, gen()), x)


def reference_resized_crop(x, scale_min, g):
    """The same draws, through affine_grid + grid_sample (the textbook way to write the crop)."""
    n = len(x)
    side = (torch.rand(n, generator=g) * (1 - scale_min) + scale_min).sqrt()
    tx = (2 * torch.rand(n, generator=g) - 1) * (1 - side)
    ty = (2 * torch.rand(n, generator=g) - 1) * (1 - side)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = side, side, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@pytest.mark.parametrize("scale_min", [0.08, 0.75])
def test_resized_crop_is_the_affine_crop(scale_min):
    x = images(40)
    torch.testing.assert_close(batch_resized_crop(x, scale_min, gen()), reference_resized_crop(x, scale_min, gen()),
                               rtol=0, atol=1e-5)


def test_resized_crop_of_the_whole_image_is_the_image():
    x = images(8)
    assert batch_resized_crop(x, 1.0, gen()) is x


def inner(t: torch.Tensor, ring: int) -> torch.Tensor:
    """All but the outermost ``ring`` rings of output pixels (half the upsampling factor).

    There the two definitions part: torchvision crops first and so repeats the window's edge
    pixel, while a window cut from the image samples the pixel just outside it as well.
    """
    return t[..., ring:-ring, ring:-ring]


def test_resized_crop_of_the_centred_half_is_a_2x_bilinear_upsampling():
    x = images(4)
    half, zero = torch.full((4,), 0.5), torch.zeros(4)
    expected = F.interpolate(x[..., 8:24, 8:24], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(inner(resized_crop(x, half, zero, zero), 1), inner(expected, 1), rtol=0, atol=1e-6)


def test_resized_crop_window_position():
    """A quarter-size window in the top-left corner is the top-left 8 x 8 block upsampled 4x."""
    x = images(4)
    side, t = torch.full((4,), 0.25), torch.full((4,), -0.75)
    expected = F.interpolate(x[..., :8, :8], scale_factor=4, mode="bilinear", align_corners=False)
    out = resized_crop(x, side, t, t)
    torch.testing.assert_close(inner(out, 2), inner(expected, 2), rtol=0, atol=1e-6)
    # along the image's own edges the two agree: there is nothing outside to sample
    torch.testing.assert_close(out[..., :2, :-2], expected[..., :2, :-2], rtol=0, atol=1e-6)


def test_erase_fills_one_rectangle_with_the_mean():
    x = images(300)
    out = batch_erase(x, 1.0, gen(), MEAN)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    fractions = []
    for img, src in zip(out, x):
        changed = (img != src).any(0)
        rows, cols = changed.any(1).nonzero().squeeze(1), changed.any(0).nonzero().squeeze(1)
        box = img[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.allclose(box, mean.expand_as(box))  # one solid rectangle of the mean colour
        fractions.append(box[0].numel() / 1024)
    assert min(fractions) >= 0.01 and max(fractions) <= 0.45  # area in [0.02, 0.33] of the image, rounded
    assert torch.equal(batch_erase(x, 0.0, gen(), MEAN), x)


def test_erase_probability_is_respected():
    x = images(1000, 8, 8)
    erased = (batch_erase(x, 0.25, gen(), MEAN) != x).flatten(1).any(1).float().mean().item()
    assert abs(erased - 0.25) < 0.05


@pytest.mark.parametrize("n,m", [(1, 8), (2, 12), (3, 30)])
def test_rand_augment_cpu_path_equals_the_gpu_path_over_several_rounds(n, m):
    """The CPU path keeps the batch sorted between rounds; every image must still get its own ops."""
    x = torch.round(images(300) * 255) / 255
    assert torch.equal(rand_augment(x, n, m, gen(), grouped=True), rand_augment(x, n, m, gen(), grouped=False))


def test_augment_batch_keeps_shape_range_and_input():
    x = images(32)
    before = x.clone()
    aug = Augment(crop="resized", scale_min=0.5, flip=True, ra_n=2, ra_m=12, erase_p=0.5)
    out = augment_batch(x, aug, gen(), MEAN)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, augment_batch(x, aug, gen(), MEAN))  # reproducible from the generator


def test_erase_fills_with_the_colour_it_is_given():
    x = images(50)
    fill = (0.1, 0.5, 0.9)
    out = batch_erase(x, 1.0, gen(), fill)
    changed = (out != x).any(1, keepdim=True).expand_as(out)  # (N, 3, H, W): the erased pixels
    assert changed.any(1).flatten(1).any(1).all()  # every image has a rectangle
    assert torch.equal(out[changed], torch.tensor(fill).view(1, 3, 1, 1).expand_as(out)[changed])


def test_flip_false_leaves_out_the_mirror_and_flip_true_uses_it():
    x = images(64)
    no_flip = Augment(crop="none", flip=False, ra_n=0)
    assert torch.equal(augment_batch(x, no_flip, gen(), MEAN), x)  # nothing else to apply: the batch itself
    flipped = augment_batch(x, Augment(crop="none", flip=True, ra_n=0), gen(), MEAN)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert 16 < int(mirrored.sum()) < 48  # about half the images mirrored
    # with a crop as well, flip=False still never mirrors: each image is a window of its own padded copy
    cropped = augment_batch(x, Augment(crop="pad", padding=2, flip=False, ra_n=0), gen(), MEAN)
    assert torch.equal(cropped, batch_crop(x, 2, gen()))
    assert not torch.equal(augment_batch(x, Augment(crop="pad", padding=2, flip=True, ra_n=0), gen(), MEAN), cropped)
