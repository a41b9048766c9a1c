"""Training-step throughput: the library's trainer step against the official eager fp32 step.

Each variant runs in its own child process (``python -m benchmarks.step --variant NAME``) so that
an allocator given through ``LD_PRELOAD`` or a ``MALLOC_*`` tunable applies to it alone; the parent
(:func:`run`) interleaves the variants round by round, so slow phases of a shared machine hit all
of them alike, and reports the median of the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from torch import nn


def official_step_fn(dim, depth, kernel_size, patch_size, batch, lr=1e-3):
    """The official definition (``convmixer.reference.official_convmixer``), a plain eager fp32 AdamW step."""
    from convmixer.reference import official_convmixer

    torch.manual_seed(0)
    model = official_convmixer(dim, depth, kernel_size, patch_size, n_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.005)
    crit = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, lambda x: x


def library_step_fn(dim, depth, kernel_size, patch_size, batch, precision="fp32", channels_last=True,
                    compile=False, lr=1e-3):
    """The library's :meth:`convmixer.train.Trainer.train_step` on a Trainer built as the CLI builds it."""
    from convmixer.train import Trainer, TrainConfig

    cfg = TrainConfig(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size, batch_size=batch,
                      train_subset=batch, test_subset=16, precision=precision, channels_last=channels_last,
                      compile=compile, device="cpu", out_dir=tempfile.mkdtemp(prefix="convmixer-bench-"))
    trainer = Trainer(cfg, screen=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step(x, y):
        loss, _ = trainer.train_step(x, y, lr)
        return loss

    return step, lambda x: x.contiguous(memory_format=fmt)


def measure(step, prep, batch, steps, warmup, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = prep(torch.randn(batch, 3, 32, 32, generator=g))
    y = torch.randint(0, 10, (batch,), generator=g)
    for _ in range(warmup):
        float(step(x, y))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        float(step(x, y))
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    return {"images_per_second": batch / med, "step_seconds_median": med, "step_seconds_min": times[0], "steps": steps}


def main(argv=None):
    p = argparse.ArgumentParser(description="one step variant, JSON on stdout")
    p.add_argument("--impl", choices=("official", "library"), required=True)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = (a.dim, a.depth, a.kernel_size, a.patch_size, a.batch)
    if a.impl == "official":
        step, prep = official_step_fn(*shape)
    else:
        step, prep = library_step_fn(*shape, precision=a.precision, channels_last=a.channels_last, compile=a.compile)
    r = measure(step, prep, a.batch, a.steps, a.warmup + (3 if a.compile else 0))
    r["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
