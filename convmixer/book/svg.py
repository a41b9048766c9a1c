"""SVG and PNG written as text: the one writer behind the book's drawn figures.

The explorers (:mod:`convmixer.book.explorers`) and the architecture figure
(:mod:`convmixer.book.figures`) draw with these helpers.  Saved outputs must be byte-identical between
runs (nbval compares the HTML and SVG text): coordinates are written with at most one decimal
(:func:`_n`), and PNG images with uncompressed (stored) deflate blocks, so their bytes do not depend on
the zlib build.  Colours come from the book theme's CSS variables (with plain fallbacks outside the
site) and text uses ``currentColor``, so a figure reads in light and in dark mode.
"""
from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from typing import Sequence

import numpy as np

from .tables import human

# Theme colours: pydata-sphinx-theme's variables in the built site, JupyterLab's in Jupyter,
# plain values elsewhere (Colab, classic notebook).
PRIMARY = "var(--pst-color-primary, var(--jp-brand-color1, #1f77b4))"
MUTED = "var(--pst-color-text-muted, var(--jp-ui-font-color2, #777))"
BACKGROUND = "var(--pst-color-background, var(--jp-layout-color0, #fff))"
TRACK = "var(--pst-color-border, var(--jp-border-color1, #ccc))"
# Fixed colours that read on light and dark backgrounds (matplotlib's tab10).
SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _stored_zlib(data: bytes) -> bytes:
    """A zlib stream of uncompressed deflate blocks: the same bytes under every zlib build."""
    out = [b"\x78\x01"]
    blocks = [data[i:i + 65535] for i in range(0, len(data), 65535)] or [b""]
    for n, block in enumerate(blocks):
        final = n == len(blocks) - 1
        out.append(bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block)
    out.append(struct.pack(">I", zlib.adler32(data) & 0xFFFFFFFF))
    return b"".join(out)


def png_bytes(pixels, palette: Sequence[str] | None = None) -> bytes:
    """A PNG of ``pixels``: (H, W, 3) uint8 RGB, or (H, W) indices into ``palette`` ('#rrggbb' colours).

    Palette images use 1, 2, 4 or 8 bits per pixel, whichever is enough, and the image data is
    stored uncompressed, so the bytes are the same on every machine.
    """
    a = np.asarray(pixels)
    if palette is None:
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"an RGB image must be (H, W, 3), got {a.shape}")
        a = a.astype(np.uint8)
        height, width = a.shape[:2]
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        rows = [b"\x00" + a[r].tobytes() for r in range(height)]
        extra = b""
    else:
        if a.ndim != 2 or not 1 <= len(palette) <= 256 or a.min() < 0 or a.max() >= len(palette):
            raise ValueError("a palette image is (H, W) of indices into at most 256 colours")
        depth = next(b for b in (1, 2, 4, 8) if len(palette) <= 2 ** b)
        height, width = a.shape
        per_byte = 8 // depth
        padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
        padded[:, :width] = a
        groups = padded.reshape(height, -1, per_byte).astype(np.uint16)
        shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint16) * depth
        packed = (groups << shifts).sum(-1).astype(np.uint8)
        header = struct.pack(">IIBBBBB", width, height, depth, 3, 0, 0, 0)
        rows = [b"\x00" + packed[r].tobytes() for r in range(height)]
        extra = _chunk(b"PLTE", b"".join(bytes.fromhex(c.lstrip("#")) for c in palette))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra
            + _chunk(b"IDAT", _stored_zlib(b"".join(rows))) + _chunk(b"IEND", b""))


def png_data_uri(pixels, palette: Sequence[str] | None = None) -> str:
    """:func:`png_bytes` as a ``data:image/png;base64,...`` address for an ``<image>`` or ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, palette)).decode("ascii")


def _n(x: float) -> str:
    """A coordinate with at most one decimal, no trailing zeros (stable text for nbval)."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


# SVG as text.  ``cls`` takes the classes of the explorer's style sheet: c-b bold, c-s small,
# c-xs smaller, c-mu muted, c-tr track, c-pr primary stroke, c-bg page-background stroke, c-w white.
# Presentation attributes give a plain fallback where a viewer drops the style sheet.

