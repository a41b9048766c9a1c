"""The experiments under ``book/results/`` read back, and what a ConvMixer does at initialisation.

Chapter 4 (residual choices and normalization)::

    ABLATION_GRID        the eleven (residual, norm, activation) variants of the full-data ablation
    variant_name         "spatial-batch", "spatial-batch-relu", ... : the name of a variant's result folder
    load_ablation        read the ablation's ``history.json`` + ``config.json`` folders
    ablation_architecture   the architecture every run of an ablation shares (to measure it at init)
    summarize_ablation   mean and spread over seeds of each variant's final test accuracy
    init_statistics      per-layer activation RMS and gradient norms of one model on one batch, read
                         from the token grids of ``ConvMixer.forward_intermediates``
    measure_init         init_statistics of each variant, for each of several random initialisations
    summarize_init       one variant's measurements, averaged over the initialisations, per layer
    init_gradient_table  one row per variant: the gradient's growth from the last layer to the first
                         at initialisation, and the activation sizes, averaged over seeds

Whether two variants differ by more than the seed-to-seed noise is :mod:`convmixer.book.stats`'
question.  "Layer l" below means the token grid z_l after l ConvMixer layers, with z_0 the patch
embedding's output, so a ConvMixer-h/d has d + 1 measured points.  The model is measured in training
mode, exactly as the first optimisation step sees it: BatchNorm normalises with the batch's statistics.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ..model import NORMS, RESIDUALS, ConvMixer

# The full-data ablation (benchmarks/ablation.py): every placement with each norm, plus ReLU at
# the paper's placement with BatchNorm.  (residual, norm, activation), the paper's variant first.
ABLATION_GRID: tuple[tuple[str, str, str], ...] = (
    tuple((r, n, "gelu") for r in RESIDUALS for n in NORMS) + (("spatial", "batch", "relu"),))


def variant_name(residual: str, norm: str, activation: str = "gelu") -> str:
    """The folder name of a variant's runs: ``"spatial-batch"``, or ``"spatial-batch-relu"`` for a non-GELU one."""
    return f"{residual}-{norm}" if activation == "gelu" else f"{residual}-{norm}-{activation}"


# --------------------------------------------------------------------------- the ablation's results

