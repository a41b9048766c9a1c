"""convmixer.book.interactive and convmixer.book.explorers: figures whose every state is precomputed and switched without a kernel.

The browser side (a slider moves, its figure and value label follow) is tested on the built site
by tests/test_site.py; here: the HTML each explorer writes, its determinism, and the numbers drawn.
"""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.book.receptive_fields import receptive_field
from convmixer.book.interactive import Choice, Explorer, Slider, def_id, explorer
from convmixer.book.svg import png_bytes, png_data_uri
from convmixer.book.explorers import (DECADES, mixing_cost_explorer, parameter_share_explorer,
                                      patch_grid_explorer, receptive_field_explorer, receptive_field_states)


def _frames(html: str) -> dict[str, tuple[bool, str]]:
    """data-key -> (hidden, inner HTML) for every frame of an explorer's HTML."""
    found = re.findall(r'<div class="cmx-frame" data-key="([^"]*)"( hidden)?>(.*?)</div>', html, flags=re.S)
    return {key: (bool(hidden), inner) for key, hidden, inner in found}


def _tiny() -> Explorer:
    controls = [Slider("k", "kernel size k", [3, 5, 7], value=5), Choice("kind", "kind", ["a", "b"], labels=["A", "B"])]
    return explorer("Tiny demo", controls, lambda k, kind: f"<svg><text>{k}{kind}</text></svg>")


# --------------------------------------------------------------------------- PNG

@pytest.mark.parametrize("colours", [2, 3, 9, 16, 17, 200])
def test_palette_png_decodes_to_the_same_indices(colours):
    rng = np.random.default_rng(colours)
    pixels = rng.integers(0, colours, size=(13, 29), dtype=np.uint8)          # odd width: row padding
    palette = [f"#{i:02x}{255 - i:02x}{(7 * i) % 256:02x}" for i in range(colours)]
    img = Image.open(io.BytesIO(png_bytes(pixels, palette)))
    assert img.mode == "P" and img.size == (29, 13)
    assert np.array_equal(np.asarray(img), pixels)
    assert img.getpalette()[:3 * colours] == [int(c[i:i + 2], 16) for c in palette for i in (1, 3, 5)]


def test_rgb_png_decodes_to_the_same_pixels_even_beyond_one_deflate_block():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(200, 150, 3), dtype=np.uint8)         # 90 KB: two stored blocks
    img = Image.open(io.BytesIO(png_bytes(pixels)))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), pixels)
    assert png_bytes(pixels) == png_bytes(pixels.copy())
    assert png_data_uri(pixels[:2, :2]).startswith("data:image/png;base64,iVBORw0KGgo")


def test_png_rejects_bad_input():
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4), np.uint8))                                   # indices without a palette
    with pytest.raises(ValueError):
        png_bytes(np.full((4, 4), 3, np.uint8), ["#000000", "#ffffff"])         # index beyond the palette


# --------------------------------------------------------------------------- the HTML

def test_explorer_html_has_every_state_one_shown_and_labelled_controls():
    ex = _tiny()
    html = ex.html()
    frames = _frames(html)
    assert set(frames) == {f"{k}|{kind}" for k in (3, 5, 7) for kind in ("a", "b")}
    assert [key for key, (hidden, _) in frames.items() if not hidden] == ["5|a"]           # the start state
    assert frames["7|b"][1] == "<svg><text>7b</text></svg>"
    # ids come from the name; every control has a label, a slider shows its value
    assert 'id="cmx-tiny-demo"' in html
    assert '<label for="cmx-tiny-demo-k">kernel size k</label>' in html
    assert re.search(r'<input type="range" id="cmx-tiny-demo-k"[^>]* min="0" max="2" step="1" value="1" '
                     r'data-values="3\|5\|7" data-labels="3\|5\|7" aria-valuetext="5">', html)
    assert '<output for="cmx-tiny-demo-k">5</output>' in html
    assert '<label for="cmx-tiny-demo-kind">kind</label><select id="cmx-tiny-demo-kind"' in html
    assert '<option value="a" selected>A</option><option value="b">B</option>' in html
    # self-contained: one inline script, nothing loaded, no address at all
    assert html.count("<script>") == 1 and "src=" not in html and "http" not in html
    assert ex._repr_html_() == html == _tiny().html()
    assert repr(ex) == f"Explorer 'Tiny demo': k (3) x kind (2) = 6 states, {len(html) / 1024:.0f} KiB of HTML"


