"""The learning-rate schedule: the official script's per-iteration "one-cycle".

The trainer sets each step's learning rate from :func:`one_cycle_lr` itself instead of wrapping it in
``torch.optim.lr_scheduler.LambdaLR``: a ``LambdaLR`` multiplies the optimizer's base rate by a factor,
and ``lr_max * (one_cycle_lr(...) / lr_max)`` differs from ``one_cycle_lr(...)`` in the last bit for
about one step in ten (``tests/test_train.py`` checks this), so checkpoints and histories written
before would no longer be reproduced bit for bit; a scheduler would also add state to every
checkpoint that the position in the schedule (epoch, step) already determines.
"""
from __future__ import annotations


def one_cycle_lr(t: float, epochs: float, lr_max: float) -> float:
    """The official piecewise-linear schedule at (fractional) epoch t.

    lr rises linearly from 0 to lr_max over the first 2/5 of training, falls to lr_max/20 at
    4/5, then to 0 at the end: np.interp(t, [0, 2E/5, 4E/5, E], [0, lr_max, lr_max/20, 0]).
    Warm-up lets AdamW's moment estimates settle before large steps; the long decay anneals.
    The trainer calls it after each step's batch with t = epoch + (step + 1) / steps_per_epoch.
    """
    points = [(0.0, 0.0), (0.4 * epochs, lr_max), (0.8 * epochs, lr_max / 20), (float(epochs), 0.0)]
    t = min(max(t, 0.0), float(epochs))
    for (t0, y0), (t1, y1) in zip(points, points[1:]):
        if t <= t1:
            return y0 + (y1 - y0) * (t - t0) / (t1 - t0) if t1 > t0 else y1
    return 0.0
