"""Checkpoints that survive crashes and never execute pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``{"format", "model_config", "train_config", "model", "optimizer", "epoch", "history"}``.
It is written to a temporary file in the same folder and renamed over the old
one (``os.replace`` is atomic), so a crash mid-write leaves the previous
checkpoint intact, and it is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "convmixer-checkpoint-v1"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_json(obj, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


class CheckpointError(ValueError):
    """A file that is not a usable ConvMixer checkpoint."""


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a ConvMixer checkpoint that can be loaded safely ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); pass a file written by convmixer.train"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a ConvMixer checkpoint (no '{FORMAT}' marker); "
                              f"pass a file written by convmixer.train")
    return ckpt


def config_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable list of the fields where two architecture configs differ."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint has {saved.get(k)!r}, model has {current.get(k)!r}"
            for k in keys if saved.get(k) != current.get(k)]


def check_architecture(ckpt: dict, model_config: dict, path: str | os.PathLike = "checkpoint") -> None:
    """Raise with every differing field if the checkpoint was trained for another architecture."""
    diffs = config_differences(ckpt.get("model_config", {}), model_config)
    if diffs:
        raise CheckpointError(
            f"{path} holds a different architecture: " + "; ".join(diffs)
            + ". Build the model from the checkpoint's config (convmixer.load_model) or point to a matching checkpoint."
        )
