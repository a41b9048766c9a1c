"""The patch size x kernel size grid read back: its cells, the questions asked of it, its figures.

Chapters 1, 2 and the closing chapter read two results: the runs of ``benchmarks/patch_kernel.py``
under ``book/results/patch_kernel/`` (one folder per (p, k, seed), read by
:func:`convmixer.book.experiments.load_grid`) and ``book/results/perf/patch_kernel_speed.json``, the
training step of every (p, k) timed with nothing else running on the machine::

    cell_finals          (p, k) -> the final test accuracies of that cell's seeds
    effect_table         one knob's values as rows, the other's as columns: mean ± spread per cell
    load_speed           (p, k) -> images per second and multiply-accumulates per image
    training_hours       the time a run of the grid's budget needs at the throughput measured alone
    grid_comparisons     the chapter's questions, each a contrast of cell means against the noise
                         pooled over the grid, read together with Holm's correction
    comparison_table     those comparisons as a text table, each with its verdict in words
    plot_accuracy_vs_k   accuracy at equal epochs: one line per p, every seed a dot
    plot_accuracy_vs_time   the same cells against the training time they cost on this CPU
    plot_speed_vs_macs   throughput against multiply-accumulates: do FLOPs predict time?

The runs' own wall clocks (``meta.json``) were taken while the machine did other work too, so the
time axis uses the throughput measured alone instead, and says so.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from .stats import contrast, holm, pooled_noise
from .tables import text_table

Cell = tuple[int, int]  # (patch size p, kernel size k)


def cell_finals(runs: Sequence[dict], metric: str = "test_accuracy") -> dict[Cell, list[float]]:
    """Each (p, k) of the grid with the final ``metric`` of each of its seeds, in seed order."""
    finals: dict[Cell, list[float]] = {}
    for run in sorted(runs, key=lambda r: (r["patch_size"], r["kernel_size"], r["seed"])):
        finals.setdefault((run["patch_size"], run["kernel_size"]), []).append(run["history"][-1][metric])
    return finals


def effect_table(runs: Sequence[dict], knob: str = "p") -> str:
    """Final test accuracy (%) with ``knob`` ("p" or "k") down the side and the other knob across:
    each cell's mean ± standard deviation over its seeds (number of seeds), then the row's average
    of cell means (each cell weighted equally, as :func:`grid_comparisons` weights them)."""
    if knob not in ("p", "k"):
        raise ValueError(f"knob must be 'p' or 'k', got {knob!r}")
    finals = cell_finals(runs)
    ps, ks = sorted({p for p, _ in finals}, reverse=True), sorted({k for _, k in finals})
    rows_of, columns = (ps, ks) if knob == "p" else (ks, ps)
    other = "k" if knob == "p" else "p"

    def cell(row: int, column: int) -> tuple[str, float | None]:
        a = finals.get((row, column) if knob == "p" else (column, row))
        if not a:
            return "-", None
        a = [100 * x for x in a]
        spread = f" ± {statistics.stdev(a):.1f}" if len(a) > 1 else ""
        return f"{statistics.fmean(a):.1f}{spread} ({len(a)})", statistics.fmean(a)

    rows = []
    for r in rows_of:
        cells = [cell(r, c) for c in columns]
        means = [m for _, m in cells if m is not None]
        label = f"p = {r}, {(32 // r) ** 2} tokens" if knob == "p" else f"k = {r}"
        rows.append([label] + [text for text, _ in cells] + [f"{statistics.fmean(means):.1f}"])
    return ("final test accuracy (%): mean ± standard deviation over seeds (number of seeds)\n"
            + text_table(["", *(f"{other} = {c}" for c in columns), "average"], rows))


def load_speed(path: str | Path) -> dict[Cell, dict]:
    """``patch_kernel_speed.json`` as (p, k) -> {"images_per_second", "macs_per_image", "step_seconds"}."""
    cells = json.loads(Path(path).read_text())["cells"]
    return {(c["patch_size"], c["kernel_size"]): {key: c[key] for key in
                                                   ("images_per_second", "macs_per_image", "step_seconds")}
            for c in cells}


def training_hours(images_per_second: float, epochs: int, train_images: int = 50_000) -> float:
    """Hours of training steps for ``epochs`` passes over ``train_images`` at that throughput
    (evaluation and start-up not included)."""
    return epochs * train_images / images_per_second / 3600


def _row_average(finals: dict[Cell, list[float]], a: Cell, b: Cell, vary: Sequence[int], axis: int):
    """Cells for the contrast "a's average minus b's" over ``vary``, the values of the other knob
    (axis 1: k, axis 0: p) present on both sides, each cell weighted equally."""
    def at(cell: Cell, v: int) -> Cell:
        return (cell[0], v) if axis == 1 else (v, cell[1])

    shared = [v for v in vary if at(a, v) in finals and at(b, v) in finals]
    if not shared:
        return [], shared
    w = 1 / len(shared)
    return [(w, finals[at(a, v)]) for v in shared] + [(-w, finals[at(b, v)]) for v in shared], shared


def grid_comparisons(runs: Sequence[dict], confidence: float = 0.95, alpha: float = 0.05) -> dict:
    """Does p matter, and does k, by more than the seed-to-seed noise?

    The noise is estimated once, pooled over every cell with two or more seeds
    (:func:`convmixer.book.stats.pooled_noise`).  The questions, each a difference of cell means
    (:func:`convmixer.book.stats.contrast`):

    * each halving of p (p = 4 against 8, 2 against 4), averaged over the kernel sizes;
    * each step of k (5 against 3, 7 against 5, 9 against 7), averaged over the patch sizes;
    * the largest k against the smallest at each p (does the answer depend on p?).

    Read together with Holm's correction at ``alpha``.  Returns ``{"sd", "dof", "comparisons"}``; each
    comparison has ``question``, ``over`` (what it averages over), ``difference``, ``ci``, ``p``,
    ``p_holm`` and ``beyond_noise`` (it survives Holm).  A difference that does not survive is not
    shown to be zero, only not shown at this budget.
    """
    finals = cell_finals(runs)
    sd, dof = pooled_noise(list(finals.values()))
    ps = sorted({p for p, _ in finals}, reverse=True)
    ks = sorted({k for _, k in finals})
    asked = []
    for small, large in zip(ps[1:], ps):
        cells, shared = _row_average(finals, (small, 0), (large, 0), ks, axis=1)
        asked.append((f"p = {small} vs p = {large}", f"k = {', '.join(map(str, shared))}", cells))
    for large, small in zip(ks[1:], ks):
        cells, shared = _row_average(finals, (0, large), (0, small), ps, axis=0)
        asked.append((f"k = {large} vs k = {small}", f"p = {', '.join(map(str, shared))}", cells))
    if len(ks) > 2:
        for p in ps:
            if (p, ks[-1]) in finals and (p, ks[0]) in finals:
                asked.append((f"k = {ks[-1]} vs k = {ks[0]}", f"p = {p} only",
                              [(1.0, finals[p, ks[-1]]), (-1.0, finals[p, ks[0]])]))
    comparisons = [{"question": q, "over": over, **contrast(cells, sd, dof, confidence)}
                   for q, over, cells in asked if cells]
    for c, h in zip(comparisons, holm([c["p"] for c in comparisons], alpha)):
        c.update(p_holm=h["p_holm"], beyond_noise=h["survives"])
    return {"sd": sd, "dof": dof, "comparisons": comparisons}


def comparison_table(comparisons: Sequence[dict]) -> str:
    """:func:`grid_comparisons`' comparisons, in accuracy points, one per line with its verdict."""
    rows = []
    for c in comparisons:
        low, high = (100 * x for x in c["ci"])
        rows.append([c["question"], c["over"], f"{100 * c['difference']:+.2f}", f"{low:+.2f} to {high:+.2f}",
                     f"{c['p']:.2g}", f"{c['p_holm']:.2g}",
                     "beyond the noise" if c["beyond_noise"] else "within the noise"])
    return text_table(["question", "averaged over", "points", "95% interval", "p", "Holm p", "verdict"], rows)