def load_ablation(folder: str | Path) -> list[dict]:
    """Every run under ``folder``: one sub-folder per run holding ``history.json`` and ``config.json``.

    Each run is returned as a dict with ``name`` (the folder's name), ``residual``, ``norm``,
    ``activation``, ``variant`` (``variant_name``), ``seed``, ``history`` (the trainer's list of
    per-epoch records) and ``config`` (the trainer's ``config.json``: ``train``, ``model``,
    ``hardware``, ``torch``).  Sub-folders without a ``history.json`` are not runs and are skipped.
    Runs are sorted by variant, in the order of ``ABLATION_GRID``, then by seed.
    """
    runs = []
    for run_dir in sorted(Path(folder).iterdir()):
        if not (run_dir / "history.json").is_file():
            continue
        history = json.loads((run_dir / "history.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        model = config["model"]
        activation = model.get("activation", "gelu")
        runs.append({"name": run_dir.name, "residual": model["residual"], "norm": model["norm"],
                     "activation": activation, "variant": variant_name(model["residual"], model["norm"], activation),
                     "seed": config["train"]["seed"], "history": history, "config": config})
    return sorted(runs, key=lambda r: (*_variant_order(r), r["seed"]))


def _variant_order(run: dict) -> tuple:
    """GELU before other activations, then the placement in ``RESIDUALS`` order, then the norm:
    ``ABLATION_GRID``'s order."""
    return (run["activation"] != "gelu", RESIDUALS.index(run["residual"]), NORMS.index(run["norm"]),
            run["activation"])


def ablation_architecture(runs: Sequence[dict]) -> dict:
    """The model settings every run shares (``dim``, ``depth``, ``kernel_size``, ``patch_size``, ...),
    without the ones the ablation varies (``residual``, ``norm``, ``activation``).

    Raises ``ValueError`` if the runs disagree: then there is no single architecture to measure.
    """
    varied = {"residual", "norm", "activation"}
    shared = [{k: v for k, v in r["config"]["model"].items() if k not in varied} for r in runs]
    if not shared or any(s != shared[0] for s in shared):
        raise ValueError("the runs do not share one architecture" if shared else "no runs")
    return shared[0]


def summarize_ablation(runs: Sequence[dict], metric: str = "test_accuracy") -> list[dict]:
    """Per variant: the seeds, the final-epoch ``metric`` of each, their mean, and their spread.

    Variants come in the order of ``runs`` (``load_ablation``'s order).  ``spread`` is the sample
    standard deviation over seeds (0.0 for a single seed); with two or three seeds it is a rough
    indication of run-to-run noise, not a confidence interval.
    """
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        finals = [r["history"][-1][metric] for r in mine]
        rows.append({"variant": name, "residual": mine[0]["residual"],
                     "norm": mine[0]["norm"], "activation": mine[0]["activation"],
                     "seeds": [r["seed"] for r in mine], "finals": finals,
                     "mean": statistics.fmean(finals),
                     "spread": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                     "seconds": statistics.fmean(r["history"][-1]["elapsed_seconds"] for r in mine)})
    return rows


# --------------------------------------------------------------------------- statistics at initialisation

def init_statistics(model: ConvMixer, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Per-layer statistics of one forward and backward pass of the cross-entropy on a batch.

    Returns lists indexed by layer l = 0..d (z_0: the patch embedding's output)::

        activation_rms    sqrt(mean(z_l^2)): the typical size of one entry of the token grid
        grad_norm         ||dL/dz_l||, the Frobenius norm of the loss's gradient w.r.t. the whole grid
        weight_grad_norm  ||dL/dtheta_l||, the gradient norm of the parameters of the block that
                          produces z_l (the patch embedding for l = 0, ConvMixer layer l otherwise)

    and ``loss``, a one-element list.  Nothing is updated: the gradients are discarded afterwards.
    The model is put in training mode for the measurement and restored to its previous mode.
    """
    blocks: list[nn.Module] = [model.patch_embed, *model.layers]     # the parameters that produce z_0, ..., z_d
    was_training = model.training
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        logits, grids = model.forward_intermediates(images)
        grads: list[torch.Tensor | None] = [None] * len(grids)
        for i, z in enumerate(grids):        # dL/dz_l as autograd computes it (retain_grad may change its layout)
            z.register_hook(lambda g, i=i: grads.__setitem__(i, g.detach()))
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        weight_grad_norm = [
            math.sqrt(sum(float(p.grad.pow(2).sum()) for p in block.parameters() if p.grad is not None))
            for block in blocks
        ]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {
        "activation_rms": [float(z.detach().pow(2).mean().sqrt()) for z in grids],
        "grad_norm": [float(g.norm()) for g in grads],
        "weight_grad_norm": weight_grad_norm,
        "loss": [float(loss.detach())],
    }


def measure_init(images: torch.Tensor, labels: torch.Tensor,
                 variants: Sequence[tuple[str, str, str]] = ABLATION_GRID, seeds: Iterable[int] = (0, 1, 2),
                 channels_last: bool = True, **architecture) -> dict[tuple[str, str, str], list[dict]]:
    """:func:`init_statistics` of each variant for each seed: ``{(residual, norm, activation): [one
    dict per seed]}``, every model measured on the same batch.

    ``architecture`` fixes everything but the variant (``dim``, ``depth``, ``kernel_size``,
    ``patch_size``; e.g. ``ablation_architecture(runs)``, so that the measurement is made at the
    depth the ablation trained).  The seed sets the initial weights, ``torch.manual_seed(seed)``
    before ``ConvMixer(...)``.  ``channels_last`` only changes the memory layout (the depthwise
    convolution's backward pass is several times faster that way on a CPU), not the function
    computed.  Measure once, then summarise the same measurements for a figure
    (:func:`summarize_init`) and for a table (:func:`init_gradient_table`).
    """
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    seeds = tuple(seeds)
    measured = {}
    for residual, norm, activation in variants:
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = ConvMixer(residual=residual, norm=norm, activation=activation, **architecture)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            runs.append(init_statistics(model, images, labels))
        measured[residual, norm, activation] = runs
    return measured


def _geometric_mean(values: Iterable[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summarize_init(runs: Sequence[dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    """One variant's :func:`init_statistics` over several seeds (a value of :func:`measure_init`),
    summarised per layer.

    Returns ``{statistic: {"mean": [...], "min": [...], "max": [...]}}``: the mean over seeds and
    the range the seeds span, per layer.  For gradient norms, which vary by orders of magnitude
    along the network, the mean is geometric (the mean of the logarithms).
    """
    if not runs:
        raise ValueError("summarize_init needs the measurements of at least one seed")
    summary = {}
    for key in runs[0]:
        per_layer = list(zip(*(run[key] for run in runs)))
        geometric = key.endswith("grad_norm")
        mean = [_geometric_mean(vals) if geometric else statistics.fmean(vals) for vals in per_layer]
        summary[key] = {"mean": mean, "min": [min(v) for v in per_layer], "max": [max(v) for v in per_layer]}
    return summary


def init_gradient_table(measured: dict[tuple[str, str, str], list[dict]]) -> list[dict]:
    """What each variant's gradient does at initialisation, one row per variant of
    :func:`measure_init`'s result, in its order, for a chapter to print.  A row holds::

        variant, residual, norm, activation
        loss                  initial cross-entropy, mean over seeds (ln 10 = 2.30 for uniform guesses)
        rms_first, rms_last   RMS(z_0) and RMS(z_d), mean over seeds
        grad_first, grad_last ||dL/dz_0|| and ||dL/dz_d||, geometric mean over seeds
        growth                ||dL/dz_0|| / ||dL/dz_d||: how much the gradient grows on its way back
                              through the d layers (geometric mean over seeds of each seed's ratio)
        growth_min, growth_max   the range of that ratio over the seeds
        growth_per_layer      growth ** (1 / d), the average factor per layer
        relative_growth       the same ratio for ||dL/dz_l|| x RMS(z_l), the gradient with respect to
                              a *relative* change of the tokens: unlike growth it does not change
                              when a variant's tokens are simply larger (a skip after the last norm
                              lets RMS(z_d) grow, which shrinks ||dL/dz_d|| in proportion)
        weight_grad_first, weight_grad_last   ||dL/dtheta|| of the first ConvMixer layer (l = 1)
                              and of the last (l = d), geometric mean over seeds

    These are properties of the untrained network on one batch; whether they predict how well a
    variant trains is a separate question (see :func:`rank_correlation`).
    """
    rows = []
    for (residual, norm, activation), runs in measured.items():
        depth = len(runs[0]["grad_norm"]) - 1          # z_0, ..., z_d
        growths = [run["grad_norm"][0] / run["grad_norm"][-1] for run in runs]
        growth = _geometric_mean(growths)
        relative = [(run["grad_norm"][0] * run["activation_rms"][0])
                    / (run["grad_norm"][-1] * run["activation_rms"][-1]) for run in runs]
        rows.append({
            "variant": variant_name(residual, norm, activation), "residual": residual, "norm": norm,
            "activation": activation,
            "loss": statistics.fmean(run["loss"][0] for run in runs),
            "rms_first": statistics.fmean(run["activation_rms"][0] for run in runs),
            "rms_last": statistics.fmean(run["activation_rms"][-1] for run in runs),
            "grad_first": _geometric_mean(run["grad_norm"][0] for run in runs),
            "grad_last": _geometric_mean(run["grad_norm"][-1] for run in runs),
            "growth": growth, "growth_min": min(growths), "growth_max": max(growths),
            "growth_per_layer": growth ** (1 / depth), "relative_growth": _geometric_mean(relative),
            "weight_grad_first": _geometric_mean(run["weight_grad_norm"][1] for run in runs),
            "weight_grad_last": _geometric_mean(run["weight_grad_norm"][-1] for run in runs),
        })
    return rows


# --------------------------------------------------------------------------- the patch size x kernel size grid

def load_grid(folder: str | Path) -> list[dict]:
    """Every run of a grid under ``folder`` (e.g. ``results/patch_kernel``): one sub-folder per run with
    ``config.json``, ``history.json`` and ``meta.json`` (``benchmarks/run_queue.py`` writes them).

    Each run is a dict with ``name``, ``patch_size``, ``kernel_size``, ``seed``, ``history`` (per-epoch
    records), ``config`` and ``meta`` (``wall_seconds`` and the exact trainer ``command``).  Folders
    without a ``history.json`` (an unfinished or failed run, ``plan.json``) are skipped.  Sorted by
    p, then k, then seed.
    """
    runs = []
    for run_dir in sorted(Path(folder).iterdir()):
        if not (run_dir / "history.json").is_file():
            continue
        config = json.loads((run_dir / "config.json").read_text())
        meta_file = run_dir / "meta.json"
        runs.append({"name": run_dir.name, "patch_size": config["model"]["patch_size"],
                     "kernel_size": config["model"]["kernel_size"], "seed": config["train"]["seed"],
                     "history": json.loads((run_dir / "history.json").read_text()), "config": config,
                     "meta": json.loads(meta_file.read_text()) if meta_file.is_file() else {}})
    return sorted(runs, key=lambda r: (r["patch_size"], r["kernel_size"], r["seed"]))


def summarize_grid(runs: Sequence[dict], metric: str = "test_accuracy") -> list[dict]:
    """One row per (p, k): the seeds, each seed's final ``metric``, their mean and spread, and the mean
    training seconds and images per second of its runs (as measured, on whatever shared the machine)."""
    rows = []
    for p, k in dict.fromkeys((r["patch_size"], r["kernel_size"]) for r in runs):
        mine = [r for r in runs if (r["patch_size"], r["kernel_size"]) == (p, k)]
        finals = [r["history"][-1][metric] for r in mine]
        rows.append({"patch_size": p, "kernel_size": k, "seeds": [r["seed"] for r in mine], "finals": finals,
                     "mean": statistics.fmean(finals),
                     "spread": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                     "train_seconds": statistics.fmean(r["history"][-1]["elapsed_seconds"] for r in mine),
                     "images_per_second": statistics.fmean(
                         statistics.fmean(e["images_per_second"] for e in r["history"]) for r in mine)})
    return rows
