"""Time to 92.5% on one GPU: the official convmixer-cifar10 script against the library's trainer, same card.

    python -m benchmarks.gpu                          # both sides, the README's recipe, 25 epochs each
    python -m benchmarks.gpu --only library --compile
    python -m benchmarks.gpu --only official --workers 8

Writes ``book/results/perf/gpu_time_to_accuracy.json`` (hardware, software, date, every epoch of
both sides).  Both sides train ConvMixer-256/8 (k=5, p=2) with the official README's flags
(``--lr-max 0.05 --ra-n 2 --ra-m 12 --wd 0.005 --scale 1.0 --jitter 0 --reprob 0``, 25 epochs,
batch 512), and both clocks include the evaluation after every epoch, as the official script's
per-epoch "Time" does.

* **official**: :func:`official_epochs` is the loop of the official ``train.py``, statement for
  statement (``nn.DataParallel``, here on the one ``--device``, fp16 autocast with a ``GradScaler``, the one-cycle ``np.interp``
  schedule, ``.item()`` after every step), fed by the official per-image PIL pipeline
  (:func:`benchmarks.loader.official_transform`) through a ``DataLoader`` with ``--workers``
  processes (the script's default is 2).
* **library**: ``convmixer.train.Trainer`` with the ``official`` preset (data set and augmentation
  on the GPU, bf16 autocast where the card runs it natively (compute capability 8.0+, else fp16 with
  a scaler and fused AdamW), channels_last, no host synchronisation inside an
  epoch, optionally ``torch.compile``), timed by :class:`TimedTrainer`, which also pays for the
  library's checkpoint after every epoch.

It also reports the model FLOP utilisation of each side's training epochs: 6 FLOPs per
multiply-accumulate of the forward pass, against the matrix-product rate the same card reaches in
the same process (:func:`benchmarks.step.matmul_gflops`) in the half precision each side trains in
(fp16 for the official script; bf16 or fp16 for the library, as it chooses), and against its fp32
rate; bf16 is measured only where it is native (on a T4 it is emulated and says nothing);
and a lower bound on the memory bandwidth each side uses: the bytes its autograd graph saves per
step (:func:`benchmarks.step.saved_bytes_per_step`), written once and read once, against the
card's copy rate (:func:`benchmarks.step.copy_gbytes_per_second`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

from . import common

TARGET = 0.925
README = dict(lr_max=0.05, ra_n=2, ra_m=12, weight_decay=0.005, scale=1.0, jitter=0.0, reprob=0.0)


def official_loaders(batch_size: int, workers: int, train_subset: int = 0, test_subset: int = 0):
    """The official script's two DataLoaders (PIL transforms per image, ``workers`` processes)."""
    from torchvision import transforms

    from convmixer.data import load_cifar10
    from convmixer.data import MEAN, STD
    from convmixer.train import subset

    from .loader import PILCifar, official_transform

    flags = dict(scale=README["scale"], ra_n=README["ra_n"], ra_m=README["ra_m"], jitter=README["jitter"],
                 reprob=README["reprob"])
    xtr, ytr = subset(*load_cifar10("train"), train_subset, 0)
    xte, yte = subset(*load_cifar10("test"), test_subset, 0)
    test_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train = torch.utils.data.DataLoader(PILCifar(xtr, ytr, official_transform(**flags)), batch_size=batch_size,
                                        shuffle=True, num_workers=workers)
    test = torch.utils.data.DataLoader(PILCifar(xte, yte, test_transform), batch_size=batch_size, shuffle=False,
                                       num_workers=workers)
    return train, test


