"""Small helpers the book's concept chapters use to *explain* ConvMixer, not to train it.

Chapter 1 (patch embedding)::

    patchify            cut images into flattened p x p patches, in the order of ``Conv2d``'s weights
    patch_mosaic        an image with gaps between its patches, for figures
    measured_macs       multiply-accumulates counted by PyTorch while a module runs (closed form:
                        ``convmixer.reference.multiply_accumulates``)
    patch_size_rows     tokens, parameters and MACs of one ConvMixer for several patch sizes

Chapter 2 (spatial mixing)::

    receptive_field     pixels seen by one token after d layers: p (1 + d (k - 1))
    gradient_extent     the same, measured from the gradient of one output token
    layers_to_global    how many layers until every token sees the whole image
    mixing_costs        parameters and FLOPs of a depthwise conv, self-attention, a token-mixing MLP

Both::

    format_table        a fixed-width text table (stable output for nbval)
    live_widgets        whether a person is at a live frontend that can use ipywidgets
    show_explorer       display an explorer when live, else print where to find it
    patch_explorer, kernel_explorer   the two chapters' ipywidgets explorers

Counting convention: one MAC is one multiply-accumulate; FLOPs = 2 x MACs (a multiply and an
add), as ``torch.utils.flop_counter`` counts them.  Only the convolutions, linear layers and
matrix products are counted; norms, activations, softmax and additions are a small extra.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .model import ConvMixer, parameter_count
from .reference import multiply_accumulates


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


def patch_mosaic(image: torch.Tensor, p: int, scale: int = 8, gap: int = 2, background: float = 1.0):
    """A (C, H, W) uint8 or [0, 1] image as an H x W x C float array with ``gap`` pixels between patches.

    The image is enlarged ``scale`` times (nearest neighbour) so that the gaps are thinner than a
    pixel of the original; used to draw "the image cut into p x p patches".
    """
    img = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    c, hgt, wid = img.shape
    big = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    gh, gw = hgt // p, wid // p
    s = p * scale
    out = torch.full((c, gh * s + (gh - 1) * gap, gw * s + (gw - 1) * gap), background)
    for r in range(gh):
        for q in range(gw):
            out[:, r * (s + gap):r * (s + gap) + s, q * (s + gap):q * (s + gap) + s] = \
                big[:, r * s:(r + 1) * s, q * s:(q + 1) * s]
    return out.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- cost of ConvMixer

def measured_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates PyTorch's own FLOP counter sees in ``module(*inputs)`` (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def patch_size_rows(dim: int = 256, depth: int = 8, kernel_size: int = 5, patch_sizes: Iterable[int] = (1, 2, 4, 8),
                    image_size: int = 32, n_classes: int = 10) -> list[dict]:
    """One row per patch size: token grid, parameters and MACs of ConvMixer-h/d on image_size^2 images.

    Keys: p, grid, tokens, params (whole model), embed_params (the p x p convolution),
    embed_macs, layer_macs (all d layers) and total_macs, from the closed forms
    :func:`convmixer.model.parameter_count` and :func:`convmixer.reference.multiply_accumulates`.
    """
    rows = []
    for p in patch_sizes:
        macs = multiply_accumulates(dim, depth, kernel_size, p, n_classes, image_size=image_size)
        g = image_size // p
        rows.append(dict(p=p, grid=f"{g}x{g}", tokens=g * g,
                         params=parameter_count(dim, depth, kernel_size, p, n_classes),
                         embed_params=3 * p * p * dim + dim,
                         embed_macs=macs["patch embedding"], layer_macs=macs["depthwise"] + macs["pointwise"],
                         total_macs=macs["total"]))
    return rows


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

    The model is put in eval mode (BatchNorm with running statistics: in training mode the batch
    mean and variance would connect every pixel to every output) and run in float64 on one
    random image, so that a gradient is zero exactly where the token does not depend on the pixel.
    ``token`` is (row, col) in the token grid; the centre token by default.
    """
    model = model.double().eval()
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


# --------------------------------------------------------------------------- token-mixing costs

