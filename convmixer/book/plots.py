"""The book's matplotlib figures: image grids, patches and receptive fields, and what a trained ConvMixer learned.

Every ``plot_*`` function draws into axes it is given (or a new figure) and returns the figure,
so a notebook cell can end with ``plt.show()``.  Images are (N, 3, H, W) tensors, either uint8
in [0, 255] or floats in [0, 1] (use :func:`convmixer.data.denormalize` on normalised ones).
The few helpers that compute rather than draw (:func:`confusion_matrix`,
:func:`most_confident_mistakes`, :func:`filter_stats`, :func:`kernel_stats`,
:func:`layer_outputs`) are here because the figures are their only use.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from ..model import ConvMixer
from .receptive_fields import gradient_map, receptive_field

__all__ = [
    "to_numpy_image", "plot_images", "plot_image_rows", "plot_schedule",
    "tile_mosaic", "filter_tiles", "filter_stats", "plot_filters", "kernel_mosaic", "plot_depthwise_kernels",
    "kernel_stats",
    "layer_outputs", "plot_feature_maps", "confusion_matrix", "plot_confusion_matrix",
    "plot_class_accuracy", "most_confident_mistakes", "plot_mistakes",
    "patch_mosaic", "plot_patch_grid", "plot_receptive_fields", "draw_gradient",
]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _figure(axes, nrows: int, ncols: int, figsize):
    """New (fig, 2-D axes array), or the given axes reshaped to (nrows, ncols)."""
    import numpy as np

    if axes is None:
        return _plt().subplots(nrows, ncols, figsize=figsize, squeeze=False)
    axes = np.asarray(axes, dtype=object).reshape(nrows, ncols)
    return axes[0, 0].figure, axes


# ----------------------------------------------------------------------------------- images

def to_numpy_image(x: torch.Tensor):
    """One image (3, H, W), uint8 or float in [0, 1], as an (H, W, 3) float array for ``imshow``."""
    x = x.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    return x.permute(1, 2, 0).numpy()


def plot_images(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.3,
                title_size: float = 8, axes=None):
    """A grid of images with an optional title above each."""
    n = len(images)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = _figure(axes, nrows, ncols, (ncols * size, nrows * size * (1.25 if titles else 1.0)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_numpy_image(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=title_size)
    return fig


def plot_image_rows(rows: dict[str, torch.Tensor], size: float = 1.2, label_width: float = 1.9):
    """One row of images per entry of ``rows`` (name -> (N, 3, H, W)), the name at the left."""
    plt = _plt()
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(label_width + ncols * size, len(rows) * size),
                             squeeze=False, gridspec_kw=dict(wspace=0.05, hspace=0.08))
    for r, (name, images) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(to_numpy_image(images[c]), interpolation="nearest")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=label_width / (label_width + ncols * size))
    return fig


# ------------------------------------------------------------------------------ training

def plot_schedule(lr: Callable[[float], float], epochs: float, steps_per_epoch: int, ax=None,
                  label: str | None = None):
    """A learning-rate schedule ``lr(t)`` (t in epochs) sampled once per optimizer step."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    n = int(round(epochs * steps_per_epoch))
    t = [(i + 1) / steps_per_epoch for i in range(n)]
    ax.plot(t, [lr(s) for s in t], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_xlim(0, epochs)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return ax.figure


def tile_mosaic(tiles: torch.Tensor, ncols: int, gap: int, fill: float) -> torch.Tensor:
    """(N, C, h, w) tiles -> one (C, rows (h + gap) - gap, ncols (w + gap) - gap) float image, row by row,
    with ``gap`` pixels of ``fill`` between tiles and in the last row's empty places.

    torchvision's ``make_grid`` without its outer border (the figures' tiles touch the frame).
    """
    from torchvision.utils import make_grid

    tiles = tiles.float()
    if len(tiles) == 1:                       # make_grid returns a lone tile as it is
        return tiles[0].clone()
    grid = make_grid(tiles, nrow=ncols, padding=gap, pad_value=fill)[:tiles.shape[1]]  # it makes 1 channel 3
    return grid[:, gap:grid.shape[1] - gap, gap:grid.shape[2] - gap]


def filter_tiles(weight: torch.Tensor, ncols: int = 16, pad: int = 1) -> torch.Tensor:
    """Patch-embedding filters (h, 3, p, p) as one RGB mosaic (3, H, W) in [0, 1].

    Each filter is min-max scaled on its own (all three channels together), so its colours
    show which colour contrasts the filter responds to; the gaps are white.
    """
    w = weight.detach().float().cpu()
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected RGB filters (h, 3, p, p), got shape {tuple(w.shape)}")
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    return tile_mosaic((w - lo) / (hi - lo).clamp_min(1e-12), ncols, pad, fill=1.0)


def filter_stats(weight: torch.Tensor) -> dict[str, float]:
    """Scale, colour content and smoothness of patch-embedding filters (h, 3, p, p).

    ``norm``
        mean over filters of the Euclidean norm of the filter;
    ``grey_share``
        mean over filters of ``sum(w_grey**2) / sum(w**2)``, where ``w_grey`` repeats the
        mean of the three colour channels at every pixel: the part of the filter that sees
        only brightness.  The rest responds to colour differences.  For i.i.d. random
        weights the expected share is 1/3.
    ``smoothness``
        mean over filters of the correlation between the weights of horizontally or
        vertically adjacent pixels (same colour channel, filter mean removed): about 0 for
        random speckle, positive for filters made of smooth gradients, bars and blobs.
    """
    w = weight.detach().float().cpu()
    grey = w.mean(1, keepdim=True).expand_as(w)
    energy = w.pow(2).sum((1, 2, 3)).clamp_min(1e-30)
    c = w - w.mean((1, 2, 3), keepdim=True)
    pairs = [(c[..., :, 1:], c[..., :, :-1]), (c[..., 1:, :], c[..., :-1, :])]
    cross = sum((u * v).sum((1, 2, 3)) for u, v in pairs)
    power = sum(0.5 * (u.pow(2) + v.pow(2)).sum((1, 2, 3)) for u, v in pairs).clamp_min(1e-30)
    return {"norm": float(energy.sqrt().mean()), "grey_share": float((grey.pow(2).sum((1, 2, 3)) / energy).mean()),
            "smoothness": float((cross / power).mean())}


def plot_filters(weight: torch.Tensor, ax=None, title: str = "", ncols: int = 16):
    """Draw :func:`filter_tiles` of a patch embedding's weight (h, 3, p, p)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(filter_tiles(weight, ncols).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return ax.figure


def kernel_mosaic(weight: torch.Tensor, n: int = 64, ncols: int = 8, pad: int = 1) -> torch.Tensor:
    """The first ``n`` depthwise kernels (h, 1, k, k) as one (H, W) mosaic in [-1, 1], gaps NaN.

    Each kernel is divided by its own largest absolute weight, so sign and shape are comparable
    across kernels whatever their scale (the scale is what :func:`kernel_stats` measures).
    """
    w = weight.detach().float().cpu()[:n]
    if w.ndim != 4 or w.shape[1] != 1:
        raise ValueError(f"expected depthwise kernels (h, 1, k, k), got shape {tuple(w.shape)}")
    w = w / w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return tile_mosaic(w, ncols, pad, fill=float("nan"))[0]


def _depthwise_weights(model: nn.Module) -> list[torch.Tensor]:
    return [layer.spatial.conv.weight for layer in model.layers]


def plot_depthwise_kernels(model: nn.Module, n: int = 64, ncols: int = 8, per_row: int = 4, size: float = 2.6,
                           title: str = ""):
    """The first ``n`` depthwise kernels of every ConvMixer layer, one panel per layer.

    Red is positive, blue negative, white zero, each kernel scaled by its largest absolute weight.
    """
    plt = _plt()
    weights = _depthwise_weights(model)
    nrows = math.ceil(len(weights) / per_row)
    fig, axes = plt.subplots(nrows, per_row, figsize=(per_row * size, nrows * size + 0.4), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("white")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(weights):
            ax.imshow(kernel_mosaic(weights[i], n, ncols).numpy(), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {i + 1}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def kernel_stats(weight: torch.Tensor) -> dict[str, float]:
    """How large and how spread out a layer's depthwise kernels (h, 1, k, k) are.

    ``norm``
        mean over kernels of the Euclidean norm of the kernel;
    ``radius``
        mean over kernels of ``sqrt(sum(w**2 * r**2) / sum(w**2))``, the energy-weighted
        distance from the kernel centre in token steps (``r`` is each tap's distance from
        the centre);
    ``centre``
        mean share of each kernel's energy ``sum(w**2)`` on its central 3 x 3 taps.

    For i.i.d. random weights (a fresh model) radius and centre depend only on k: for k = 5
    the mean squared distance of a tap is 4, so radius is about 2, and centre about
    9/25 = 0.36.  When training concentrates the kernels on the nearest tokens, radius falls
    and centre rises; kernels that reach out to the far taps move them the other way.
    """
    w = weight.detach().float().cpu().flatten(1)  # (h, k*k)
    k = int(round(math.sqrt(w.shape[1])))
    c = (k - 1) / 2
    ii, jj = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    r2 = ((ii - c) ** 2 + (jj - c) ** 2).float().flatten()
    centre = (((ii - c).abs() <= 1) & ((jj - c).abs() <= 1)).float().flatten()
    energy = w.pow(2)
    total = energy.sum(1).clamp_min(1e-30)
    return {
        "norm": float(total.sqrt().mean()),
        "radius": float(((energy * r2).sum(1) / total).sqrt().mean()),
        "centre": float(((energy * centre).sum(1) / total).mean()),
    }


# -------------------------------------------------------------------------- activations

@torch.no_grad()
def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The token grid after the patch embedding and after every layer, for a batch ``x``, each named for
    :func:`plot_feature_maps` (the grids of :meth:`convmixer.model.ConvMixer.forward_intermediates`)."""
    _, grids = model.forward_intermediates(x)
    return [("patch embedding", grids[0])] + [(f"layer {i}", z) for i, z in enumerate(grids[1:], 1)]


def plot_feature_maps(stages: Sequence[tuple[str, torch.Tensor]], k: int = 6, image: torch.Tensor | None = None,
                      size: float = 1.15):
    """Feature maps of one image, a row per stage: (name, (h, H, W)) pairs from :func:`layer_outputs`.

    The first row shows the input ``image`` if one is given.  Then, per stage: the mean over
    channels of ``abs(z)`` at each token, and the k channels of that stage with the largest spatial
    standard deviation (those that vary most across the image), each labelled with its index.
    Every map has its own colour scale, dark = low, bright = high.
    """
    plt = _plt()
    rows = ([("input", None)] if image is not None else []) + list(stages)
    fig, axes = plt.subplots(len(rows), 1 + k, figsize=(1.8 + (1 + k) * size, len(rows) * size * 1.1), squeeze=False,
                             gridspec_kw=dict(wspace=0.06, hspace=0.3))
    for r, (name, z) in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        if z is None:
            axes[r, 0].imshow(to_numpy_image(image), interpolation="nearest")
            for ax in axes[r, 1:]:
                ax.axis("off")
            continue
        z = z.detach().float().cpu()
        top = z.flatten(1).std(1).argsort(descending=True, stable=True)[:k].tolist()
        panels = [("mean |z|", z.abs().mean(0))] + [(f"ch {c}", z[c]) for c in top]
        for ax, (label, panel) in zip(axes[r], panels):
            ax.imshow(panel.numpy(), cmap="magma", interpolation="nearest")
            ax.set_title(label, fontsize=7, pad=2)
    return fig


# ------------------------------------------------------------------------------- errors

def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Counts (n, n): row = true class, column = predicted class."""
    index = labels.long().cpu() * n_classes + predictions.long().cpu()
    return torch.bincount(index, minlength=n_classes * n_classes).view(n_classes, n_classes)


def plot_confusion_matrix(cm: torch.Tensor, classes: Sequence[str], ax=None, title: str = ""):
    """A confusion matrix as counts; the colour is the row share (recall per true class)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 5.6))
    share = (cm.float() / cm.sum(1, keepdim=True).clamp_min(1)).numpy()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = len(classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax.figure


def plot_class_accuracy(cm: torch.Tensor, classes: Sequence[str], ax=None):
    """Accuracy per true class (the diagonal of the row-normalised confusion matrix)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3))
    acc = (cm.diag().float() / cm.sum(1).clamp_min(1)).numpy()
    overall = float(cm.diag().sum()) / max(int(cm.sum()), 1)
    bars = ax.bar(range(len(classes)), acc, color="tab:blue")
    ax.axhline(overall, color="black", lw=1, ls="--", label=f"overall {overall:.3f}")
    for bar, a in zip(bars, acc):
        ax.text(bar.get_x() + bar.get_width() / 2, a + 0.01, f"{a:.2f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def most_confident_mistakes(logits: torch.Tensor, labels: torch.Tensor, k: int = 16):
    """The k misclassified examples with the highest predicted probability.

    Returns (indices, predicted classes, their probabilities), most confident first.
    """
    prob = logits.float().softmax(1)
    confidence, predicted = prob.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)[:k]
    idx = wrong[order]
    return idx, predicted[idx], confidence[idx]


def plot_mistakes(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, predicted: torch.Tensor,
                  confidence: torch.Tensor, classes: Sequence[str], ncols: int = 8, size: float = 1.5):
    """Images titled "predicted (probability)" over "true: class"."""
    titles = [f"{classes[int(p)]} ({float(c):.2f})\ntrue: {classes[int(labels[i])]}"
              for i, p, c in zip(indices, predicted, confidence)]
    return plot_images(images[indices], titles, ncols=ncols, size=size, title_size=7)


# --------------------------------------------------------------------------- the concept chapters' figures
# patch_mosaic: an image with gaps between its p x p patches; plot_patch_grid (ch. 1): images (rows) cut
# into patches of several sizes (columns); plot_receptive_fields (ch. 2): the measured receptive field of
# the centre token, per k and d; draw_gradient: one such panel, the gradient's magnitude on a log scale
# with the formula's square dashed.

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