def official_epochs(model: nn.Module, trainloader, testloader, epochs: int, lr_max: float, weight_decay: float,
                    device: torch.device, log=print):
    """The official ``train.py`` loop; yields one record per epoch (its clock includes the evaluation)."""
    # DataParallel as the script has it, but on the one device asked for (not every visible GPU)
    model = nn.DataParallel(model.to(device), device_ids=[device], output_device=device) \
        if device.type == "cuda" else model.to(device)
    amp = device.type == "cuda"  # the script assumes a GPU; on a CPU (tests) it runs in fp32
    lr_schedule = lambda t: np.interp([t], [0, epochs * 2 // 5, epochs * 4 // 5, epochs],  # noqa: E731
                                      [0, lr_max, lr_max / 20.0, 0])[0]
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for epoch in range(epochs):
        start = time.time()
        train_loss, train_acc, n = 0, 0, 0
        for i, (X, y) in enumerate(trainloader):
            model.train()
            X, y = X.to(device), y.to(device)
            lr = lr_schedule(epoch + (i + 1) / len(trainloader))
            opt.param_groups[0].update(lr=lr)
            opt.zero_grad()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                output = model(X)
                loss = criterion(output, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            train_loss += loss.item() * y.size(0)
            train_acc += (output.max(1)[1] == y).sum().item()
            n += y.size(0)
        train_seconds = time.time() - start
        model.eval()
        test_acc, m = 0, 0
        with torch.no_grad():
            for X, y in testloader:
                X, y = X.to(device), y.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    output = model(X)
                test_acc += (output.max(1)[1] == y).sum().item()
                m += y.size(0)
        record = {"epoch": epoch + 1, "train_loss": train_loss / n, "train_accuracy": train_acc / n, "test_accuracy": test_acc / m,
                  "epoch_seconds": time.time() - start, "train_seconds": train_seconds,
                  "train_images_per_second": n / train_seconds}
        log(f"  official  epoch {epoch + 1:2d}  test {record['test_accuracy']:.4f}  "
            f"{record['epoch_seconds']:6.1f} s  {record['train_images_per_second']:8.0f} img/s")
        yield record


def run_official(epochs: int, workers: int, device: torch.device, train_subset=0, test_subset=0, log=print) -> dict:
    from convmixer.reference import official_convmixer

    t0 = time.perf_counter()
    trainloader, testloader = official_loaders(512, workers, train_subset, test_subset)
    torch.manual_seed(0)
    model = official_convmixer(256, 8, kernel_size=5, patch_size=2, n_classes=10)
    setup = time.perf_counter() - t0
    history = list(official_epochs(model, trainloader, testloader, epochs, README["lr_max"],
                                   README["weight_decay"], device, log))
    return {"setup_seconds": setup, "workers": workers, "precision": "fp16 autocast + GradScaler (as the script)",
            "history": history}


def run_library(epochs: int, device: torch.device, compile: bool, train_subset=0, test_subset=0, log=print) -> dict:
    from convmixer.config import recipe_config
    from convmixer.train import Trainer

    class TimedTrainer(Trainer):
        """The library's Trainer, with a wall clock read after each epoch's evaluation and checkpoint."""

        def _end_epoch(self, epoch):
            record = super()._end_epoch(epoch)
            now = time.perf_counter()
            record["epoch_wall_seconds"] = now - self.clock
            self.clock = now
            log(f"  library   epoch {record['epoch']:2d}  test {record['test_accuracy']:.4f}  "
                f"{record['epoch_wall_seconds']:6.1f} s  {record['images_per_second']:8.0f} img/s")
            return record

    with tempfile.TemporaryDirectory(prefix="convmixer-gpu-") as out_dir:
        t0 = time.perf_counter()
        cfg = recipe_config("official", epochs=epochs, device=str(device), compile=compile, out_dir=out_dir,
                            train_subset=train_subset, test_subset=test_subset)
        trainer = TimedTrainer(cfg, screen=False)
        setup = time.perf_counter() - t0
        trainer.clock = time.perf_counter()
        history = trainer.fit()
    return {"setup_seconds": setup, "precision": trainer.precision,
            "compile": compile,
            "history": [{"epoch": h["epoch"], "train_accuracy": h["train_accuracy"],
                         "test_accuracy": h["test_accuracy"], "epoch_seconds": h["epoch_wall_seconds"],
                         "train_seconds": h["epoch_seconds"], "train_images_per_second": h["images_per_second"]}
                        for h in history]}


def summarise(side: dict, gflop_per_image: float, matmul: dict, target: float = TARGET,
              saved_bytes: int = 0, batch: int = 512, copy: float = float("nan"), half: str = "bf16") -> dict:
    """Time to ``target`` (cumulative wall seconds, evaluation included), the training FLOP utilisation
    (against ``matmul[half]``, the side's own half precision, and fp32), and a lower bound on the
    memory traffic (``saved_bytes`` written and read once per step)."""
    elapsed, reached = 0.0, None
    for h in side["history"]:
        elapsed += h["epoch_seconds"]
        h["elapsed_seconds"] = elapsed
        if reached is None and h["test_accuracy"] >= target:
            reached = h
    train_seconds = sum(h["train_seconds"] for h in side["history"])
    images = sum(h["train_images_per_second"] * h["train_seconds"] for h in side["history"])
    model_gflops = gflop_per_image * images / train_seconds
    return {**side, "target_accuracy": target, "final_test_accuracy": side["history"][-1]["test_accuracy"],
            "total_seconds": elapsed, "reached_at_epoch": reached["epoch"] if reached else None,
            "seconds_to_target": reached["elapsed_seconds"] if reached else None,
            "train_images_per_second": images / train_seconds, "model_gflops_per_second": model_gflops,
            "half_precision": half, "of_half_matmul": model_gflops / matmul[half],
            **({"of_bf16_matmul": model_gflops / matmul["bf16"]} if "bf16" in matmul else {}),
            "of_fp32_matmul": model_gflops / matmul["fp32"],
            "saved_bytes_per_step": saved_bytes,
            "min_traffic_gbytes_per_second": 2 * saved_bytes * images / train_seconds / batch / 1e9,
            "min_traffic_of_copy": 2 * saved_bytes * images / train_seconds / batch / 1e9 / copy}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=("official", "library"), default=["official", "library"])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--workers", type=int, default=2, help="the official DataLoader's workers (its default: 2)")
    p.add_argument("--compile", action="store_true", help="library: torch.compile the model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-subset", type=int, default=0, help="smoke tests only: train on this many images")
    p.add_argument("--test-subset", type=int, default=0, help="smoke tests only: evaluate on this many images")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: this benchmark needs a GPU (use --device cpu only for a smoke test)",
              file=sys.stderr)
        return 2
    from .step import copy_gbytes_per_second, matmul_gflops, model_gflops_per_image, saved_bytes_per_step

    env = common.environment()
    from convmixer.runtime import native_bf16

    n = 8192 if device.type == "cuda" else 512
    halves = ("fp16", "bf16") if native_bf16(device) or device.type == "cpu" else ("fp16",)
    matmul = {"fp32": matmul_gflops(torch.float32, n, device=device)}
    matmul.update({h: matmul_gflops({"fp16": torch.float16, "bf16": torch.bfloat16}[h], n, device=device)
                   for h in halves})
    copy = copy_gbytes_per_second(device, mib=1024 if device.type == "cuda" else 64)
    shape = dict(dim=256, depth=8, kernel_size=5, patch_size=2, batch=512)
    gflop = model_gflops_per_image(shape)
    print(f"{env['gpu'] or 'CPU'}: matmul {n}^3 " + ", ".join(f"{v:.0f} GFLOP/s {k}" for k, v in matmul.items())
          + f"; copy {copy:.0f} GB/s")
    sides = {}
    if "official" in args.only:
        saved = saved_bytes_per_step(shape, "official", "fp16" if device.type == "cuda" else "fp32", device)
        sides["official"] = summarise(run_official(args.epochs, args.workers, device, args.train_subset,
                                                   args.test_subset), gflop, matmul, saved_bytes=saved, copy=copy,
                                      half="fp16" if device.type == "cuda" else "fp32")
    if "library" in args.only:
        lib = run_library(args.epochs, device, args.compile, args.train_subset, args.test_subset)
        precision = lib["precision"]
        saved = saved_bytes_per_step(shape, "library", precision, device)
        sides["library"] = summarise(lib, gflop, matmul, saved_bytes=saved, copy=copy, half=precision)
    for name, s in sides.items():
        to = (f"{s['target_accuracy']:.1%} after {s['seconds_to_target']:.0f} s (epoch {s['reached_at_epoch']})"
              if s["reached_at_epoch"] else f"{s['target_accuracy']:.1%} not reached")
        print(f"{name:9s} final {s['final_test_accuracy']:.4f}; {to}; {s['total_seconds']:.0f} s in all; "
              f"{s['train_images_per_second']:.0f} img/s; {s['model_gflops_per_second']:.0f} GFLOP/s = "
              f"{s['of_half_matmul']:.0%} of the {s['half_precision']} matmul rate; at least {s['min_traffic_gbytes_per_second']:.1f} "
              f"GB/s = {s['min_traffic_of_copy']:.0%} of the copy rate")
    if len(sides) == 2:
        o, lib = sides["official"], sides["library"]
        if o["seconds_to_target"] and lib["seconds_to_target"]:
            print(f"time to {TARGET:.1%}: library {o['seconds_to_target'] / lib['seconds_to_target']:.1f}x faster")
        print(f"whole run: library {o['total_seconds'] / lib['total_seconds']:.1f}x faster")
    result = {"benchmark": "gpu_time_to_accuracy", "command": "python -m benchmarks.gpu " + " ".join(argv or sys.argv[1:]),
              "environment": env, "recipe": README, "epochs": args.epochs, "model_gflop_per_image": gflop,
              "matmul_gflops": matmul, "matmul_size": n, "copy_gbytes_per_second": copy, **sides}
    if not args.no_write:
        print("wrote", common.write_json("gpu_time_to_accuracy", result).relative_to(common.REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
