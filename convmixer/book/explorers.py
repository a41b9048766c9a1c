"""The chapters' figures a reader can move without a running kernel (every state drawn when the chapter runs)::

    patch_grid_explorer        ch. 1  an image cut into p x p patches; tokens, MACs and parameters
    receptive_field_explorer   ch. 2  measured receptive field of the centre token against k and d
    mixing_cost_explorer       ch. 2  depthwise vs dense conv vs self-attention vs token-MLP, N and h
    parameter_share_explorer   ch. 3  where ConvMixer's parameters go, against h, k and channel mixing

They are built with :mod:`convmixer.book.interactive` (controls, precomputed states, the inline
script) and drawn with :mod:`convmixer.book.svg`.  The numbers they draw come from
:mod:`convmixer.costs` and :mod:`convmixer.book.receptive_fields`; only the layout is here.  Saved
outputs must stay byte-identical between runs (nbval compares the HTML), so every number is rounded
to what a frame shows before it is drawn.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..costs import PARAMETER_PARTS, parameter_shares, patch_size_rows, token_mixing_costs
from ..model import ConvMixer
from .interactive import Choice, Explorer, Slider, def_id, explorer
from .receptive_fields import gradient_map, layers_to_global, nonzero_extent, receptive_field
from .svg import (SERIES, LogAxis, bar, grid_path, line, pixel_image, png_data_uri, rect, superscript,
                  svg, text, track, use)
from .tables import human


# --------------------------------------------------------------------------- the chapters' explorers

# magma sampled from bright (largest values) to dark, one colour per decade; grey = exactly zero.
DECADES = ("#fcf4b6", "#febd82", "#fb835f", "#e44f64", "#b73779", "#842681", "#54137d", "#21114e")
ZERO_GREY = "#a0a0a0"


# --------------------------------------------------------------------------- chapter 1: patches

def patch_grid_explorer(images: torch.Tensor, titles: Sequence[str], dim: int = 256, depth: int = 8,
                        kernel_size: int = 5, patch_sizes: Sequence[int] = (1, 2, 4, 8, 16), start_p: int = 4,
                        name: str = "patch-grid") -> Explorer:
    """Chapter 1: an image cut into p x p patches, with its token count and what ConvMixer-h/d costs at that p.

    ``images`` are (n, 3, S, S) uint8.  One token is outlined and described (3 p^2 numbers in,
    h features out); bars show the tokens N, the MACs per image and the parameters of
    ConvMixer-``dim``/``depth`` (closed forms of :func:`convmixer.costs.patch_size_rows`) on
    scales shared by every p, so that the MACs fall by 4x per doubling of p while the parameters
    hardly move.
    """
    size = images.shape[-1]
    rows = {r["p"]: r for r in patch_size_rows(dim, depth, kernel_size, patch_sizes, size)}
    side, x0, y0, bx, bw = 256, 10, 26, 300, 290
    scale = side / size
    tokens_axis = LogAxis.covering([1] + [r["tokens"] for r in rows.values()], bx, bw)
    macs_axis = LogAxis.covering([r["total_macs"] for r in rows.values()], bx, bw)
    max_params = max(r["params"] for r in rows.values())
    step = 10 ** math.floor(math.log10(max_params))
    params_max = math.ceil(max_params / step) * step          # e.g. 788K -> 800K
    bars_y = (80, 142, 204)                                   # label baselines of the three bars
    axes = [text(bx, bars_y[0], "tokens N (log scale)", cls="c-s"), track(bx, bars_y[0] + 6, bw),
            tokens_axis.ticks(bars_y[0] + 24),
            text(bx, bars_y[1], f"MACs per image, ConvMixer-{dim}/{depth} (log scale)", cls="c-s"),
            track(bx, bars_y[1] + 6, bw), macs_axis.ticks(bars_y[1] + 24),
            text(bx, bars_y[2], "parameters (linear scale)", cls="c-s"), track(bx, bars_y[2] + 6, bw)]
    for frac in (0, 0.5, 1):
        x = bx + bw * frac
        axes += [line(x, bars_y[2] + 24, x, bars_y[2] + 28),
                 text(x, bars_y[2] + 39, human(int(params_max * frac)), "middle", "c-xs c-mu")]
    defs = [f'<g id="{def_id(name, "axes")}">{"".join(axes)}</g>']
    defs += [pixel_image(0, 0, side, png_data_uri(img.permute(1, 2, 0).numpy()), def_id(name, "image", t))
             for img, t in zip(images, titles)]

    def draw(image: str, p: int) -> str:
        r = rows[p]
        g = size // p
        t = g // 2                      # the outlined token: just below and right of the centre
        body = [text(x0, 16, f"{image}, cut into {p}×{p}-pixel patches", cls="c-b"),
                use(def_id(name, "image", image), x0, y0), grid_path(x0, y0, side, g, 1 if p * scale < 12 else 2),
                rect(x0 + t * p * scale, y0 + t * p * scale, p * scale, p * scale, cls="c-pr",
                     extra='stroke="#1f77b4" stroke-width="2.5"'),
                text(bx, 16, f"p = {p}: a {g} × {g} grid of N = {r['tokens']} tokens", cls="c-b"),
                text(bx, 36, f"one token (outlined): 3·{p}² = {3 * p * p} numbers"),
                text(bx, 52, f"→ one linear map → h = {dim} features"),
                use(def_id(name, "axes")),
                bar(bx, bars_y[0] + 6, tokens_axis(r["tokens"]), SERIES[0], human(r["tokens"])),
                bar(bx, bars_y[1] + 6, macs_axis(r["total_macs"]), SERIES[1], human(r["total_macs"])),
                bar(bx, bars_y[2] + 6, bx + bw * r["params"] / params_max, SERIES[2], human(r["params"])),
                text(bx, bars_y[2] + 62, f"of which the patch embedding: {human(r['embed_params'])}", cls="c-s")]
        label = (f"{image} cut into {p} by {p} patches: {g} by {g} = {r['tokens']} tokens; "
                 f"{human(r['total_macs'])} MACs and {human(r['params'])} parameters")
        return svg(640, 290, "".join(body), label)

    start = start_p if start_p in patch_sizes else patch_sizes[0]
    controls = [Choice("image", "image", list(titles)),
                Slider("p", "patch size p", list(patch_sizes), value=start)]
    return explorer(name, controls, draw, defs="".join(defs))


# --------------------------------------------------------------------------- chapter 2: receptive field

def receptive_field_states(kernel_sizes: Sequence[int], depths: Sequence[int], patch_size: int = 2, dim: int = 8,
                           margin: int = 2, seed: int = 0) -> dict[tuple[int, int], dict]:
    """Measured receptive field of the centre token for every (k, d), on one canvas that holds the largest.

    For each state: ``levels``, a (G, G) uint8 map over the token grid, entry j meaning
    ``10^-(j+1) < |gradient| / max <= 10^-j`` (per token, the gradient summed over its p x p
    pixels and colours; the last decade collects everything smaller), and ``len(DECADES)`` where
    the gradient is exactly zero; ``measured``, the (height, width) in pixels of the nonzero
    gradient; and ``formula``, p (1 + d (k - 1)).  The model is the library's ConvMixer at width
    ``dim``, with the same seed for every state, differentiated by :func:`convmixer.book.receptive_fields.gradient_map`.
    """
    grid = 1 + max(depths) * (max(kernel_sizes) - 1) + 2 * margin
    states = {}
    for k in kernel_sizes:
        for d in depths:
            torch.manual_seed(seed)
            model = ConvMixer(dim=dim, depth=d, kernel_size=k, patch_size=patch_size)
            grad = gradient_map(model, grid * patch_size, seed=seed)
            per_token = grad.reshape(grid, patch_size, grid, patch_size).sum((1, 3))
            rel = per_token / per_token.max()
            decade = torch.floor(-torch.log10(rel.clamp_min(1e-300))).clamp(0, len(DECADES) - 1)
            levels = torch.where(rel > 0, decade, torch.tensor(float(len(DECADES)), dtype=rel.dtype))
            states[k, d] = dict(levels=levels.to(torch.uint8).numpy(), measured=nonzero_extent(grad),
                                formula=receptive_field(k, patch_size, d))
    return states


def receptive_field_explorer(kernel_sizes: Sequence[int] = (3, 5, 7, 9), depths: Sequence[int] = tuple(range(1, 9)),
                             patch_size: int = 2, dim: int = 8, image_size: int = 32, start: tuple[int, int] = (5, 2),
                             name: str = "receptive-field") -> Explorer:
    """Chapter 2: how far the centre token sees, measured from gradients, for each kernel size k and depth d.

    Every state is drawn on the same token grid (:func:`receptive_field_states`), so the field
    visibly grows with k and d; the dashed square is the formula p (1 + d (k - 1)).  The text
    gives the measured extent and how many layers every token of an ``image_size`` image needs
    to see all of it with this k.
    """
    states = receptive_field_states(kernel_sizes, depths, patch_size, dim)
    palette = list(DECADES) + [ZERO_GREY]
    p = patch_size
    grid = next(iter(states.values()))["levels"].shape[0]
    cell = 4
    side, x0, y0 = grid * cell, 10, 26
    xr = x0 + side + 20
    legend_y = 178
    legend = [text(xr, legend_y, "|gradient| / max, per token", cls="c-s")]
    for j, color in enumerate(palette):
        label = "0" if j == len(DECADES) else ("1" if j == 0 else f"10{superscript(-j)}")
        label = "≤" + label if j == len(DECADES) - 1 else label
        legend += [rect(xr + j * 34, legend_y + 8, 30, 14, color),
                   text(xr + j * 34 + 15, legend_y + 36, label, "middle", "c-xs")]
    legend.append(text(xr, legend_y + 58, "dashed: the formula's square; cyan: the token", cls="c-s c-mu"))
    defs = f'<g id="{def_id(name, "legend")}">{"".join(legend)}</g>'
    height = max(side + y0 + 8, legend_y + 66)

    def draw(k: int, d: int) -> str:
        s = states[k, d]
        tokens = 1 + d * (k - 1)
        centre = grid // 2
        first = centre - d * (k - 1) // 2
        mh, mw = s["measured"]
        rf = s["formula"]
        body = [text(x0, 16, f"centre token, k = {k}, d = {d}, p = {p}", cls="c-b"),
                pixel_image(x0, y0, side, png_data_uri(s["levels"], palette)),
                rect(x0 + first * cell, y0 + first * cell, tokens * cell, tokens * cell, cls="c-pr",
                     extra='stroke="#1f77b4" stroke-width="1.8" stroke-dasharray="5 3"'),
                rect(x0 + centre * cell, y0 + centre * cell, cell, cell, extra='stroke="#00c8ff" stroke-width="1.2"'),
                text(xr, 44, f"formula p(1 + d(k − 1)) = {p}(1 + {d}·{k - 1}) = {rf} px", cls="c-b"),
                text(xr, 64, f"measured: the gradient is nonzero on {mh} × {mw} px"),
                text(xr, 82, "(equal to the formula)" if mh == mw == rf else "(differs from the formula)"),
                text(xr, 100, f"= {tokens} × {tokens} tokens of the {grid} × {grid} shown"),
                text(xr, 126, f"With k = {k}, every token of a {image_size}×{image_size} image"),
                text(xr, 144, f"({image_size // p}×{image_size // p} tokens) sees all of it after "
                              f"{layers_to_global(k, p, image_size)} layers."),
                use(def_id(name, "legend"))]
        label = (f"kernel size {k}, depth {d}: receptive field {rf} pixels by the formula, "
                 f"{mh} by {mw} pixels measured")
        return svg(xr + 320, height, "".join(body), label)

    controls = [Slider("k", "kernel size k", list(kernel_sizes), value=start[0]),
                Slider("d", "depth d", list(depths), value=start[1])]
    return explorer(name, controls, draw, defs=defs)


# --------------------------------------------------------------------------- chapter 2: cost of token mixing

def mixing_cost_explorer(tokens: Sequence[int] = (16, 64, 196, 256, 576, 1024, 3136),
                         widths: Sequence[int] = (64, 128, 256, 512, 768, 1024, 1536), kernel_size: int = 9,
                         start: tuple[int, int] = (196, 768), name: str = "mixing-cost") -> Explorer:
    """Chapter 2: parameters and FLOPs of one token-mixing layer against the token count N and width h.

    Four kinds (:func:`convmixer.costs.token_mixing_costs`) on two log axes shared by every state; ``tokens``
    must be perfect squares (the text names the grid).
    """
    for n in tokens:
        if math.isqrt(n) ** 2 != n:
            raise ValueError(f"token count {n} is not a square grid")
    k = kernel_size
    all_costs = {(n, h): token_mixing_costs(n, h, k) for n in tokens for h in widths}
    kinds = list(next(iter(all_costs.values())))
    params_axis = LogAxis.covering([v[0] for c in all_costs.values() for v in c.values()], 160, 200)
    flops_axis = LogAxis.covering([v[1] for c in all_costs.values() for v in c.values()], 430, 200)
    notes = {"depthwise conv": "ConvMixer", "dense conv": "k×k, h→h", "self-attention": "ViT",
             "token-mixing MLP": "MLP-Mixer"}
    rows_y = [50 + 36 * i for i in range(len(kinds))]
    axes_y = rows_y[-1] + 36
    static = [text(160, 40, "parameters (log scale)", cls="c-s"), text(430, 40, "FLOPs (log scale)", cls="c-s"),
              params_axis.ticks(axes_y), flops_axis.ticks(axes_y)]
    for kind, y in zip(kinds, rows_y):
        static += [text(10, y + 13, kind), text(10, y + 27, notes[kind], cls="c-xs c-mu"),
                   track(160, y + 4, params_axis.width), track(430, y + 4, flops_axis.width)]
    defs = f'<g id="{def_id(name, "axes")}">{"".join(static)}</g>'

    def draw(n: int, h: int) -> str:
        cost = all_costs[n, h]
        g = math.isqrt(n)
        body = [text(10, 16, f"one token-mixing layer, one image: N = {n} tokens ({g}×{g}), h = {h}, k = {k}",
                     cls="c-b"), use(def_id(name, "axes"))]
        for i, (kind, y) in enumerate(zip(kinds, rows_y)):
            params, flops = cost[kind]
            body += [bar(160, y + 4, params_axis(params), SERIES[i], human(params)),
                     bar(430, y + 4, flops_axis(flops), SERIES[i], human(flops))]
        dw, attn = cost["depthwise conv"][1], cost["self-attention"][1]
        body += [text(10, axes_y + 40, f"self-attention ÷ depthwise: {attn / dw:.0f}× the FLOPs; its N² term is "
                                       f"{4 * n * n * h / attn:.0%} of them (most, once N > 2h = {2 * h})."),
                 text(10, axes_y + 58, f"dense ÷ depthwise: h = {cost['dense conv'][1] // dw}× the FLOPs; the "
                                       f"token-MLP's {human(cost['token-mixing MLP'][0])} weights grow with N.")]
        label = "; ".join(f"{kind}: {human(p_)} parameters, {human(f_)} FLOPs" for kind, (p_, f_) in cost.items())
        return svg(680, axes_y + 68, "".join(body), f"N = {n}, h = {h}: {label}")

    controls = [Slider("n", "tokens N", list(tokens), value=start[0],
                       labels=[f"{n} ({math.isqrt(n)}×{math.isqrt(n)})" for n in tokens]),
                Slider("h", "width h", list(widths), value=start[1])]
    return explorer(name, controls, draw, defs=defs)


# --------------------------------------------------------------------------- chapter 3: where the parameters go

def parameter_share_explorer(widths: Sequence[int] = (64, 128, 256, 512, 768, 1024, 1536, 2048),
                             kernel_sizes: Sequence[int] = (3, 5, 7, 9, 11, 13, 15), depth: int = 20,
                             patch_size: int = 7, n_classes: int = 1000, start: tuple[int, int] = (1536, 9),
                             name: str = "parameter-share") -> Explorer:
    """Chapter 3: each part's share of ConvMixer-h/``depth``'s parameters, against h, k and the channel mixing.

    The menu swaps ConvMixer's pointwise convolution for MLP-Mixer's two-layer channel MLP (r = 4).
    """
    mixings = {"pointwise": ("pointwise conv (ConvMixer)", None), "mlp4": ("two-layer MLP, r = 4 (Mixer, ViT)", 4)}
    colors = dict(zip(PARAMETER_PARTS, (SERIES[0], SERIES[1], SERIES[2], SERIES[6], SERIES[4])))
    d, p = depth, patch_size
    bar_y, legend_y, width = 46, 100, 620
    spot = {part: (10 + (i % 3) * 210, legend_y + (i // 3) * 20) for i, part in enumerate(PARAMETER_PARTS)}
    legend = [rect(x, y - 10, 12, 12, colors[part]) for part, (x, y) in spot.items()]
    defs = f'<g id="{def_id(name, "legend")}">{"".join(legend)}</g>'

    def draw(h: int, k: int, mixing: str) -> str:
        title, ratio = mixings[mixing]
        parts = parameter_shares(h, d, k, p, n_classes, mlp_ratio=ratio)
        total = sum(parts.values())
        body = [text(10, 16, f"ConvMixer-{h}/{d}, k = {k}, p = {p}, {n_classes} classes; channel mixing: {title}",
                     cls="c-b"),
                text(10, 36, f"{total:,} parameters in all"), use(def_id(name, "legend"))]
        x = 10.0
        for i, part in enumerate(PARAMETER_PARTS):
            w = width * parts[part] / total
            share = 100 * parts[part] / total
            body.append(rect(x, bar_y, w, 30, colors[part]))
            if w >= 34:
                body.append(text(x + w / 2, bar_y + 20, f"{share:.0f}%", "middle", "c-b c-w"))
            body.append(text(spot[part][0] + 17, spot[part][1], f"{part}: {share:.1f}%", cls="c-s"))
            x += w
        depthwise_layer, channel_layer = h * k * k + h, parts["channel mixing"] // d
        formula = "h² + h" if ratio is None else f"2·{ratio}h² + {ratio}h + h"
        body += [text(10, legend_y + 54, f"per layer: depthwise h·k² + h = {depthwise_layer:,}; "
                                         f"channel mixing {formula} = {channel_layer:,}"),
                 text(10, legend_y + 74, f"depthwise ÷ channel mixing = {depthwise_layer / channel_layer:.3f}"
                      + (f", close to k²/h = {k * k}/{h} = {k * k / h:.3f}" if ratio is None else ""))]
        label = f"ConvMixer-{h}/{d}, k = {k}, {title}: " + ", ".join(
            f"{part} {100 * parts[part] / total:.1f}%" for part in PARAMETER_PARTS)
        return svg(640, legend_y + 84, "".join(body), label)

    controls = [Slider("h", "width h", list(widths), value=start[0]),
                Slider("k", "kernel size k", list(kernel_sizes), value=start[1]),
                Choice("mixing", "channel mixing", list(mixings), labels=[v[0] for v in mixings.values()])]
    return explorer(name, controls, draw, defs=defs)
