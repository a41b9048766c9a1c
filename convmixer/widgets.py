"""ipywidgets explorers, for a reader at a live notebook: any k, d or image, recomputed on the spot.

The book's pages use :mod:`convmixer.explorers` instead (every state precomputed, so they work
without a kernel); these recompute, so they need one::

    live_widgets        whether a person is at a live frontend that can use ipywidgets
    show_explorer       display an explorer when live, else print where to find it
    patch_explorer      ch. 1  an image and a patch size; the patches and what they cost
    kernel_explorer     ch. 2  k and d; the measured receptive field and the depthwise layer's cost
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import torch

from .costs import mixing_costs, patch_size_rows
from .explain import gradient_map, layers_to_global, nonzero_extent, receptive_field
from .model import ConvMixer
from .plot_concepts import draw_gradient, patch_mosaic
from .tables import human


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
        fig.colorbar(draw_gradient(ax, grad, k, patch_size, d), ax=ax, label="log10 |gradient| / max", extend="min")
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
