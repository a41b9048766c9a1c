"""Matplotlib figures of the concept chapters: an image cut into patches, and receptive fields.

    patch_mosaic           an image with gaps between its p x p patches
    plot_patch_grid        ch. 1  images (rows) cut into patches of several sizes (columns)
    plot_receptive_fields  ch. 2  the measured receptive field of the centre token, per k and d
    draw_gradient          one such panel: the gradient's magnitude on a log scale, the formula's square dashed

The numbers behind them are :mod:`convmixer.explain`'s and :mod:`convmixer.costs`'.  (Figures of a
trained model are :mod:`convmixer.plot`; movable ones, :mod:`convmixer.explorers`.)
"""
from __future__ import annotations

from typing import Sequence

import torch

from .explain import gradient_map, receptive_field
from .model import ConvMixer
from .plot import tile_mosaic


def patch_mosaic(image: torch.Tensor, p: int, scale: int = 8, gap: int = 2, background: float = 1.0):
    """A (C, H, W) uint8 or [0, 1] image as an H x W x C float array with ``gap`` pixels between patches.

    The image is enlarged ``scale`` times (nearest neighbour) so that the gaps are thinner than a
    pixel of the original; used to draw "the image cut into p x p patches".
    """
    img = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    c, hgt, wid = img.shape
    if hgt % p or wid % p:
        raise ValueError(f"image size {hgt}x{wid} is not a multiple of the patch size {p}")
    big = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    gh, gw, s = hgt // p, wid // p, p * scale
    tiles = big.reshape(c, gh, s, gw, s).permute(1, 3, 0, 2, 4).reshape(gh * gw, c, s, s)  # row-major patches
    return tile_mosaic(tiles, gw, gap, background).permute(1, 2, 0).numpy()


def plot_patch_grid(images: torch.Tensor, titles: Sequence[str], patch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
                    width: float = 10):
    """Figure: each image (a row) cut into p x p patches for each p (a column)."""
    import matplotlib.pyplot as plt

    rows, cols = len(images), len(patch_sizes)
    fig, axes = plt.subplots(rows, cols, figsize=(width, width * rows / cols * 1.08), squeeze=False)
    for r, (img, title) in enumerate(zip(images, titles)):
        for c, p in enumerate(patch_sizes):
            ax = axes[r, c]
            gap = 1 if p == 1 else 3
            ax.imshow(patch_mosaic(img, p, scale=8, gap=gap), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if r == 0:
                g = img.shape[-1] // p
                ax.set_title(f"p = {p}\n{g}x{g} = {g * g} tokens\nof 3·{p}² = {3 * p * p} numbers", fontsize=10)
            if c == 0:
                ax.set_ylabel(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_receptive_fields(kernel_sizes: Sequence[int] = (3, 5, 9), depths: Sequence[int] = (1, 2, 4, 8),
                          patch_size: int = 2, image_size: int = 136, dim: int = 8, width: float = 9.5, seed: int = 0):
    """Figure: log10 of the absolute gradient of the centre token w.r.t. the input, per kernel size (row) and depth (column).

    The dashed square is the formula p (1 + d (k - 1)); the colour shows the gradient inside it.
    """
    import matplotlib.pyplot as plt

    rows, cols = len(kernel_sizes), len(depths)
    fig, axes = plt.subplots(rows, cols, figsize=(width, width * rows / cols * 0.95), squeeze=False,
                             layout="constrained")
    for r, k in enumerate(kernel_sizes):
        for c, d in enumerate(depths):
            torch.manual_seed(seed)
            model = ConvMixer(dim=dim, depth=d, kernel_size=k, patch_size=patch_size)
            grad = gradient_map(model, image_size, seed=seed)
            im = draw_gradient(axes[r, c], grad, k, patch_size, d)
            if r == 0:
                axes[r, c].set_title(f"d = {d} layer{'s' if d > 1 else ''}", fontsize=11)
            if c == 0:
                axes[r, c].set_ylabel(f"k = {k}", fontsize=11)
    bar = fig.colorbar(im, ax=axes, shrink=0.6, pad=0.02, extend="min")
    bar.set_label("log10 |gradient| / max  (grey: exactly 0)")
    fig.suptitle(f"Which input pixels the centre token depends on (p = {patch_size}, "
                 f"{image_size}x{image_size} input)", fontsize=12)
    return fig


def draw_gradient(ax, grad: torch.Tensor, k: int, p: int, d: int):
    """Into ``ax``: log10 of the absolute gradient over its maximum, eight decades, exact zeros in grey; the formula's square dashed."""
    import matplotlib.patches as mpatches

    size = grad.shape[-1]
    rel = grad / grad.max()
    shown = torch.where(rel > 0, rel.clamp_min(1e-300).log10(), torch.tensor(float("nan"), dtype=grad.dtype))
    im = ax.imshow(shown.numpy(), cmap="magma", vmin=-8, vmax=0, interpolation="nearest")
    ax.set_facecolor("#d9d9d9")
    rf = receptive_field(k, p, d)
    centre = (size // p // 2) * p + p / 2 - 0.5             # centre of the centre token, in pixels
    ax.add_patch(mpatches.Rectangle((centre - rf / 2, centre - rf / 2), rf, rf, fill=False,
                                    edgecolor="#1f77b4", linestyle="--", linewidth=1.3))
    ax.set_xlim(-0.5, size - 0.5), ax.set_ylim(size - 0.5, -0.5)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_xlabel(f"p(1 + d(k-1)) = {rf} px", fontsize=9.5)
    return im
