"""What a ConvMixer does at initialisation, and the results of the residual/norm ablation.

Chapter 4 (residual choices and normalization) uses these helpers:

    VARIANTS             the six (residual, norm) pairs the library can build
    variant_name         "spatial-batch", ... : the name of a variant's result folder
    init_statistics      per-layer activation RMS and gradient norms of one model on one batch,
                         measured with forward hooks (activations) and tensor hooks (their gradients)
    average_init_statistics   the same, averaged over several random initialisations
    load_ablation        read the ablation's ``history.json`` + ``config.json`` folders
    summarize_ablation   mean and spread over seeds of each variant's final test accuracy

"Layer l" below means the token grid z_l after l ConvMixer layers, with z_0 the patch embedding's
output, so a ConvMixer-h/d has d + 1 measured points.  The model is measured in training mode,
exactly as the first optimisation step sees it: BatchNorm normalises with the batch's statistics.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .model import NORMS, RESIDUALS, ConvMixer

VARIANTS: tuple[tuple[str, str], ...] = tuple((r, n) for r in RESIDUALS for n in NORMS)


def variant_name(residual: str, norm: str) -> str:
    """The folder name of a variant's runs, e.g. ``variant_name("spatial", "batch") == "spatial-batch"``."""
    return f"{residual}-{norm}"


def init_statistics(model: ConvMixer, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Per-layer statistics of one forward and backward pass of the cross-entropy on a batch.

    Returns lists indexed by layer l = 0..d (z_0: the patch embedding's output):

    ``activation_rms``  sqrt(mean(z_l^2)): the typical size of one entry of the token grid
    ``grad_norm``       ||dL/dz_l||, the Frobenius norm of the loss's gradient w.r.t. the whole grid
    ``weight_grad_norm`` ||dL/dtheta_l||, the gradient norm of the parameters of the block that
                        produces z_l (the patch embedding for l = 0, ConvMixer layer l otherwise)

    and ``loss``, a one-element list.  Nothing is updated: the gradients are discarded afterwards.
    The model is put in training mode for the measurement and restored to its previous mode.
    """
    blocks: list[nn.Module] = [model.patch_embed, *model.layers]
    outputs: list[torch.Tensor | None] = [None] * len(blocks)
    grads: list[torch.Tensor | None] = [None] * len(blocks)

    def keep(i: int):
        def hook(module, inputs, output):
            outputs[i] = output.detach()

            def grad_hook(g):
                grads[i] = g.detach()

            output.register_hook(grad_hook)
        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(blocks)]
    was_training = model.training
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        weight_grad_norm = [
            math.sqrt(sum(float(p.grad.pow(2).sum()) for p in block.parameters() if p.grad is not None))
            for block in blocks
        ]
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {
        "activation_rms": [float(z.pow(2).mean().sqrt()) for z in outputs],
        "grad_norm": [float(g.norm()) for g in grads],
        "weight_grad_norm": weight_grad_norm,
        "loss": [float(loss.detach())],
    }


def average_init_statistics(images: torch.Tensor, labels: torch.Tensor, seeds: Iterable[int] = (0, 1, 2),
                            channels_last: bool = True, **model_kwargs) -> dict[str, dict[str, list[float]]]:
    """``init_statistics`` of ``ConvMixer(**model_kwargs)`` for each seed, summarised per layer.

    Returns ``{statistic: {"mean": [...], "min": [...], "max": [...]}}``: the mean over seeds and
    the range the seeds span, per layer.  For gradient norms, which vary by orders of magnitude
    along the network, the mean is geometric (the mean of the logarithms).
    ``channels_last`` only changes the memory layout (the depthwise convolution's backward pass is
    several times faster that way on a CPU), not the function computed.
    """
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = ConvMixer(**model_kwargs)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        runs.append(init_statistics(model, images, labels))
    summary = {}
    for key in runs[0]:
        per_layer = list(zip(*(run[key] for run in runs)))
        geometric = key.endswith("grad_norm")
        mean = [math.exp(statistics.fmean(math.log(v) for v in vals)) if geometric else statistics.fmean(vals)
                for vals in per_layer]
        summary[key] = {"mean": mean, "min": [min(v) for v in per_layer], "max": [max(v) for v in per_layer]}
    return summary


# --------------------------------------------------------------------------- ablation results

def load_ablation(folder: str | Path) -> list[dict]:
    """Every run under ``folder``: one sub-folder per run holding ``history.json`` and ``config.json``.

    Each run is returned as a dict with ``name`` (the folder's name), ``residual``, ``norm``,
    ``variant`` (``variant_name``), ``seed``, ``history`` (the trainer's list of per-epoch records)
    and ``config`` (the trainer's ``config.json``: ``train``, ``model``, ``hardware``, ``torch``).
    Runs are sorted by variant, in the order of ``VARIANTS``, then by seed.
    """
    runs = []
    for run_dir in sorted(Path(folder).iterdir()):
        if not (run_dir / "history.json").is_file():
            continue
        history = json.loads((run_dir / "history.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        model = config["model"]
        runs.append({"name": run_dir.name, "residual": model["residual"], "norm": model["norm"],
                     "variant": variant_name(model["residual"], model["norm"]),
                     "seed": config["train"]["seed"], "history": history, "config": config})
    order = {variant_name(*v): i for i, v in enumerate(VARIANTS)}
    return sorted(runs, key=lambda r: (order[r["variant"]], r["seed"]))


def summarize_ablation(runs: Sequence[dict], metric: str = "test_accuracy") -> list[dict]:
    """Per variant: the seeds, the final-epoch ``metric`` of each, their mean, and their spread.

    ``spread`` is the sample standard deviation over seeds (0.0 for a single seed); with two or
    three seeds it is a rough indication of run-to-run noise, not a confidence interval.
    """
    rows = []
    for residual, norm in VARIANTS:
        name = variant_name(residual, norm)
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        finals = [r["history"][-1][metric] for r in mine]
        rows.append({"variant": name, "residual": residual, "norm": norm,
                     "seeds": [r["seed"] for r in mine], "finals": finals,
                     "mean": statistics.fmean(finals),
                     "spread": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                     "seconds": statistics.fmean(r["history"][-1]["elapsed_seconds"] for r in mine)})
    return rows
