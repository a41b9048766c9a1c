"""Ship a finished training run as one of the book's reference results, evaluated the way readers load it.

    python -m benchmarks.ship RUN_DIR NAME --command "python -m convmixer.train --preset cpu-paper" \
        [--started 2026-12-02T06:08:41Z --finished ... --wall-seconds S --load-start ... --load-end ...]

writes ``book/results/NAME.pt`` (weights, configs and history; no optimizer state, see
:func:`convmixer.checkpoint.export_model`), ``NAME-history.json``, ``NAME-config.json`` and ``NAME-meta.json``.

A run may train under bf16 autocast, and then the test accuracy in its history was measured under
bf16 too.  Readers (and ``tests/test_reference_run.py``) load the weights and evaluate them in plain
fp32, so the accuracy the book states is that one: the meta file records the fp32 accuracy of the
final weights on the whole test set (single view) and, separately, with flip test-time augmentation
(the mean of the softmax over the image and its mirror image).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from .common import REPO


@torch.no_grad()
def test_accuracies(model: torch.nn.Module, channels_last: bool, batch_size: int = 500) -> dict:
    """fp32 test accuracy of ``model`` on all 10,000 CIFAR-10 test images, single view and with flip TTA."""
    from convmixer.data import BatchLoader
    from convmixer.data import load_cifar10

    x, y = load_cifar10("test")
    loader = BatchLoader(x, y, batch_size, train=False, channels_last=channels_last)
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    single = flipped = 0
    for xb, yb in loader:
        p = model(xb).softmax(1)
        p_flip = model(xb.flip(3)).softmax(1)
        single += int((p.argmax(1) == yb).sum())
        flipped += int(((p + p_flip).argmax(1) == yb).sum())
    return {"test_accuracy_fp32": single / len(y), "test_accuracy_flip_tta_fp32": flipped / len(y),
            "test_images": len(y)}


def ship(run_dir: Path, name: str, meta: dict, results: Path = REPO / "book" / "results") -> list[Path]:
    import torchvision

    from convmixer.checkpoint import atomic_save, atomic_save_json
    from convmixer.checkpoint import export_model, load_model

    paths = [results / f"{name}{suffix}" for suffix in (".pt", "-history.json", "-config.json", "-meta.json")]
    relative = f"runs/{name}"  # no path of this machine in the shipped files
    slim = export_model(run_dir, paths[0])
    slim["train_config"]["out_dir"] = relative
    atomic_save(slim, paths[0])
    history = json.loads((run_dir / "history.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["out_dir"] = relative
    atomic_save_json(history, paths[1])
    atomic_save_json(config, paths[2])
    model, ckpt = load_model(paths[0])
    accuracy = test_accuracies(model, ckpt["train_config"].get("channels_last", True))
    meta = {**meta, "hardware_trainer": ckpt.get("hardware"), "epochs": len(history),
            "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version(), "training_seconds": history[-1]["elapsed_seconds"],
            "final_test_accuracy_in_training": history[-1]["test_accuracy"],
            "training_precision": ckpt["train_config"].get("precision"), **accuracy,
            "final_test_accuracy": accuracy["test_accuracy_fp32"],
            "note": "final_test_accuracy is the shipped fp32 weights evaluated in fp32 on all 10,000 test images "
                    "(single view), as readers load them; the history's test accuracies were measured during "
                    "training, in the run's own precision. training_seconds is the trainer's clock (training only); "
                    "wall_seconds, where given, is the whole command (start-up, data loading, every evaluation)."}
    atomic_save_json(meta, paths[3])
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--command", required=True, help="the command that made the run, as a reader would type it")
    p.add_argument("--hardware", default="")
    p.add_argument("--started", default="")
    p.add_argument("--finished", default="")
    p.add_argument("--wall-seconds", type=float, default=0.0)
    p.add_argument("--load-start", default="", help="load averages when the run started (1, 5, 15 min)")
    p.add_argument("--load-end", default="")
    a = p.parse_args(argv)
    from .common import environment

    env = environment()
    meta = {"command": a.command, "date": a.started or env["date"], "finished": a.finished,
            "hardware": a.hardware or f"{env['cpu']}, {env['logical_cpus']} logical CPUs, "
                                     + (f"GPU {env['gpu']}" if env["gpu"] else "no GPU"),
            "wall_seconds": a.wall_seconds or None,
            "load_average_start": [float(v) for v in a.load_start.split()[:3]],
            "load_average_end": [float(v) for v in a.load_end.split()[:3]]}
    for path in ship(a.run_dir, a.name, meta):
        print(path.relative_to(REPO))
    print(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if "accuracy" in k}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
