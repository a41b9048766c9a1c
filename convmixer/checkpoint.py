"""Checkpoints that survive crashes and never execute pickled code, and the rules for resuming from one.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``{"format", "model_config", "train_config", "model", "optimizer", "epoch", "history"}``.
It is written to a temporary file in the same folder and renamed over the old
one (``os.replace`` is atomic), so a crash mid-write leaves the previous
checkpoint intact, and it is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers.

The file reads in that order: writing atomically, loading safely, checking that a checkpoint fits
a model (:func:`check_architecture`) and that a run may continue from it (:func:`check_resume`, the
one home of the resume rules), and a trained model from a file (:func:`load_model`,
:func:`export_model`).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from .config import TrainConfig
from .model import ConvMixer
from .runtime import DTYPES

FORMAT = "convmixer-checkpoint-v1"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    Readers see either the old file or the complete new one, never a mix: a crash, a full disk
    or Ctrl-C during ``write`` leaves ``path`` as it was and removes the temporary file.  The new
    file keeps the old one's permissions (a new file gets the usual ones for the umask, not the
    owner-only mode of a temporary file), and the folder is synced so the rename survives a
    power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_file() else _DEFAULT_MODE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _umask_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 under the usual 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_MODE = _umask_mode()


def _fsync_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: renames are not synced through a folder handle
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_json(obj, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


class CheckpointError(ValueError):
    """A file that is not a usable ConvMixer checkpoint."""


REQUIRED = ("model_config", "model")
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                      "Re-running", "In PyTorch")


def _load_error(path: Path, e: Exception) -> CheckpointError:
    """A message for a file ``torch.load(weights_only=True)`` refused, saying what it is and what to do."""
    text = str(e)
    if "GLOBAL" in text:  # a pickled object whose loading would call code: refused, not run
        culprit = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
        return CheckpointError(
            f"{path} holds pickled Python objects, not just tensors and plain data ({culprit}); they were "
            f"refused without being run, because loading them could execute arbitrary code. "
            f"Pass a checkpoint written by convmixer.train (OUT_DIR/last.pt)")
    if path.stat().st_size == 0:
        detail = "the file is empty (0 bytes)"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        useful = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
        detail = f"{type(e).__name__}: {(useful or lines or ['no details'])[0]}"
    return CheckpointError(
        f"{path} is not a ConvMixer checkpoint: it is damaged, truncated, or another kind of file ({detail}). "
        f"Pass a checkpoint written by convmixer.train (OUT_DIR/last.pt)")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by ``convmixer.train``, refusing pickled code.

    Every failure is a :class:`CheckpointError` (or ``FileNotFoundError``) whose message says
    what the file is and what to pass instead; the file itself is never modified.
    """
    path = Path(path)
    if path.is_dir():
        hint = f"; did you mean {path / 'last.pt'}?" if (path / "last.pt").is_file() else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; check the path (a run writes OUT_DIR/last.pt), "
                                f"or train one with python -m convmixer.train")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise _load_error(path, e) from e
    what = f"{path} is not a ConvMixer checkpoint"
    fix = "Pass a checkpoint written by convmixer.train (OUT_DIR/last.pt)"
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what}: it holds a {type(ckpt).__name__}, not a dict. {fix}")
    if "format" not in ckpt:
        raise CheckpointError(f"{what}: it has no 'format': {FORMAT!r} entry. {fix}")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"{what} this version can read: its format is {ckpt['format']!r}, "
                              f"expected {FORMAT!r}. {fix}, or use the convmixer version that wrote it")
    missing = [k for k in REQUIRED if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise CheckpointError(f"{what}: it lacks {', '.join(missing)}. {fix}")
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
            + ". Build the model from the checkpoint's config (convmixer.checkpoint.load_model) or point to a matching checkpoint."
        )


# -- resuming a run ----------------------------------------------------------------------------
# Fields that may change between an interrupted run and its resumption without changing the result.
# A precision change is allowed too, with a note (a run moved from an A100 to a T4 continues in fp16).
RUNTIME_FIELDS = {"data_root", "out_dir", "resume", "compile", "threads", "log_every", "device", "sync_bn",
                  "workers", "precision"}



def saved_precision(ckpt: dict) -> str | None:
    """The precision a checkpoint was trained in ("fp32", "bf16", "fp16"), or None when it cannot tell.

    Checkpoints written before the field existed tell by their flags, by their loss scaler (only
    fp16 runs have one) and by their hardware (a CPU's name ends in "threads"; auto meant fp32 there).
    """
    if ckpt.get("precision") in DTYPES:
        return ckpt["precision"]
    asked = ckpt.get("train_config", {}).get("precision", "auto")
    if asked != "auto":
        return asked
    if ckpt.get("scaler"):
        return "fp16"
    return "fp32" if str(ckpt.get("hardware", "")).endswith("threads") else None


def check_resume(ckpt: dict, cfg: TrainConfig, path: str | os.PathLike = "checkpoint", precision: str | None = None,
                 hardware: str = "") -> list[str]:
    """Raise :class:`CheckpointError` unless ``cfg`` may continue the run ``ckpt`` saved; return the notes to show.

    The architecture must match, and so must every setting outside :data:`RUNTIME_FIELDS`, except
    ``epochs``: a longer (or shorter) run stretches the schedule from where it stopped, with a note.
    A field added after the checkpoint was written is compared with its default, the behaviour the
    run had then.  A run that continues in another ``precision`` (what ``cfg.precision`` resolved to on
    ``hardware``) than it was trained in gets a note saying how to keep the old one.
    """
    check_architecture(ckpt, cfg.model_config().to_dict(), path)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved = {k: v for k, v in {**defaults, **ckpt["train_config"]}.items() if k not in RUNTIME_FIELDS}
    now = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    notes = []
    if saved.pop("epochs") != now.pop("epochs"):
        notes.append(f"resuming a {ckpt['train_config']['epochs']}-epoch run as a {cfg.epochs}-epoch run; "
                     f"the learning-rate schedule is stretched from here on")
    diffs = config_differences(saved, now)
    if diffs:
        raise CheckpointError(f"{path} was trained with other settings: " + "; ".join(diffs)
                              + ". Resume with the same flags, or start a new run in another --out-dir.")
    trained_in = saved_precision(ckpt)
    if precision is not None and trained_in is not None and trained_in != precision:
        how = (f"--precision auto means {precision} on {hardware}" if cfg.precision == "auto"
               else f"--precision {cfg.precision}")
        notes.append(f"{path} was trained in {trained_in}; it continues in {precision} ({how})"
                     + (", with a fresh loss scale" if precision == "fp16" else "")
                     + f". Pass --precision {trained_in} to keep {trained_in}.")
    return notes


# -- a trained model from a file -------------------------------------------------------------
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
