"""The explainer chapter's model (book/10_explainer): in the page (onnxruntime-web) and in a live notebook (PyTorch, ipywidgets).

Three pieces, one for each place a reader meets the chapter:

* :func:`explainer_html`: the HTML output cell of the book's page.  On the website it loads
  ``book/explainer/explainer.js``, which runs the exported model (:mod:`convmixer.onnx`) in a Web
  Worker; anywhere it cannot (the notebook in Jupyter or Colab, a page opened from ``file://``, a
  browser without WebAssembly) its one line says so and how to serve the site.
* :func:`occlusion_map` and :func:`plot_explanation`: the same computation in PyTorch, for the
  figure saved in the notebook (what a reader without the site sees).
* :func:`show_live_explainer`: an ipywidgets version that runs on PyTorch in a live kernel (any of
  the 10,000 test images, or an uploaded file); in a batch run it prints one line instead, so the
  saved notebook holds no widget.

Occlusion: for a patch position (i, j) let :math:`x^{(i,j)}` be the image with that p x p patch set to
the training mean (zero after normalisation).  The map is

.. math::  \\Delta_{ij} = P(c \\mid x) - P(c \\mid x^{(i,j)}),

with c the class predicted for the uncovered image: large where the decision rests on that patch.
"""
from __future__ import annotations

import io
import json
import sys
from typing import Sequence

import numpy as np
import torch

from ..data import CLASSES, MEAN, normalize

ELEMENT_ID = "convmixer-explainer"
SERVE = "python -m http.server -d _build/html"


def explainer_html(model_name: str = "convmixer-paper.pt", script: str = "./explainer/explainer.js") -> str:
    """The explainer's placeholder and loader, for ``IPython.display.HTML``.

    The placeholder's one line stays when the script cannot run the model; on the site the
    script replaces it by the explainer.  ``script`` is relative to the built page
    (``_build/html/book/10_explainer.html``).
    """
    offline = ("The live explainer runs on the book's website, where this page loads its model into your browser. "
               "Here it cannot, so the results below were computed with PyTorch; to run it, build the book "
               f"(bash tools/build-book.sh), serve it with <code>{SERVE}</code> and open book/10_explainer.html "
               "at localhost:8000.")
    file_note = (f"Opened from a file, this page cannot load its model (browsers refuse modules from file://); "
                 f"serve the site with {SERVE} and open book/10_explainer.html at localhost:8000.")
    wasm_note = "This browser has no WebAssembly, so the model cannot run here; the results below were computed with PyTorch."
    load_note = (f"The explainer's files are not here (is this the notebook outside the built site?); "
                 f"serve the site with {SERVE}. The results below were computed with PyTorch.")
    return f"""<div id="{ELEMENT_ID}" class="convmixer-explainer" data-model="{model_name}">
<p data-cxe-status="">{offline}</p>
</div>
<script type="module">
const root = document.getElementById({json.dumps(ELEMENT_ID)});
const status = root.querySelector('[data-cxe-status]');
if (location.protocol === 'file:') status.textContent = {json.dumps(file_note)};
else if (typeof WebAssembly !== 'object') status.textContent = {json.dumps(wasm_note)};
else import({json.dumps(script)}).then(m => m.mount(root)).catch(() => {{ status.textContent = {json.dumps(load_note)}; }});
</script>"""


# ---------------------------------------------------------------- PyTorch side
def to_model_input(image) -> torch.Tensor:
    """A PIL image, a file's bytes or a uint8 (3, 32, 32) tensor -> uint8 (3, 32, 32), as the page does it:
    transparency composited on white, grey replicated, centre square resized to 32 x 32."""
    if isinstance(image, torch.Tensor):
        return image
    from PIL import Image

    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise ValueError("the file is empty (0 bytes)")
        try:
            image = Image.open(io.BytesIO(bytes(image)))
            image.draft("RGB", (64, 64))  # JPEG: decode at a reduced size when the file is large
            if image.width * image.height > 40e6:
                raise ValueError(f"the image is {image.width} x {image.height} pixels; scale it below 40 MP first")
            image.load()
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"not an image PIL can decode ({type(e).__name__})") from None
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def cover(x: torch.Tensor, patches: Sequence[tuple[int, int]], p: int) -> torch.Tensor:
    """A copy of the normalised batch ``x`` with each (row, col) patch set to zero (the training mean)."""
    x = x.clone()
    for r, c in patches:
        x[..., r * p:(r + 1) * p, c * p:(c + 1) * p] = 0
    return x


@torch.no_grad()
def occlusion_map(model, image_uint8: torch.Tensor, batch: int = 64) -> dict:
    """Cover every patch position in turn; ``{"target", "base", "probabilities" (g, g), "drop" (g, g)}``."""
    p = model.config.patch_size
    x = normalize(image_uint8[None])
    base = model(x).softmax(1)[0]
    target = int(base.argmax())
    g = x.shape[-1] // p
    positions = [(r, c) for r in range(g) for c in range(g)]
    probs = []
    for start in range(0, len(positions), batch):
        xs = torch.cat([cover(x, [pos], p) for pos in positions[start:start + batch]])
        probs.append(model(xs).softmax(1)[:, target])
    probs = torch.cat(probs).reshape(g, g)
    return {"target": target, "base": float(base[target]), "probabilities": probs, "drop": float(base[target]) - probs,
            "class_probabilities": base}


