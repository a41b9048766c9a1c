"""What ConvMixer computes, measured: the analyses the concept chapters check their claims with.

Chapter 1 (patch embedding)::

    patchify            cut images into flattened p x p patches, in the order of ``Conv2d``'s weights

Chapter 2 (spatial mixing)::

    receptive_field     pixels seen by one token after d layers: p (1 + d (k - 1))
    gradient_map        |gradient| of one output token w.r.t. every input pixel
    nonzero_extent      the box holding a map's nonzero entries
    gradient_extent     the receptive field, measured from the gradient of one output token
    layers_to_global    how many layers until every token sees the whole image

What each piece costs is :mod:`convmixer.costs`; the figures drawn from these are in
:mod:`convmixer.book.plots` (matplotlib) and :mod:`convmixer.book.explorers` (movable figures).
"""
from __future__ import annotations

import copy
import math

import torch

from ..model import ConvMixer


# --------------------------------------------------------------------------- patches

def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """Cut (N, C, H, W) images into (N, (H/p)(W/p), C p^2) flattened, non-overlapping p x p patches.

    Patches come in row-major order of the token grid (the order of ``conv_out.flatten(2)``), and
    each patch is flattened channel first, then row, then column: the order of a ``Conv2d``
    weight ``(h, C, p, p)`` flattened to ``(h, C p^2)``.  So ``patchify(x, p) @ W.flatten(1).T + b``
    is the patch convolution written as ViT's linear patch embedding.
    """
    n, c, hgt, wid = images.shape
    if hgt % p or wid % p:
        raise ValueError(f"image size {hgt}x{wid} is not a multiple of the patch size {p}")
    x = images.reshape(n, c, hgt // p, p, wid // p, p)          # n, c, row, i, col, j
    x = x.permute(0, 2, 4, 1, 3, 5)                              # n, row, col, c, i, j
    return x.reshape(n, (hgt // p) * (wid // p), c * p * p)


# --------------------------------------------------------------------------- receptive field

def receptive_field(kernel_size: int, patch_size: int, depth: int) -> int:
    """Side, in input pixels, of the square region one output token of d ConvMixer layers depends on.

    Every depthwise k x k convolution (stride 1) widens the region by k - 1 tokens, the pointwise
    convolutions and the residual add nothing, so after d layers a token sees 1 + d (k - 1)
    tokens per side, and each token is a p x p patch: p (1 + d (k - 1)) pixels (before the image
    border clips it).
    """
    return patch_size * (1 + depth * (kernel_size - 1))


def gradient_map(model: ConvMixer, image_size: int, token: tuple[int, int] | None = None,
                 seed: int = 0) -> torch.Tensor:
    """Absolute gradient of one output token (its channels summed) w.r.t. the input, summed over colour: (H, W) float64.

    A float64 copy of the model is run in eval mode (BatchNorm with running statistics: in
    training mode the batch mean and variance would connect every pixel to every output) on one
    random image, so that a gradient is zero exactly where the token does not depend on the pixel;
    ``model`` itself is left as it was (its dtype, its mode, its parameters' gradients).
    ``token`` is (row, col) in the token grid; the centre token by default.
    """
    model = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.config.in_channels, image_size, image_size, generator=g, dtype=torch.float64,
                    requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # these convolutions are tiny: one thread is many times faster
    try:
        z = model.features(x)                               # 1, h, G, G
        gi, gj = z.shape[2], z.shape[3]
        i, j = token if token is not None else (gi // 2, gj // 2)
        z[0, :, i, j].sum().backward()
    finally:
        torch.set_num_threads(threads)
    return x.grad[0].abs().sum(0)


def nonzero_extent(grad: torch.Tensor) -> tuple[int, int]:
    """Height and width of the smallest box holding every nonzero entry of a 2-D map."""
    rows = torch.nonzero(grad.abs().sum(1)).flatten()
    cols = torch.nonzero(grad.abs().sum(0)).flatten()
    if len(rows) == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def gradient_extent(kernel_size: int, patch_size: int, depth: int, dim: int = 8, margin: int = 2,
                    seed: int = 0) -> tuple[int, int]:
    """Receptive field of the centre token, *measured*: the extent of its nonzero input gradient.

    Builds the library's ``ConvMixer`` (width ``dim``: the receptive field does not depend on h)
    on an image large enough that the field is not clipped by the border (the formula plus
    ``margin`` tokens on each side), and returns (height, width) in pixels.
    """
    torch.manual_seed(seed)
    grid = 1 + depth * (kernel_size - 1) + 2 * margin
    model = ConvMixer(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size)
    return nonzero_extent(gradient_map(model, grid * patch_size, seed=seed))


def layers_to_global(kernel_size: int, patch_size: int, image_size: int) -> int:
    """Fewest layers after which *every* token (corners included) depends on every pixel.

    A corner token must reach the opposite corner, G - 1 tokens away on a G x G grid, and each
    layer reaches (k - 1) / 2 tokens further in each direction.
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and at least 3 to mix tokens, got {kernel_size}")
    grid = image_size // patch_size
    return math.ceil((grid - 1) / ((kernel_size - 1) // 2))
