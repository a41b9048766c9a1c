"""Time to accuracy of the CPU budget: ``python -m convmixer.train --preset cpu`` on real CIFAR-10.

The run itself is the project's command line; the book ships its history
(``book/results/convmixer-cpu-history.json``) and a note of the machine and its load
(``convmixer-cpu-meta.json``).  :func:`summarise` reads them; :func:`train` reruns the command
into a temporary folder (about six minutes on an idle 2-core machine, longer on a busy one).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, load_average

TARGET = 0.75


def summarise(history: list[dict], meta: dict | None = None, target: float = TARGET) -> dict:
    reached = next((h for h in history if h["test_accuracy"] >= target), None)
    last = history[-1]
    out = {
        "target_accuracy": target,
        "epochs": len(history),
        "final_test_accuracy": last["test_accuracy"],
        "training_seconds": last["elapsed_seconds"],
        "reached_at_epoch": reached["epoch"] if reached else None,
        "training_seconds_to_target": reached["elapsed_seconds"] if reached else None,
        "per_epoch": [{k: h[k] for k in ("epoch", "test_accuracy", "train_accuracy", "elapsed_seconds",
                                          "images_per_second")} for h in history],
    }
    if meta:
        out["meta"] = meta
    return out


def from_results(results: Path = REPO / "book" / "results") -> dict:
    history = json.loads((results / "convmixer-cpu-history.json").read_text())
    meta_file = results / "convmixer-cpu-meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    return summarise(history, meta)


def train(extra_args: list[str] = (), out_dir: str | None = None) -> dict:
    """Run the CPU preset now and summarise it (wall and CPU time included).

    The run goes into a temporary folder, or into ``out_dir`` (relative to the repository, e.g.
    ``runs/cpu-rerun``) to keep its checkpoint and history for comparison with the shipped ones.
    """
    import datetime

    import torch

    from convmixer.runtime import cpu_name

    def now() -> str:
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    with tempfile.TemporaryDirectory(prefix="convmixer-cpu-") as tmp:
        run_dir = Path(REPO / out_dir) if out_dir else Path(tmp)
        load0, date0, t0 = load_average(), now(), time.perf_counter()
        # relative to the repository (the command's working folder), so that no path of this machine is
        # recorded in the run's config
        cmd = [sys.executable, "-m", "convmixer.train", "--preset", "cpu", "--out-dir",
               out_dir if out_dir else str(run_dir), *extra_args]
        subprocess.run(cmd, cwd=REPO, env=dict(os.environ), check=True)
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        history = json.loads((run_dir / "history.json").read_text())
    shown = ["--out-dir", out_dir] if out_dir else []
    meta = {"command": " ".join(["python -m convmixer.train --preset cpu", *shown, *extra_args]),
            "date": date0, "finished": now(),
            "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs (torch threads {torch.get_num_threads()}), "
                        + (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"),
            "wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime,
            "load_average_start": load0, "load_average_end": load_average()}
    return summarise(history, meta)


def ship(run_dir: str, result: dict, results: Path = REPO / "book" / "results") -> list[Path]:
    """Make the run in ``run_dir`` (relative to the repository) the book's reference CPU run.

    Writes ``convmixer-cpu.pt`` (weights, configs and history, no optimizer state: see
    :func:`convmixer.checkpoint.export_model`), ``-history.json``, ``-config.json`` and ``-meta.json``
    (the command, the machine, the clocks and load averages of ``result``, the summary that
    :func:`train` returned for this run).
    """
    import platform

    import torch
    import torchvision

    from convmixer.checkpoint import atomic_save, atomic_save_json
    from convmixer.checkpoint import export_model

    src = REPO / run_dir
    history = json.loads((src / "history.json").read_text())
    if [h["test_accuracy"] for h in history] != [h["test_accuracy"] for h in result["per_epoch"]]:
        raise ValueError(f"{run_dir} does not hold the run that was just timed")
    paths = [results / f"convmixer-cpu{suffix}" for suffix in (".pt", "-history.json", "-config.json", "-meta.json")]
    slim = export_model(src, paths[0])
    if slim["train_config"]["out_dir"] != run_dir:  # a run made with an absolute --out-dir: keep the machine's
        slim["train_config"]["out_dir"] = run_dir    # paths out of the shipped files
        atomic_save(slim, paths[0])
    config = json.loads((src / "config.json").read_text())
    config["train"]["out_dir"] = run_dir
    atomic_save_json(history, paths[1])
    atomic_save_json(config, paths[2])
    meta = {**result["meta"], "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version(), "training_seconds": history[-1]["elapsed_seconds"],
            "final_test_accuracy": history[-1]["test_accuracy"],
            "note": "Made by `python -m benchmarks.run --only tta --train --train-dir RUN`, then "
                    "benchmarks.time_to_accuracy.ship (what --ship adds): the command above, timed from outside, "
                    "then exported with convmixer.checkpoint.export_model. wall_seconds includes "
                    "start-up, data loading and the evaluation after every epoch; training_seconds is the trainer's "
                    "clock (training only)."}
    atomic_save_json(meta, paths[3])
    return paths

