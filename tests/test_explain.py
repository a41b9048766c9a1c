"""convmixer.book.receptive_fields and the concept figures' images: patches, measured receptive fields, mosaics."""
import numpy as np
import pytest
import torch

from convmixer.book.receptive_fields import gradient_extent, gradient_map, patchify, receptive_field
from convmixer.model import ConvMixer
from convmixer.book.plots import tile_mosaic
from convmixer.book.plots import patch_mosaic


def test_gradient_map_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grad = gradient_map(model, 16)
    assert model.training and all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)     # BatchNorm's running statistics too
    assert grad.dtype == torch.float64 and grad.shape == (16, 16)
    assert gradient_map(model, 16).equal(grad)                       # and a second call sees the same model


@pytest.mark.parametrize("k,p,d", [(3, 2, 1), (5, 1, 2)])
def test_measured_receptive_field_is_the_formula(k, p, d):
    assert gradient_extent(k, p, d, dim=4) == (receptive_field(k, p, d),) * 2


def test_patchify_is_the_patch_convolution():
    torch.manual_seed(0)
    x, conv = torch.randn(2, 3, 8, 8), torch.nn.Conv2d(3, 5, 4, stride=4)
    linear = patchify(x, 4) @ conv.weight.flatten(1).T + conv.bias
    assert torch.allclose(linear, conv(x).flatten(2).transpose(1, 2), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(x, 3)


def test_tile_mosaic_places_tiles_row_by_row_with_gaps():
    tiles = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 2, 2)
    out = tile_mosaic(tiles, ncols=3, gap=1, fill=-1)
    assert out.shape == (1, 2 * 3 - 1, 3 * 3 - 1)
    assert out[0, 0, 0] == 0 and out[0, 0, 3] == 1 and out[0, 3, 3] == 4   # tile i at (i // 3, i % 3)
    assert out[0, 2].eq(-1).all() and out[0, 3:, 6:].eq(-1).all()          # a gap row; the empty sixth place
    assert tile_mosaic(tiles[:1], ncols=3, gap=1, fill=-1).equal(tiles[0])


def test_patch_mosaic_puts_gaps_between_patches():
    image = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    out = patch_mosaic(image, p=2, scale=1, gap=1, background=0.0)
    assert out.shape == (5, 5, 3) and out[2].sum() == 0 and out[:, 2].sum() == 0
    assert np.all(out[:2, :2] == 1.0)
