"""Figures a reader can move without a running kernel: every state drawn when the chapter runs.

An :class:`Explorer` is a figure with controls: sliders (:class:`Slider`) and menus
(:class:`Choice`).  When the notebook is executed, every combination of control values is drawn
as a small SVG (pixels, where a figure shows them, are tiny PNG images inside it), and all the
states go into the cell's one HTML output together with a few lines of inline script that shows
the state matching the controls.  Nothing is loaded from anywhere, so the same output works in
the built website, in Colab, and in JupyterLab or the classic notebook once the cell has run or
the notebook is trusted (an untrusted notebook shows the first state, without controls that move).

Controls are ordinary form elements: each has a ``<label>``, a slider shows its current value
next to it (and tells screen readers through ``aria-valuetext``), and the arrow keys move it.
Colours come from the book theme's CSS variables (with plain fallbacks outside the site) and text
uses ``currentColor``, so a figure reads in light and in dark mode.

Saved outputs must be byte-identical between runs (nbval compares the HTML): element ids derive
from the explorer's ``name``, never from a counter or a random source; numbers are rounded to what
a frame shows before they are drawn; PNG images are written with uncompressed (stored) deflate
blocks, so their bytes do not depend on the zlib build.

The drawing helpers below write PNG and SVG as text (:func:`png_data_uri`, :func:`svg`,
:func:`text`, :func:`rect`, :class:`LogAxis`, ...); the chapters' explorers, built with them,
are in :mod:`convmixer.explorers`.
"""
from __future__ import annotations

import base64
import html
import itertools
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

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


# --------------------------------------------------------------------------- controls

def _token(value) -> str:
    """A control value as it appears in a frame key (no '|', which separates the values)."""
    text = str(value)
    if "|" in text or '"' in text:
        raise ValueError(f"control value {value!r} may not contain '|' or '\"'")
    return text


@dataclass
class Control:
    """What every control has: a name (its key in the frames), a label, the values it takes, the one it
    starts at (default: the first) and the text shown for each value (default: the values)."""

    name: str
    label: str
    values: Sequence
    value: object = None
    labels: Sequence[str] | None = None

    def __post_init__(self):
        self.values = list(self.values)
        if not self.values:
            raise ValueError(f"control {self.name!r} has no values")
        self.value = self.values[0] if self.value is None else self.value
        if self.value not in self.values:
            raise ValueError(f"control {self.name!r}: start value {self.value!r} is not one of {self.values}")
        self.labels = [str(v) for v in self.values] if self.labels is None else [str(s) for s in self.labels]
        if len(self.labels) != len(self.values):
            raise ValueError(f"control {self.name!r}: {len(self.labels)} labels for {len(self.values)} values")


@dataclass
class Slider(Control):
    """A range slider over ``values`` (numbers or strings), starting at ``value``; it shows ``labels[i]``
    as its current value."""


@dataclass
class Choice(Control):
    """A menu of ``values`` shown as ``labels``, starting at ``value``."""


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError(f"{text!r} gives an empty id")
    return slug


_STYLE = """<style>
.cmx-explorer{margin:.6em 0 1.2em}
.cmx-explorer .cmx-controls{display:flex;flex-wrap:wrap;gap:.4em 1.8em;align-items:center;margin:0 0 .5em}
.cmx-explorer .cmx-control{display:flex;align-items:center;gap:.5em}
.cmx-explorer label{font-weight:600;margin:0;color:inherit}
.cmx-explorer input[type=range]{width:9.5em;accent-color:%(primary)s}
.cmx-explorer output{min-width:3em;font-variant-numeric:tabular-nums}
.cmx-explorer select{color:inherit;background:transparent;border:1px solid %(track)s;border-radius:4px;padding:.1em .3em;font:inherit}
.cmx-explorer select option{color:#000;background:#fff}
.cmx-explorer :focus-visible{outline:2px solid %(primary)s;outline-offset:2px}
.cmx-explorer .cmx-frame svg{display:block;max-width:100%%;height:auto;margin:0;font-size:13px;fill:currentColor}
.cmx-explorer .cmx-caption{margin:.3em 0 0;font-size:.9em;color:%(muted)s}
.cmx-explorer svg .c-b{font-weight:600}
.cmx-explorer svg .c-s{font-size:12px}
.cmx-explorer svg .c-xs{font-size:10.5px}
.cmx-explorer svg text.c-mu{fill:%(muted)s}
.cmx-explorer svg line.c-mu{stroke:%(muted)s}
.cmx-explorer svg .c-tr{fill:%(track)s}
.cmx-explorer svg .c-pr{stroke:%(primary)s}
.cmx-explorer svg .c-bg{stroke:%(background)s}
.cmx-explorer svg .c-w{fill:#fff}
</style>""" % dict(primary=PRIMARY, track=TRACK, muted=MUTED, background=BACKGROUND)

_SCRIPT = """<script>(function(){
var s=document.currentScript,root=(s&&s.closest&&s.closest(".cmx-explorer"))||document.getElementById("%(id)s");
if(!root||root.getAttribute("data-ready"))return;root.setAttribute("data-ready","1");
var controls=[].slice.call(root.querySelectorAll("[data-control]")),frames={};
[].forEach.call(root.querySelectorAll(".cmx-frame"),function(f){frames[f.getAttribute("data-key")]=f;});
function update(){
var key=controls.map(function(c){
if(c.type!=="range")return c.value;
var i=+c.value,label=c.getAttribute("data-labels").split("|")[i],out=root.querySelector('output[for="'+c.id+'"]');
c.setAttribute("aria-valuetext",label);if(out)out.textContent=label;
return c.getAttribute("data-values").split("|")[i];}).join("|");
var shown=frames[key];if(!shown)return;
for(var k in frames)frames[k].hidden=frames[k]!==shown;}
controls.forEach(function(c){c.addEventListener("input",update);c.addEventListener("change",update);});
update();})();</script>"""