def mixing_costs(n_tokens: int, dim: int, kernel_size: int, mlp_hidden: int | None = None) -> dict[str, int]:
    """Parameters and FLOPs (batch of one) of one token-mixing layer of each kind::

        depthwise conv      params h k^2 + h             FLOPs 2 N h k^2
        self-attention      params 4 h^2 + 4 h           FLOPs 2 (4 N h^2 + 2 N^2 h)
        token-mixing MLP    params 2 N D_S + N + D_S     FLOPs 2 (2 N D_S h)

    Self-attention: the Q, K, V and output projections, then the N x N scores and their weighted
    sum (the number of heads does not change the totals).  Token-mixing MLP (MLP-Mixer):
    Linear N -> D_S -> N applied to each of the h channels; ``mlp_hidden`` D_S defaults to h / 2,
    the ratio of every configuration in the MLP-Mixer paper.
    """
    n, h, k = n_tokens, dim, kernel_size
    ds = mlp_hidden if mlp_hidden is not None else h // 2
    return dict(
        depthwise_params=h * k * k + h, depthwise_flops=2 * n * h * k * k,
        attention_params=4 * h * h + 4 * h, attention_flops=2 * (4 * n * h * h + 2 * n * n * h),
        mlp_params=2 * n * ds + n + ds, mlp_flops=2 * 2 * n * ds * h,
        mlp_hidden=ds,
    )


class TokenMixingMLP(nn.Module):
    """MLP-Mixer's token-mixing MLP on an (N, h, H, W) token grid: Linear(T -> D_S), GELU, Linear(D_S -> T)
    over the T = H W positions, shared by all h channels.  Used only to *count* its cost."""

    def __init__(self, n_tokens: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_tokens, hidden), nn.GELU(), nn.Linear(hidden, n_tokens))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, h, hgt, wid = z.shape
        return self.mlp(z.flatten(2)).reshape(n, h, hgt, wid)


class SelfAttentionMixing(nn.Module):
    """ViT's multi-head self-attention on an (N, h, H, W) token grid, via ``nn.MultiheadAttention``.
    Used only to *count* its cost."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, h, hgt, wid = z.shape
        t = z.flatten(2).transpose(1, 2)                      # n, tokens, h
        # nn.MultiheadAttention may take fused kernels (its inference fast path, or
        # scaled_dot_product_attention) that PyTorch's FLOP counter cannot look inside; with the
        # fast path off and need_weights=True it computes the same with countable matrix products.
        mha = getattr(torch.backends, "mha", None)          # the switch exists from PyTorch 2.2 on
        fast = mha.get_fastpath_enabled() if mha else None
        if mha:
            mha.set_fastpath_enabled(False)
        try:
            out, _ = self.attn(t, t, t, need_weights=True)
        finally:
            if mha:
                mha.set_fastpath_enabled(fast)
        return out.transpose(1, 2).reshape(n, h, hgt, wid)


# --------------------------------------------------------------------------- text tables

def human(n: float, digits: int = 3) -> str:
    """1234567 -> '1.23M'; exact below 1000."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{digits}g}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]] | None = None,
                 formats: dict[str, Callable] | None = None) -> str:
    """Rows of dicts as a right-aligned fixed-width text table; ``columns`` are (key, header) pairs."""
    columns = columns or [(key, key) for key in rows[0]]
    formats = formats or {}
    cells = [[formats.get(key, str)(row[key]) for key, _ in columns] for row in rows]
    heads = [head for _, head in columns]
    widths = [max(len(heads[i]), *(len(r[i]) for r in cells)) for i in range(len(columns))]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(r) for r in cells])


# --------------------------------------------------------------------------- live explorers

def live_widgets() -> bool:
    """True when the notebook runs in a live frontend a person can interact with.

    Batch executors (``jupyter nbconvert --execute``, nbval, Jupyter Book, papermill) run the
    kernel with stdin disabled, since nobody is there to answer ``input()``; JupyterLab, the
    classic notebook, VS Code and Colab enable it.  So "stdin is allowed for this cell" is a
    reliable sign that a person is watching and a slider will do something.
    """
    if "google.colab" in sys.modules:
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


STATIC_NOTE = ("[static page] The interactive explorer appears here when you run this notebook in "
               "Jupyter or Colab.")


def show_explorer(build: Callable[[], object], note: str = "") -> None:
    """Display ``build()`` (an ipywidgets UI) in a live notebook; elsewhere print ``STATIC_NOTE`` and ``note``.

    Outside a live frontend the widget is not even built, so a batch-executed notebook stores
    neither a widget view nor widget state, and its rendered page shows no control that does
    nothing: only the note, which should point at the static figure that shows the same thing.
    """
    if live_widgets():
        from IPython.display import display

        display(build())
    else:
        print(STATIC_NOTE + (" " + note if note else ""))


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


