"""The architecture figure, drawn by code so that its shapes are computed, not typed.

:func:`architecture_svg` returns an SVG picture of ConvMixer-h/d: image -> patch embedding ->
d x (depthwise convolution with its residual, pointwise convolution) -> global average pool ->
linear head, with the tensor shape on every arrow.  The shapes come from the configuration
(``image_size // patch_size`` tokens a side), so the picture of another preset is one call.

The picture reads on light and dark pages alike: it has no background, its boxes are filled
with fixed pastel colours and carry dark text, and everything drawn on the page itself (arrows,
shapes, captions) is a neutral mid grey.  :class:`ArchitectureFigure` wraps the SVG for
Jupyter (``_repr_svg_``), and ``python -m convmixer.book.figures PATH`` writes it to a file, which
is how the book's landing page gets its copy (a test checks that copy is up to date).  It is drawn
with :mod:`convmixer.book.svg`'s writer, like every other figure of the book.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .svg import line, rect, text

__all__ = ["architecture_svg", "ArchitectureFigure", "main"]

INK = "#1f2937"      # text inside the filled boxes
GREY = "#8a8f98"     # arrows, shapes and captions, readable on white and on near-black
FILL = {"embed": "#fde7c8", "spatial": "#d3e6fb", "channel": "#dcf2d8", "head": "#e8e1f5", "image": "#f1f1f1"}
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""
MONO = "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\""


def _text(x, y, s, size=13, color=INK, anchor="middle", weight="normal", mono=False):
    family = MONO if mono else FONT
    return text(x, y, s, anchor, extra=f'{family} font-size="{size}" fill="{color}" font-weight="{weight}"')


def _box(x, y, w, h, fill, lines, title=None):
    parts = [rect(x, y, w, h, fill, extra=f'rx="8" stroke="{GREY}" stroke-width="1.2"')]
    rows = ([(title, 13.5, "bold")] if title else []) + [(s, 12, "normal") for s in lines]
    top = y + h / 2 - 8 * (len(rows) - 1) + 4
    for i, (s, size, weight) in enumerate(rows):
        parts.append(_text(x + w / 2, top + 16 * i, s, size=size, weight=weight))
    return "\n".join(parts)


def _arrow(x1, y1, x2, y2):
    return line(x1, y1, x2, y2, cls="", stroke=GREY, extra='stroke-width="1.6" marker-end="url(#arrow)"')


def architecture_svg(dim: int = 256, depth: int = 8, kernel_size: int = 5, patch_size: int = 2,
                     n_classes: int = 10, image_size: int = 32, in_channels: int = 3,
                     batch: str = "N", activation: str = "GELU") -> str:
    """An SVG (a string) of ConvMixer-``dim``/``depth`` with the tensor shape on every arrow.

    The defaults are ConvMixer-256/8 on CIFAR-10: ``N x 3 x 32 x 32`` images become
    ``N x 256 x 16 x 16`` tokens, which keep that shape through all 8 layers, are pooled to
    ``N x 256`` and mapped to ``N x 10`` logits.
    """
    h, d, k, p, n = dim, depth, kernel_size, patch_size, n_classes
    t = image_size // p
    grid = f"{batch}×{h}×{t}×{t}"
    width, height = 1100, 250
    mid = 125                                   # the row the data flows along
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="ConvMixer-{h}/{d} architecture">',
           f"<title>ConvMixer-{h}/{d}: patch embedding, {d} x (depthwise convolution + residual, "
           f"pointwise convolution), global average pooling, linear head</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{GREY}"/></marker></defs>']

    # The input image: three stacked squares, one per channel.
    for i, dx in enumerate((12, 6, 0)):
        out.append(rect(10 + dx, mid - 36 - dx, 60, 60, FILL["image"], extra=f'rx="3" stroke="{GREY}" stroke-width="1.2"'))
    out.append(_text(40, mid, "image", size=12))
    out.append(_text(46, mid + 52, f"{batch}×{in_channels}×{image_size}×{image_size}", size=11.5, color=GREY, mono=True))
    out.append(_arrow(86, mid, 112, mid))

    # Patch embedding.
    out.append(_box(112, mid - 42, 164, 84, FILL["embed"],
                    [f"Conv {p}×{p}, stride {p}", f"{in_channels} → {h} channels", f"{activation}, BatchNorm"],
                    title="Patch embedding"))
    out.append(_arrow(276, mid, 352, mid))
    out.append(_text(314, mid - 10, grid, size=11, color=GREY, mono=True))

    # The repeated layer: a dashed frame around depthwise (+ residual) and pointwise.
    fx, fw = 356, 380
    out.append(rect(fx, mid - 95, fw, 178, extra=f'rx="12" stroke="{GREY}" stroke-width="1.4" stroke-dasharray="6 4"'))
    out.append(_text(fx + 10, mid - 78, "ConvMixer layer", size=12.5, color=GREY, anchor="start", weight="bold"))
    out.append(_text(fx + fw - 10, mid - 78, f"× d = {d}", size=15, color=GREY, anchor="end", weight="bold"))
    out.append(_text(fx + fw / 2, mid + 76, f"every layer keeps the shape {grid}", size=11, color=GREY))
    sx, cx, plus = fx + 30, fx + 228, fx + 200
    out.append(_arrow(fx, mid, sx, mid))
    out.append(_box(sx, mid - 38, 140, 76, FILL["spatial"],
                    [f"{k}×{k}, groups = {h}", f"{activation}, BatchNorm"], title="Depthwise conv"))
    out.append(_arrow(sx + 140, mid, plus - 11, mid))
    # The residual: from the layer's input, over the depthwise box, down into the sum.
    out.append(f'<path d="M {fx + 14} {mid} L {fx + 14} {mid - 54} L {plus} {mid - 54} L {plus} {mid - 13}" '
               f'fill="none" stroke="{GREY}" stroke-width="1.6" marker-end="url(#arrow)"/>')
    out.append(_text((fx + 14 + plus) / 2, mid - 60, "residual", size=11, color=GREY))
    out.append(f'<circle cx="{plus}" cy="{mid}" r="11" fill="none" stroke="{GREY}" stroke-width="1.6"/>')
    out.append(f'<path d="M {plus - 6} {mid} L {plus + 6} {mid} M {plus} {mid - 6} L {plus} {mid + 6}" '
               f'stroke="{GREY}" stroke-width="1.6"/>')
    out.append(_arrow(plus + 11, mid, cx, mid))
    out.append(_box(cx, mid - 38, 132, 76, FILL["channel"],
                    ["1×1", f"{activation}, BatchNorm"], title="Pointwise conv"))
    out.append(_arrow(cx + 132, mid, fx + fw + 34, mid))

    # Pool and head.
    px = fx + fw + 36
    out.append(_box(px, mid - 30, 104, 60, FILL["head"], ["average pool"], title="Global"))
    out.append(_arrow(px + 104, mid, px + 150, mid))
    out.append(_text(px + 127, mid - 10, f"{batch}×{h}", size=11, color=GREY, mono=True))
    lx = px + 152
    out.append(_box(lx, mid - 30, 88, 60, FILL["head"], [f"{h} → {n}"], title="Linear"))
    out.append(_arrow(lx + 88, mid, lx + 112, mid))
    out.append(_text(lx + 114, mid - 3, "logits", size=12, color=GREY, anchor="start"))
    out.append(_text(lx + 114, mid + 13, f"{batch}×{n}", size=11, color=GREY, anchor="start", mono=True))

    out.append(_text(width / 2, height - 10,
                     f"ConvMixer-{h}/{d}, k = {k}, p = {p}, on {image_size}×{image_size} images: "
                     f"{t}×{t} = {t * t} tokens of {h} channels", size=12, color=GREY))
    out.append("</svg>")
    return "\n".join(s for s in out if s) + "\n"


class ArchitectureFigure:
    """The figure as a notebook output: Jupyter, Colab and the built site show the SVG."""

    def __init__(self, **config):
        self.svg = architecture_svg(**config)

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return "ConvMixer architecture figure (SVG)"


def main(argv: list[str] | None = None) -> None:
    """``python -m convmixer.book.figures PATH``: write the ConvMixer-256/8 figure to PATH."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m convmixer.book.figures PATH")
    Path(argv[0]).write_text(architecture_svg(), encoding="utf-8")


if __name__ == "__main__":
    main()