def plot_explanation(model, image_uint8: torch.Tensor, title: str = "", layer: int = 4, n_channels: int = 4):
    """One figure: the image with its patch grid, class probabilities, the occlusion map, and layer
    ``layer``'s most active feature maps with their depthwise kernels (what the page shows)."""
    import matplotlib.pyplot as plt

    p = model.config.patch_size
    occ = occlusion_map(model, image_uint8)
    with torch.no_grad():
        _, grids = model.forward_intermediates(normalize(image_uint8[None]))
    z = grids[layer][0]
    top = z.mean((1, 2)).argsort(descending=True)[:n_channels].tolist()
    kernels = model.layers[layer - 1].spatial.conv.weight.detach()[:, 0] if layer >= 1 else None
    fig = plt.figure(figsize=(10, 4.6), layout="constrained")
    grid = fig.add_gridspec(2, 3 + n_channels, height_ratios=[1, 0.55])
    img = image_uint8.permute(1, 2, 0).numpy()
    ax = fig.add_subplot(grid[0, 0:2])
    ax.imshow(img, interpolation="nearest")
    g = img.shape[0] // p
    for i in range(1, g):
        ax.axhline(i * p - 0.5, color="white", lw=0.3, alpha=0.5)
        ax.axvline(i * p - 0.5, color="white", lw=0.3, alpha=0.5)
    ax.set_title(title or f"{g} x {g} patches of {p} x {p}", fontsize=9)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 2:4])
    probs = occ["class_probabilities"].numpy()
    ax.barh(range(len(CLASSES)), probs, color=["C0" if i != occ["target"] else "C3" for i in range(len(CLASSES))])
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("class probabilities", fontsize=9)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(grid[0, 4:])
    drop = occ["drop"].numpy()
    m = max(1e-6, float(np.abs(drop).max()))
    ax.imshow(img, interpolation="nearest", alpha=0.35)
    im = ax.imshow(np.kron(drop, np.ones((p, p))), cmap="RdBu_r", vmin=-m, vmax=m, alpha=0.75, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    ax.set_title(f"occlusion: drop in P({CLASSES[occ['target']]})", fontsize=9)
    ax.set_axis_off()
    for j, ch in enumerate(top):
        ax = fig.add_subplot(grid[1, 3 + j] if n_channels + 3 <= grid.ncols else grid[1, j])
        ax.imshow(z[ch].numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(f"z{layer} ch {ch}", fontsize=8)
        ax.set_axis_off()
    if kernels is not None:
        for j, ch in enumerate(top[:3]):
            ax = fig.add_subplot(grid[1, j])
            w = kernels[ch].numpy()
            m = max(1e-6, float(np.abs(w).max()))
            ax.imshow(w, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
            ax.set_title(f"kernel, ch {ch}", fontsize=8)
            ax.set_axis_off()
    return fig, occ


# ---------------------------------------------------------------- the live widget
def live_widgets() -> bool:
    """True when a person is at a live frontend that can show ipywidgets.

    Batch executors (``jupyter nbconvert --execute``, nbval, Jupyter Book) run the kernel with
    stdin disabled, since nobody is there to answer ``input()``; JupyterLab, the classic notebook,
    VS Code and Colab enable it.
    """
    if "google.colab" in sys.modules:
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


STATIC_NOTE = ("[static page] The live PyTorch explainer appears here when you run this notebook in Jupyter or "
               "Colab; on the website, the explainer at the top of the page runs in your browser.")


def live_explainer(model, images: torch.Tensor, labels: torch.Tensor):
    """ipywidgets UI: a test-image index or an uploaded file, a cover list, and the PyTorch explanation."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    g = images.shape[-1] // model.config.patch_size
    index = widgets.BoundedIntText(value=0, min=0, max=len(images) - 1, description="test image")
    upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
    covered = widgets.Text(value="", placeholder="e.g. 3,4; 8,8", description=f"cover (row,col 0..{g - 1})")
    layer = widgets.IntSlider(value=4, min=1, max=len(model.layers), description="layer")
    out = widgets.Output()
    state = {"image": images[0], "title": f"test image 0 ({CLASSES[int(labels[0])]})"}

    def patches():
        cells = []
        for part in covered.value.split(";"):
            if part.strip():
                r, c = (int(v) for v in part.split(","))
                if 0 <= r < g and 0 <= c < g:
                    cells.append((r, c))
        return cells

    def draw(*_):
        out.clear_output(wait=True)
        with out:
            try:
                cells = patches()
            except ValueError:
                print("cover: write row,col pairs separated by ';', e.g. 3,4; 8,8")
                return
            x = state["image"]
            if cells:  # cover in pixel space with the mean colour, as the page shows it
                mean = torch.tensor([round(255 * m) for m in MEAN], dtype=torch.uint8)[:, None, None]
                x = x.clone()
                p = model.config.patch_size
                for r, c in cells:
                    x[:, r * p:(r + 1) * p, c * p:(c + 1) * p] = mean
            fig, occ = plot_explanation(model, x, state["title"], layer=layer.value)
            plt.show()
            print(f"prediction: {CLASSES[occ['target']]} ({100 * occ['base']:.1f}%)")

    def pick(_=None):
        i = index.value
        state.update(image=images[i], title=f"test image {i} ({CLASSES[int(labels[i])]})")
        draw()

    def uploaded(change):
        files = upload.value
        if not files:
            return
        f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        try:
            state.update(image=to_model_input(f["content"]), title=f"your image {f.get('name', '')}")
        except ValueError as e:
            out.clear_output()
            with out:
                print(f"That file cannot be used: {e}")
            return
        draw()

    index.observe(pick, "value")
    upload.observe(uploaded, "value")
    covered.observe(draw, "value")
    layer.observe(draw, "value")
    draw()
    return widgets.VBox([widgets.HBox([index, upload]), widgets.HBox([covered, layer]), out])


def show_live_explainer(model, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Display :func:`live_explainer` in a live notebook; elsewhere print one line saying where it runs."""
    if live_widgets():
        from IPython.display import display

        display(live_explainer(model, images, labels))
    else:
        print(STATIC_NOTE)