# ----------------------------------------------------------------------------------- figures

def _plt():
    import matplotlib.pyplot as plt

    return plt


def _p_colors(ps: Sequence[int]) -> dict[int, tuple]:
    """One colour per patch size, the same in every figure (p = 1, 2, 4, 8, 16 along viridis)."""
    cmap = _plt().get_cmap("viridis")
    return {p: cmap(0.85 * math.log2(p) / 4) for p in ps}


def plot_accuracy_vs_k(runs: Sequence[dict], ax=None):
    """Accuracy at equal epochs: final test accuracy (%) against k, one line per p through the cell
    means, every seed a dot."""
    finals = cell_finals(runs)
    ps = sorted({p for p, _ in finals})
    colors = _p_colors(ps)
    ax = ax or _plt().subplots(figsize=(5.5, 3.8))[1]
    for p in ps:
        ks = sorted(k for q, k in finals if q == p)
        for k in ks:
            ax.scatter([k] * len(finals[p, k]), [100 * a for a in finals[p, k]], s=14,
                       color=colors[p], alpha=0.6, linewidths=0)
        ax.plot(ks, [100 * statistics.fmean(finals[p, k]) for k in ks], "-o", color=colors[p],
                markersize=4, label=f"p = {p} ({32 // p}x{32 // p} tokens)")
    ax.set(xlabel="kernel size k", ylabel="test accuracy after 2 epochs (%)",
           xticks=sorted({k for _, k in finals}))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # beside the lines
    return ax