def test_explorer_checks_its_states():
    controls = [Slider("k", "k", [3, 5])]
    with pytest.raises(ValueError, match="missing"):
        Explorer("x", controls, {(3,): "a"})
    with pytest.raises(ValueError, match="unknown"):
        Explorer("x", controls, {(3,): "a", (5,): "b", (7,): "c"})
    with pytest.raises(ValueError, match="start value"):
        Slider("k", "k", [3, 5], value=4)
    with pytest.raises(ValueError, match="labels"):
        Choice("m", "m", ["a", "b"], labels=["A"])
    with pytest.raises(ValueError, match=r"\|"):
        explorer("x", [Choice("m", "m", ["a|b"])], lambda m: "").html()
    with pytest.raises(ValueError, match="share a name"):
        explorer("x", [Slider("k", "k", [1]), Choice("k", "k", ["a"])], lambda k: "")


def test_shared_definitions_are_written_once_with_ids_from_the_name():
    ex = explorer("Demo", [Slider("p", "p", [1, 2])], lambda p: f'<svg><use href="#{def_id("Demo", "img")}"/></svg>',
                  defs=f'<g id="{def_id("Demo", "img")}"></g>')
    html = ex.html()
    assert def_id("Demo", "img", "Bird 2") == "cmx-demo-img-bird-2"
    assert html.count('id="cmx-demo-img"') == 1 and html.count('href="#cmx-demo-img"') == 2
    assert '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>' in html


# --------------------------------------------------------------------------- the numbers the chapters draw
# (their costs: tests/test_costs.py)

def test_receptive_field_states_are_exact_squares():
    states = receptive_field_states((3, 5), (1, 2), patch_size=2, dim=4)
    grid = 1 + 2 * 4 + 4
    for (k, d), s in states.items():
        assert s["measured"] == (s["formula"], s["formula"]) == (receptive_field(k, 2, d),) * 2
        levels = s["levels"]
        assert levels.shape == (grid, grid) and levels.dtype == np.uint8
        half, c = d * (k - 1) // 2, grid // 2
        inside = np.zeros_like(levels, dtype=bool)
        inside[c - half:c + half + 1, c - half:c + half + 1] = True
        assert (levels[~inside] == len(DECADES)).all() and (levels[inside] < len(DECADES)).all()
        assert levels[c, c] == 0                                         # the largest gradient: its own patch


# --------------------------------------------------------------------------- the chapters' explorers

def _each_control_changes_the_frame(ex: Explorer):
    """From the start state, a step of any one control shows a different frame."""
    frames = _frames(ex.html())
    start = list(ex.start)
    for i, control in enumerate(ex.controls):
        j = control.values.index(start[i])
        moved = list(start)
        moved[i] = control.values[j + 1 if j + 1 < len(control.values) else j - 1]
        key = lambda state: "|".join(str(v) for v in state)
        assert frames[key(moved)][1] != frames[key(start)][1], control.name
    assert len({inner for _, inner in frames.values()}) == len(frames)    # no two states look the same


def test_chapter_explorers_build_deterministically_and_every_control_matters():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.int64).reshape(2, 3, 16, 16).remainder(256).to(torch.uint8)
    builders = [lambda: patch_grid_explorer(images, ["one", "two"], dim=32, depth=2, patch_sizes=(1, 2, 4, 8)),
                lambda: receptive_field_explorer(kernel_sizes=(3, 5), depths=(1, 2, 3), dim=4, start=(3, 2)),
                lambda: mixing_cost_explorer(tokens=(16, 64, 256), widths=(64, 256), start=(64, 64)),
                lambda: parameter_share_explorer(widths=(64, 256), kernel_sizes=(3, 9), start=(64, 3))]
    for build in builders:
        first, second = build(), build()
        html = first.html()
        assert html == second.html()
        assert "NaN" not in html and "nan" not in re.sub(r"data:image/png;base64,[^\"]+", "", html)
        _each_control_changes_the_frame(first)