def def_id(name: str, *parts) -> str:
    """The id of a definition shared by the frames of explorer ``name`` (see :class:`Explorer`)."""
    return "-".join([f"cmx-{_slug(name)}", *(_slug(str(p)) for p in parts)])


class Explorer:
    """A figure with controls whose every state is precomputed; displays as self-contained HTML.

    ``frames`` maps each combination of control values, a tuple in the order of ``controls``,
    to the HTML (usually one SVG) of that state; every combination must be present.  ``name``
    makes the element ids (``cmx-<name>``, ``cmx-<name>-<control>``): give each explorer on a page
    its own name.  ``defs`` is SVG that all frames share (images, axes), written once in a hidden
    ``<svg>``; a frame shows a piece of it with ``<use href="#...">`` and :func:`def_id`.
    """

    def __init__(self, name: str, controls: Sequence[Slider | Choice], frames: Mapping[tuple, str],
                 caption: str = "", defs: str = ""):
        self.name, self.id = name, f"cmx-{_slug(name)}"
        self.controls, self.caption, self.defs = list(controls), caption, defs
        if len({_slug(c.name) for c in self.controls}) != len(self.controls):
            raise ValueError("two controls share a name")
        self.frames = {tuple(key): frame for key, frame in frames.items()}
        expected = set(itertools.product(*(c.values for c in self.controls)))
        missing, extra = expected - set(self.frames), set(self.frames) - expected
        if missing or extra:
            raise ValueError(f"frames missing for {sorted(missing, key=str)[:3]}, "
                             f"frames for unknown states {sorted(extra, key=str)[:3]}")

    @property
    def start(self) -> tuple:
        """The state shown first (and without script): every control at its ``value``."""
        return tuple(c.value for c in self.controls)

    def _control_html(self, c: Slider | Choice) -> str:
        cid = f"{self.id}-{_slug(c.name)}"
        label = f'<label for="{cid}">{html.escape(c.label)}</label>'
        if isinstance(c, Slider):
            i = c.values.index(c.value)
            values = "|".join(_token(v) for v in c.values)
            labels = "|".join(_token(v) for v in c.labels)
            return (f'<div class="cmx-control">{label}<input type="range" id="{cid}" data-control="{html.escape(c.name)}" '
                    f'min="0" max="{len(c.values) - 1}" step="1" value="{i}" data-values="{html.escape(values)}" '
                    f'data-labels="{html.escape(labels)}" aria-valuetext="{html.escape(c.labels[i])}">'
                    f'<output for="{cid}">{html.escape(c.labels[i])}</output></div>')
        options = "".join(f'<option value="{html.escape(_token(v))}"{" selected" if v == c.value else ""}>'
                          f'{html.escape(text)}</option>' for v, text in zip(c.values, c.labels))
        return (f'<div class="cmx-control">{label}<select id="{cid}" data-control="{html.escape(c.name)}">'
                f'{options}</select></div>')

    def html(self) -> str:
        """The self-contained HTML: style, controls, every frame (all but the start one hidden), script."""
        start = self.start
        frames = "".join(
            f'<div class="cmx-frame" data-key="{html.escape("|".join(_token(v) for v in key))}"'
            f'{"" if key == start else " hidden"}>{frame}</div>'
            for key, frame in self.frames.items())
        caption = f'<p class="cmx-caption">{html.escape(self.caption)}</p>' if self.caption else ""
        defs = (f'<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>{self.defs}</defs></svg>'
                if self.defs else "")
        return (f'<div class="cmx-explorer" id="{self.id}">{_STYLE}{defs}'
                f'<div class="cmx-controls">{"".join(self._control_html(c) for c in self.controls)}</div>'
                f'<div class="cmx-frames">{frames}</div>{caption}{_SCRIPT % dict(id=self.id)}</div>')

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        sizes = " x ".join(f"{c.name} ({len(c.values)})" for c in self.controls)
        return f"Explorer {self.name!r}: {sizes} = {len(self.frames)} states, {len(self.html()) / 1024:.0f} KiB of HTML"


def explorer(name: str, controls: Sequence[Slider | Choice], draw: Callable[..., str], caption: str = "",
             defs: str = "") -> Explorer:
    """An :class:`Explorer` whose frame for each state is ``draw(**{control.name: value})``."""
    frames = {}
    for key in itertools.product(*(c.values for c in controls)):
        frames[key] = draw(**{c.name: v for c, v in zip(controls, key)})
    return Explorer(name, controls, frames, caption, defs)


# --------------------------------------------------------------------------- drawing: PNG and SVG as text

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


def text(x: float, y: float, s: str, anchor: str = "start", cls: str = "") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}"' + (f' text-anchor="{anchor}"' if anchor != "start" else "")
            + (f' class="{cls}"' if cls else "") + f">{html.escape(s)}</text>")


def rect(x: float, y: float, w: float, h: float, fill: str = "none", cls: str = "", extra: str = "") -> str:
    return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"'
            + (f' class="{cls}"' if cls else "") + (f" {extra}" if extra else "") + "/>")


def line(x1: float, y1: float, x2: float, y2: float, cls: str = "c-mu", stroke: str = "#888") -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" class="{cls}"/>'


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
