"""A trained model: its test loss and accuracy, loading it from a checkpoint, and exporting it small.

    model, ckpt = load_model("runs/convmixer/last.pt")   # the architecture comes from the checkpoint
    evaluate(model, test_loader)                         # {"loss": ..., "accuracy": ...}
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_save, load_checkpoint
from .model import ConvMixer
from .runtime import Distributed


@torch.no_grad()
def evaluate(model: nn.Module, loader, dtype: torch.dtype | None = None, dist: Distributed | None = None,
             shard: bool = True) -> dict:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode), under autocast to ``dtype``.

    Under data parallelism (``dist``) each process evaluates its share of every batch and the sums are
    all-reduced, so every process returns the same numbers for the whole set.  ``shard=True`` when
    every process's loader yields the whole batch (the in-memory CIFAR-10 loader: each keeps its
    share); ``shard=False`` when it already yields only this process's share (the folder loader's
    ``DistributedSampler``).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)
    for x, y in loader:
        if dist is not None and shard:
            x, y = dist.shard(x), dist.shard(y)
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        sums[0] += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        sums[1] += (out.argmax(1) == y).sum()
        sums[2] += len(y)
    if dist is not None:
        dist.all_reduce(sums)
    model.train(was_training)
    loss_sum, correct, n = sums.tolist()
    return {"loss": loss_sum / n, "accuracy": correct / n}


def load_model(path: str | os.PathLike, map_location="cpu") -> tuple[ConvMixer, dict]:
    """A ConvMixer built from a checkpoint's config, with its trained weights (eval mode), and the checkpoint."""
    ckpt = load_checkpoint(path, map_location)
    model = ConvMixer(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export_model(run_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy a run's trained weights, configs and history into one small file (no optimizer state).

    The result loads with :func:`load_model` like any checkpoint but is a third of the size of
    ``last.pt`` (AdamW keeps two moments per weight), small enough to ship with the book.
    """
    ckpt = load_checkpoint(Path(run_dir) / "last.pt")
    slim = {k: ckpt[k] for k in ("format", "model_config", "train_config", "model", "epoch", "history",
                                 "hardware", "torch") if k in ckpt}
    slim["model"] = {k: v.contiguous() for k, v in slim["model"].items()}
    atomic_save(slim, dest)
    return slim