def plot_accuracy_vs_time(runs: Sequence[dict], speed: dict[Cell, dict], epochs: int, ax=None):
    """Each cell's mean accuracy against the hours of training it needs on this CPU, from the
    throughput measured alone (:func:`training_hours`), log time axis, labelled with its k."""
    finals = cell_finals(runs)
    ps = sorted({p for p, _ in finals})
    colors = _p_colors(ps)
    ax = ax or _plt().subplots(figsize=(5.5, 3.8))[1]
    for p in ps:
        cells = sorted((k, c) for (q, k), c in finals.items() if q == p and (q, k) in speed)
        hours = [60 * training_hours(speed[p, k]["images_per_second"], epochs) for k, _ in cells]
        accuracy = [100 * statistics.fmean(c) for _, c in cells]
        ax.scatter(hours, accuracy, color=colors[p], s=22, label=f"p = {p}")
        for (k, _), x, y in zip(cells, hours, accuracy):
            ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="minutes of training on this 2-core CPU (throughput measured alone)",
           ylabel="mean test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_speed_vs_macs(speed: dict[Cell, dict], ax=None):
    """Training throughput (images/s, log) against multiply-accumulates per image (log), each (p, k)
    a labelled point: if time followed FLOPs, the points would fall on one line of slope -1."""
    ps = sorted({p for p, _ in speed})
    colors = _p_colors(ps)
    ax = ax or _plt().subplots(figsize=(5.5, 3.8))[1]
    for (p, k), s in sorted(speed.items()):
        ax.scatter(s["macs_per_image"] / 1e6, s["images_per_second"], color=colors[p], s=22,
                   label=f"p = {p}" if k == min(q for r, q in speed if r == p) else None)
        ax.annotate(f"k={k}", (s["macs_per_image"] / 1e6, s["images_per_second"]),
                    textcoords="offset points", xytext=(4, 3), fontsize=7)
    # time proportional to the MACs, at the grid's median time per MAC: a line of slope -1
    per_mac = statistics.median(1 / (s["images_per_second"] * s["macs_per_image"]) for s in speed.values())
    macs = [min(s["macs_per_image"] for s in speed.values()), max(s["macs_per_image"] for s in speed.values())]
    ax.plot([m / 1e6 for m in macs], [1 / (per_mac * m) for m in macs], "--", color="grey", linewidth=1,
            label="time proportional to MACs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="multiply-accumulates per image (millions)", ylabel="training images per second")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
    return ax