def svg(width: int, height: int, body: str, label: str) -> str:
    """An inline SVG of the given size, described by ``label`` for screen readers."""
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{html.escape(label)}">{body}</svg>')


def text(x: float, y: float, s: str, anchor: str = "start", cls: str = "", extra: str = "") -> str:
    """``s`` at (x, y); ``cls``: the explorer style sheet's classes; ``extra``: more attributes, as text."""
    return (f'<text x="{_n(x)}" y="{_n(y)}"' + (f' text-anchor="{anchor}"' if anchor != "start" else "")
            + (f' class="{cls}"' if cls else "") + (f" {extra}" if extra else "") + f">{html.escape(s)}</text>")


def rect(x: float, y: float, w: float, h: float, fill: str = "none", cls: str = "", extra: str = "") -> str:
    return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"'
            + (f' class="{cls}"' if cls else "") + (f" {extra}" if extra else "") + "/>")


def line(x1: float, y1: float, x2: float, y2: float, cls: str = "c-mu", stroke: str = "#888", extra: str = "") -> str:
    return (f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"'
            + (f' class="{cls}"' if cls else "") + (f" {extra}" if extra else "") + "/>")


def pixel_image(x: float, y: float, size: float, uri: str, id: str = "") -> str:
    """An embedded image scaled to ``size`` with hard pixel edges (no smoothing)."""
    return (f'<image{f" id={chr(34)}{id}{chr(34)}" if id else ""} x="{_n(x)}" y="{_n(y)}" width="{_n(size)}" '
            f'height="{_n(size)}" href="{uri}" preserveAspectRatio="none" style="image-rendering:pixelated"/>')


def use(ref: str, x: float = 0, y: float = 0) -> str:
    return f'<use href="#{ref}"' + (f' x="{_n(x)}" y="{_n(y)}"' if x or y else "") + "/>"


def grid_path(x0: float, y0: float, size: float, cells: int, width: float) -> str:
    """The inner lines of a ``cells`` x ``cells`` grid over a square, in the page's background colour."""
    step = size / cells
    d = "".join(f"M{_n(x0 + i * step)} {_n(y0)}V{_n(y0 + size)}M{_n(x0)} {_n(y0 + i * step)}H{_n(x0 + size)}"
                for i in range(1, cells))
    return f'<path d="{d}" stroke="#fff" stroke-width="{_n(width)}" fill="none" class="c-bg"/>' if d else ""


def superscript(n: int) -> str:
    """An integer in Unicode superscript digits: -3 -> '⁻³' (for 10⁻³ in SVG text)."""
    return str(n).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


class LogAxis:
    """Maps values in [10^lo, 10^hi] to [x0, x0 + width] on a log scale."""

    def __init__(self, lo: int, hi: int, x0: float, width: float):
        self.lo, self.hi, self.x0, self.width = lo, hi, x0, width

    @classmethod
    def covering(cls, values: Sequence[float], x0: float, width: float) -> "LogAxis":
        return cls(math.floor(math.log10(min(values))), math.ceil(math.log10(max(values))), x0, width)

    def __call__(self, v: float) -> float:
        return self.x0 + self.width * (math.log10(v) - self.lo) / (self.hi - self.lo)

    def ticks(self, y: float) -> str:
        """Decade marks below ``y``, labelled 1, 10, ..., 1K, ... (every other one on a long axis)."""
        every = 1 if self.hi - self.lo <= 6 else 2
        out = []
        for e in range(self.lo, self.hi + 1, every):
            x = self(10.0 ** e)
            label = human(10 ** e) if e <= 11 else f"10{superscript(e)}"
            out += [line(x, y, x, y + 4), text(x, y + 15, label, "middle", "c-xs c-mu")]
        return "".join(out)


def track(x0: float, y: float, width: float, height: float = 16) -> str:
    """The pale full-width band a :func:`bar` is drawn over."""
    return rect(x0, y, width, height, "#ccc", "c-tr", 'opacity=".45"')


def bar(x0: float, y: float, x1: float, color: str, value: str, height: float = 16) -> str:
    """A horizontal bar from x0 to x1 (over its track, drawn separately) with its value after it."""
    return rect(x0, y, max(x1 - x0, 1), height, color) + text(x1 + 5, y + height - 3, value, cls="c-s")
