"""The mechanism of a figure a reader can move without a running kernel: every state drawn when the
chapter runs.

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

The drawing is :mod:`convmixer.book.svg`'s; the chapters' explorers built with this mechanism are
:mod:`convmixer.book.explorers`.
"""
from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .svg import BACKGROUND, MUTED, PRIMARY, TRACK


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
