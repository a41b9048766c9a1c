"""A proposed change to the library, measured here before it is made there (see book/08_performance).

``convmixer.randaugment.apply_ops`` computes all eight colour ops and one warp for the *whole*
batch and keeps each image's own result with ``torch.where``: no host synchronisation, which a
GPU rewards, but ~10 full-batch passes per round where one would do.  On a CPU there is nothing to
overlap with, so :func:`apply_ops_grouped` gathers the images that drew each op and computes that
op on them only.  It returns exactly the same tensor (``check_equal``), from the same draws.
"""
from __future__ import annotations

import contextlib

import torch

from convmixer import randaugment as ra

BLENDS = {ra.BRIGHTNESS: ("Brightness", ra.brightness), ra.COLOR: ("Color", ra.color),
          ra.CONTRAST: ("Contrast", ra.contrast), ra.SHARPNESS: ("Sharpness", ra.sharpness)}


def apply_ops_grouped(x: torch.Tensor, op: torch.Tensor, sign: torch.Tensor, m: int) -> torch.Tensor:
    """Same result as ``ra.apply_ops``; each op runs only on the images that drew it."""
    _, _, h, w = x.shape
    mag = ra.magnitudes(m, h, w)
    out = x.clone()
    geo = ((op >= ra.SHEAR_X) & (op <= ra.ROTATE)).nonzero().squeeze(1)
    if len(geo):
        out[geo] = ra.warp(x[geo], ra.affine_matrices(op[geo], sign[geo], mag, h, w))
    for k in range(ra.BRIGHTNESS, len(ra.OPS)):
        idx = (op == k).nonzero().squeeze(1)
        if not len(idx):
            continue
        xi = x[idx]
        if k in BLENDS:
            name, fn = BLENDS[k]
            out[idx] = fn(xi, (sign[idx] * mag[name]).view(-1, 1, 1, 1))
        elif k == ra.POSTERIZE:
            out[idx] = ra.posterize(xi, int(mag["Posterize"]))
        elif k == ra.SOLARIZE:
            out[idx] = ra.solarize(xi, mag["Solarize"])
        elif k == ra.AUTOCONTRAST:
            out[idx] = ra.autocontrast(xi)
        elif k == ra.EQUALIZE:
            out[idx] = ra.equalize(xi)
    return out


@contextlib.contextmanager
def grouped_randaugment():
    """Temporarily route ``rand_augment`` through :func:`apply_ops_grouped`."""
    original = ra.apply_ops
    ra.apply_ops = apply_ops_grouped
    try:
        yield
    finally:
        ra.apply_ops = original


def check_equal(n: int = 256, m: int = 12, seed: int = 0) -> bool:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    op, sign = ra.draw_ops(n, g, x.device)
    return torch.equal(ra.apply_ops(x, op, sign, m), apply_ops_grouped(x, op, sign, m))
