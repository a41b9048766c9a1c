"""The residual and normalisation ablation of issue 16, as a queue that can stop and resume anywhere.

Eleven variants (``convmixer.book.experiments.ABLATION_GRID``): the five residual placements of
``convmixer.model.ConvMixerLayer`` with BatchNorm and with LayerNorm over channels, plus ReLU instead
of GELU at the paper's placement with BatchNorm; three seeds each; all 50,000 training images, all
10,000 test images.  Run it from a frozen copy of the code, so that edits to the checkout cannot
reach a grid half-way through::

    git worktree add --detach ../convmixer-ablation HEAD      # the code, frozen at this commit
    cd ../convmixer-ablation
    nice -n 10 python -m benchmarks.ablation --max-runs 1     # the first run alone: time it, see the projection
    nice -n 10 python -m benchmarks.ablation                  # the rest; rerun the same line to resume

Runs land in ``book/results/ablation/grid/<variant>-seed<N>/`` of the main checkout; how the queue
skips, resumes and refuses to mix budgets is in :mod:`benchmarks.run_queue`.  The queue is ordered
seed by seed (all eleven variants with seed 0 first), so a grid stopped early is balanced.

Sizing (why ConvMixer-128/8, p = 4, two epochs).  The budget is about 90 minutes of a 2-core CPU for
33 runs, i.e. about 160 s per run including start-up and the two evaluations on 10,000 images, and
the target is 65-75% test accuracy for the paper's variant.

* The reference point is the library's CPU preset, ConvMixer-192/6 with p = 4: 615 images/s on the
  2 idle cores (``book/results/convmixer-cpu-history.json``), 54.5 / 66.8 / 76.0 / 77.7% after
  epochs 1-4 of its 4-epoch schedule, 75% after a 3-epoch schedule.
* Depth 8 rather than 6: the paper's CIFAR-10 depth, and a residual's placement matters more the
  deeper the stack.  ConvMixer-128/8 with p = 4 needs 10.4 M multiply-accumulates per image against
  the preset's 16.6 M (x 0.63; ``convmixer.costs.multiply_accumulates``) and has 171k parameters.
* One measurement, 40 s of interleaved training steps (batch 256, channels_last, AdamW) of both
  models on this machine while it was running another training job (load average 1.5-4.9): the
  preset's model at 76 images/s (8x below its idle rate, so the absolute numbers say nothing),
  ConvMixer-128/8 1.31x faster than it.  Small widths use the cores less well than the
  multiply-accumulate ratio (1.59x) promises, so the estimate for the idle machine is
  615 x 1.3 = 800 images/s, up to ~980 if the ratio approaches 1.59x.
* Two epochs: 100,000 images / 800 per s = 125 s of training, plus ~4 s per evaluation and ~6 s
  start-up: ~140 s per run, 33 runs in ~77 minutes (~64 at 980 images/s).  Three epochs would take
  ~205 s per run, ~113 minutes: over budget.  Two epochs of the preset's recipe on a model of 0.63x
  its compute should land between the preset's 66.8% (epoch 2 of 4, before the learning rate had
  decayed) and its 75% (3 epochs): the 65-75% band.
* The recipe is the CPU preset's apart from the model and the epochs: batch 256, AdamW with the
  one-cycle schedule to lr 0.01, weight decay 0.01, label smoothing 0.1, gradient clipping at 1.0,
  flips only, fp32.

That is an estimate made on a busy machine.  ``--max-runs 1`` runs the paper's variant with seed 0
alone first and prints the projected time of the whole grid from it; if that projection is far off
(over ~100 minutes), change ``SETTINGS`` in a new commit before any other run starts (``plan.json``
then has to go, together with that one run).
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.run_queue import Grid, main as run_grid
from convmixer.book.experiments import ABLATION_GRID, variant_name

GRID = Grid(
    prog="python -m benchmarks.ablation",
    description=__doc__.split("\n\n")[0],
    settings=dict(dim=128, depth=8, kernel_size=5, patch_size=4,
                  train_subset=0, test_subset=0, batch_size=256, epochs=2,
                  lr_max=0.01, weight_decay=0.01, label_smoothing=0.1, clip_norm=1.0,
                  crop="none", flip=True, ra_n=0, precision="fp32", channels_last=True),
    variants={variant_name(r, n, a): {"residual": r, "norm": n, "activation": a} for r, n, a in ABLATION_GRID},
    seeds=(0, 1, 2),
    results=Path("book") / "results" / "ablation" / "grid",
    runs=Path("runs") / "ablation",
)


def main(argv=None) -> int:
    return run_grid(GRID, argv)


if __name__ == "__main__":
    sys.exit(main())
