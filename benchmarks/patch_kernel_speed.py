"""Training throughput of the p x k grid's models, each measured alone: does cost follow the FLOPs?

The grid's own histories record images per second, but they ran while other work shared the 2-core
CPU, so their speeds say more about the load than about p and k.  This measures the trainer's own
step (``benchmarks.step.library_step_fn``: fp32, channels_last, glibc told to keep freed memory, as
the command line runs it) of ConvMixer-128/8 at batch 256 for every (p, k) of the grid, plus p = 1
(the paper's best CIFAR-10 patch size) with k = 5 to price it at the same width.  Each cell is timed
in rounds that visit every cell in turn (so a slow phase of the machine hits them all alike), each
round a few timed steps after a few untimed ones (the first steps of a fresh process set up the
convolution library's kernels and the allocator's pool), and the median step over the rounds is kept::

    python -m benchmarks.patch_kernel_speed              # writes book/results/perf/patch_kernel_speed.json

Run it with nothing else on the machine (pause a training queue with SIGTERM; it resumes); the file
records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import environment, write_json
from benchmarks.patch_kernel import GRID, KERNEL_SIZES, PATCH_SIZES
from convmixer.costs import multiply_accumulates

CELLS = [(p, k) for p in PATCH_SIZES for k in KERNEL_SIZES] + [(1, 5)]


def time_cell(p: int, k: int, steps: int, warmup: int) -> list[float]:
    """Step seconds of one cell, in a child process of its own (a fresh allocator and thread pool)."""
    s = GRID.settings
    code = ("import json, sys, time, torch\n"
            "from benchmarks.step import library_step_fn, measure\n"
            f"step, fmt = library_step_fn({s['dim']}, {s['depth']}, {k}, {p}, {s['batch_size']})\n"
            f"from convmixer.runtime import keep_freed_memory; keep_freed_memory()\n"
            f"r = measure(step, fmt, {s['batch_size']}, steps={steps}, warmup={warmup})\n"
            "print(json.dumps(r))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patch_kernel_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (p = 1: two)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, per round (p = 1: one)")
    args = parser.parse_args(argv)
    env, t0 = environment(), time.time()   # environment() records the load average at the start
    rounds: dict[str, list[dict]] = {f"p{p}-k{k}": [] for p, k in CELLS}
    for r in range(args.rounds):
        for p, k in CELLS:
            steps, warmup = (2, 1) if p == 1 else (args.steps, args.warmup)
            rounds[f"p{p}-k{k}"].append(time_cell(p, k, steps, warmup=warmup))
            print(f"round {r + 1}: p={p} k={k} {rounds[f'p{p}-k{k}'][-1]['images_per_second']:.0f} images/s",
                  flush=True)
    s = GRID.settings
    cells = []
    for p, k in CELLS:
        medians = sorted(x["step_seconds_median"] for x in rounds[f"p{p}-k{k}"])
        step = medians[len(medians) // 2]
        macs = multiply_accumulates(s["dim"], s["depth"], k, p)["total"]
        cells.append({"patch_size": p, "kernel_size": k, "step_seconds": step,
                      "images_per_second": s["batch_size"] / step, "macs_per_image": macs,
                      "rounds": [x["step_seconds_median"] for x in rounds[f"p{p}-k{k}"]]})
    path = write_json("patch_kernel_speed", {
        "what": "median training step (fp32, channels_last, batch 256) of ConvMixer-128/8 per (p, k), each "
                "cell in its own process, cells interleaved round by round",
        "model": {key: s[key] for key in ("dim", "depth", "batch_size", "precision", "channels_last")},
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup, "cells": cells,
        "seconds": round(time.time() - t0, 1), "environment": env})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
