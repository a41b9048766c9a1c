"""The paper's two knobs measured: patch size p x kernel size k on all of CIFAR-10, as a resumable queue.

Twelve variants, p in (8, 4, 2) crossed with k in (3, 5, 7, 9), three seeds each (the first two
seeds make the grid; the third narrows the intervals where time allows), all 50,000 training and
10,000 test images, everything else shared: ConvMixer-128/8 with the paper's residual and
BatchNorm, 2 epochs, batch 256, AdamW with the one-cycle schedule to lr 0.01, weight decay 0.01,
label smoothing 0.1, gradient clipping 1.0, flips only, fp32, channels_last.  The recipe is the
residual ablation's (``benchmarks/ablation.py``), so the cell p = 4, k = 5 is the ablation's
``spatial-batch`` variant run again.  Run it from a frozen worktree::

    git worktree add --detach ../convmixer-pk HEAD
    cd ../convmixer-pk
    nice -n 10 python -m benchmarks.patch_kernel --seeds 0 --only p8-k5 p4-k5 p2-k5   # one run per p, alone
    nice -n 10 python -m benchmarks.patch_kernel                                      # the rest; resumes

Runs land in ``book/results/patch_kernel/p<P>-k<K>-seed<N>/`` of the main checkout, each with
``config.json``, ``history.json`` (test accuracy and elapsed time per epoch) and ``meta.json``
(``wall_seconds`` and the exact trainer ``command``); :mod:`benchmarks.run_queue` says how the queue
skips, resumes and refuses to mix budgets.

Sizing.  Median training step of ConvMixer-128/8 at batch 256 (``benchmarks.step.library_step_fn``:
the trainer's own step, fp32, channels_last, glibc told to keep freed memory), 5 steps after 2
warm-up steps, on this 2-core CPU with nothing else running, in images/s:

    p = 8:  k = 3: 2,781   k = 9:   461
    p = 4:  k = 3:   789   k = 5:   623   k = 9:   176
    p = 2:  k = 3:   194   k = 9:    94

(contiguous NCHW was slower in every case measured: 747, 163, 420, 146 and 54 images/s.)  An
epoch of 50,000 images then takes about 20-110 s at p = 8, 65-285 s at p = 4 and 260-530 s at
p = 2; with k = 5 and 7 in between, one seed of all twelve variants is about 2 x 2,500 s of
training, ~90 minutes with start-up and evaluation: two seeds in ~3 hours and three in ~4.5 hours
of the machine alone.  Two epochs is the ablation's budget, where ConvMixer-128/8 at p = 4 reached
67%: far enough from both chance and saturation for the knobs to show.  A wider or deeper model,
or a third epoch, would put even two seeds past four hours, because p = 2 dominates the cost.

p = 1, the paper's best CIFAR-10 setting, puts 32 x 32 tokens through every layer: four times the
multiply-accumulates of p = 2 at the same width (161 M against 40.5 M at k = 5), and measured alone
(``benchmarks/patch_kernel_speed``, ``book/results/perf/patch_kernel_speed.json``) 6.4 times the
time: 27 images/s against 172, about an hour of training steps for one 2-epoch run here.  One p = 1
cell would cost about as much as the whole p = 2 row of a seed, which is why it is not in the grid.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.run_queue import Grid, main as run_grid

PATCH_SIZES = (8, 4, 2)        # cheapest first, so that a stopped seed has its cheap cells
KERNEL_SIZES = (3, 5, 7, 9)

GRID = Grid(
    prog="python -m benchmarks.patch_kernel",
    description=__doc__.split("\n\n")[0],
    settings=dict(dim=128, depth=8, residual="spatial", norm="batch", activation="gelu",
                  train_subset=0, test_subset=0, batch_size=256, epochs=2,
                  lr_max=0.01, weight_decay=0.01, label_smoothing=0.1, clip_norm=1.0,
                  crop="none", flip=True, ra_n=0, precision="fp32", channels_last=True),
    variants={f"p{p}-k{k}": {"patch_size": p, "kernel_size": k} for p in PATCH_SIZES for k in KERNEL_SIZES},
    seeds=(0, 1, 2),
    results=Path("book") / "results" / "patch_kernel",
    runs=Path("runs") / "patch_kernel",
)


def main(argv=None) -> int:
    return run_grid(GRID, argv)


if __name__ == "__main__":
    sys.exit(main())