def patch_explorer(images: torch.Tensor, titles: Sequence[str], dim: int = 256, depth: int = 8,
                   kernel_size: int = 5, patch_sizes: Sequence[int] = (1, 2, 4, 8, 16)):
    """ipywidgets UI: pick an image and a patch size, see the patches and what they cost ConvMixer-h/d."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(index: int, p: int):
        img = images[index]
        row = patch_size_rows(dim, depth, kernel_size, [p], img.shape[-1])[0]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(patch_mosaic(img, p, scale=8, gap=1 if p == 1 else 3), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{titles[index]}, p = {p}", fontsize=11)
        plt.show()
        print(f"token grid {row['grid']} = {row['tokens']} tokens, each 3·{p}² = {3 * p * p} numbers -> {dim} features")
        print(f"ConvMixer-{dim}/{depth} (k={kernel_size}): {human(row['params'])} parameters, "
              f"{human(row['total_macs'])} MACs per image (layers: {human(row['layer_macs'])})")

    image = widgets.Dropdown(options=[(t, i) for i, t in enumerate(titles)], value=0, description="image")
    patch = widgets.SelectionSlider(options=list(patch_sizes), value=patch_sizes[min(1, len(patch_sizes) - 1)],
                                    description="patch p", continuous_update=False)
    out = widgets.interactive_output(draw, dict(index=image, p=patch))
    return widgets.VBox([widgets.HBox([image, patch]), out])


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
            im = _draw_gradient(axes[r, c], grad, k, patch_size, d)
            if r == 0:
                axes[r, c].set_title(f"d = {d} layer{'s' if d > 1 else ''}", fontsize=11)
            if c == 0:
                axes[r, c].set_ylabel(f"k = {k}", fontsize=11)
    bar = fig.colorbar(im, ax=axes, shrink=0.6, pad=0.02, extend="min")
    bar.set_label("log10 |gradient| / max  (grey: exactly 0)")
    fig.suptitle(f"Which input pixels the centre token depends on (p = {patch_size}, "
                 f"{image_size}x{image_size} input)", fontsize=12)
    return fig


def _draw_gradient(ax, grad: torch.Tensor, k: int, p: int, d: int):
    """log10 of the absolute gradient over its maximum, eight decades, exact zeros in grey; the formula's square dashed."""
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


def kernel_explorer(patch_size: int = 2, max_canvas: int = 160, dim: int = 8, cost_width: int = 256,
                    cifar_size: int = 32):
    """ipywidgets UI: kernel size k and depth d; see the measured receptive field and the depthwise layer's cost.

    The gradient is measured on a random input just large enough for the field (at most
    ``max_canvas`` pixels, beyond which the border clips it); the cost lines are for one
    depthwise layer of width ``cost_width`` on a ``cifar_size`` image.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(k: int, d: int):
        rf = receptive_field(k, patch_size, d)
        canvas = min(rf + 4 * patch_size, max_canvas // patch_size * patch_size)
        torch.manual_seed(0)
        model = ConvMixer(dim=dim, depth=d, kernel_size=k, patch_size=patch_size)
        grad = gradient_map(model, canvas)
        fig, ax = plt.subplots(figsize=(6, 5))
        fig.colorbar(_draw_gradient(ax, grad, k, patch_size, d), ax=ax, label="log10 |gradient| / max", extend="min")
        ax.set_title(f"centre token, k = {k}, d = {d}, p = {patch_size}: {canvas}x{canvas} input", fontsize=10)
        plt.show()
        measured = nonzero_extent(grad)[0]
        clipped = " (clipped by the input's border)" if rf > canvas else ""
        n = (cifar_size // patch_size) ** 2
        cost = mixing_costs(n, cost_width, k)
        print(f"receptive field p(1 + d(k-1)) = {patch_size}(1 + {d}·{k - 1}) = {rf} pixels; "
              f"nonzero gradient: {measured} pixels{clipped}")
        print(f"every token sees the whole {cifar_size}x{cifar_size} image after "
              f"{layers_to_global(k, patch_size, cifar_size)} layers")
        print(f"one depthwise layer at h={cost_width}, N={n}: {human(cost['depthwise_params'])} parameters, "
              f"{human(cost['depthwise_flops'])} FLOPs")

    k = widgets.IntSlider(value=5, min=3, max=15, step=2, description="kernel k", continuous_update=False)
    d = widgets.IntSlider(value=2, min=1, max=10, description="depth d", continuous_update=False)
    out = widgets.interactive_output(draw, dict(k=k, d=d))
    return widgets.VBox([widgets.HBox([k, d]), out])
