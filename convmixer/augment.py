"""Data augmentation for whole batches, as tensor operations on the training device.

The official CIFAR-10 script augments one PIL image at a time in DataLoader
workers; on a 2-core machine that pipeline makes about 1,800 images/s and
starves any GPU.  Here every transform takes a float batch (N, 3, H, W) in
[0, 1] and draws one random number per image from a ``torch.Generator``, so a
batch costs a handful of kernels and the results are reproducible.

Order (as in the official script): crop -> horizontal flip -> RandAugment ->
random erasing.  Normalisation comes after, in :class:`convmixer.data.BatchLoader`.  Nothing here
knows the data set: the colour random erasing fills with is the caller's (``fill``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from .randaugment import rand_augment

CROPS = ("none", "pad", "resized")


@functools.lru_cache(maxsize=None)
def channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A (1, C, 1, 1) constant, made once per device and dtype.

    Building it from a Python tuple every batch would copy it from the host each time, and on a
    GPU such a copy waits for the device: one hidden synchronisation per training step.
    """
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def _field(default, help: str, **kw):
    """A setting with the help text the command line shows (``convmixer.config.build_parser``)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply; the defaults are the official CIFAR-10 recipe's.

    The one declaration of these settings: :class:`convmixer.config.TrainConfig` inherits them.
    The fields, with the official script's flag names::

        crop       "pad": pad by `padding` (reflect) and crop back at a random offset;
                   "resized": a random square crop of area fraction in [scale_min, 1], resized
                   back (RandomResizedCrop(scale=(scale_min, 1), ratio=(1, 1)), --scale);
                   "none".
        flip       horizontal flip with probability 1/2.
        ra_n, ra_m RandAugment: ra_n random ops per image at magnitude ra_m of 30
                   (--ra-n, --ra-m); ra_n = 0 switches it off.
        erase_p    random erasing probability (--reprob).
    """

    crop: str = _field("none", "crop: pad+random crop, random resized crop, or none", choices=CROPS)
    padding: int = _field(4, "padding for --crop pad")
    scale_min: float = _field(1.0, "smallest area fraction for --crop resized (official --scale)")
    flip: bool = _field(True, "random horizontal flips")
    ra_n: int = _field(2, "RandAugment ops per image (0: off)")
    ra_m: int = _field(12, "RandAugment magnitude, 0..30")
    erase_p: float = _field(0.0, "random erasing probability (official --reprob)")

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if not 0 < self.scale_min <= 1:
            raise ValueError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if self.padding < 0 or self.ra_n < 0 or not 0 <= self.ra_m <= 30:
            raise ValueError("padding and ra_n must be >= 0 and ra_m in [0, 30]")
        if not 0 <= self.erase_p <= 1:
            raise ValueError(f"erase_p must be a probability, got {self.erase_p}")

    def to_dict(self) -> dict:
        """The augmentation fields only (also of a subclass such as ``TrainConfig``)."""
        return {f.name: getattr(self, f.name) for f in fields(Augment)}


def _uniform(n: int, g: torch.Generator, device, low=0.0, high=1.0) -> torch.Tensor:
    return torch.rand(n, device=device, generator=g) * (high - low) + low


def batch_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2.

    On a GPU one ``torch.where`` picks each image's version without a host synchronisation.
    On a CPU, where a synchronisation costs nothing, mirroring the batch and copying the
    unmirrored half back is about twice as fast; the result is the same.
    """
    flip = torch.rand(len(x), device=x.device, generator=g) < 0.5
    if x.device.type != "cpu":
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    keep = (~flip).nonzero().squeeze(1)
    return x.flip(3).index_copy_(0, keep, x.index_select(0, keep))


def batch_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``padding`` and cut an H x W window at a random offset per image.

    The window of image n starts at (dy_n, dx_n) in [0, 2 * padding]; we gather it
    with one advanced-indexing op instead of a Python loop over images.
    """
    if padding == 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=g)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[batch, chans, rows, cols]


def batch_resized_crop(x: torch.Tensor, scale_min: float, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop with a square window: area fraction s ~ U[scale_min, 1], resized back.

    In ``grid_sample``'s coordinates ([-1, 1] across the image) a window of side
    sqrt(s) centred at (tx, ty) lies inside the image when ``|t| <= 1 - sqrt(s)``;
    :func:`resized_crop` cuts it out and resizes it.
    """
    if scale_min >= 1:
        return x
    n = len(x)
    side = _uniform(n, g, x.device, scale_min, 1.0).sqrt()
    tx = (2 * _uniform(n, g, x.device) - 1) * (1 - side)
    ty = (2 * _uniform(n, g, x.device) - 1) * (1 - side)
    return resized_crop(x, side, tx, ty)


def resized_crop(x: torch.Tensor, side: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Cut the square window of side ``side[i]`` centred at ``(tx[i], ty[i])`` out of image i and
    resize it bilinearly to the full size (coordinates in [-1, 1] across the image).

    Output pixel (i, j) samples the map ``u -> side u + t`` at the pixel centres
    u = (2 j + 1) / W - 1.  The map has no rotation, so the sampling grid is an outer sum
    of a column and a row coordinate; writing it so, instead of ``affine_grid``'s matrix
    product per pixel, saves most of the time on a CPU.  Every sample lies within half a
    pixel of the image, where ``border`` padding repeats the edge as torchvision does.
    """
    n, _, h, w = x.shape
    u = (2 * torch.arange(w, device=x.device, dtype=x.dtype) + 1) / w - 1
    v = (2 * torch.arange(h, device=x.device, dtype=x.dtype) + 1) / h - 1
    gx = (side[:, None] * u + tx[:, None])[:, None, :].expand(n, h, w)
    gy = (side[:, None] * v + ty[:, None])[:, :, None].expand(n, h, w)
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def batch_erase(x: torch.Tensor, p: float, g: torch.Generator, fill: tuple[float, ...]) -> torch.Tensor:
    """Random erasing: with probability p, fill one random rectangle per image with the colour ``fill``.

    As torchvision's RandomErasing: area fraction in [0.02, 0.33], aspect ratio
    log-uniform in [0.3, 3.3].  Pass the data set's mean (``convmixer.data.MEAN``) as ``fill``:
    it is what torchvision's value 0 means after normalisation.
    """
    if p <= 0:
        return x
    n, _, h, w = x.shape
    area = _uniform(n, g, x.device, 0.02, 0.33) * h * w
    log_ratio = _uniform(n, g, x.device, math.log(0.3), math.log(3.3))
    ratio = log_ratio.exp()
    eh = (area * ratio).sqrt().round().clamp(1, h)
    ew = (area / ratio).sqrt().round().clamp(1, w)
    top = (_uniform(n, g, x.device) * (h - eh + 1)).floor()
    left = (_uniform(n, g, x.device) * (w - ew + 1)).floor()
    apply = torch.rand(n, device=x.device, generator=g) < p
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    box = ((r >= top.view(-1, 1, 1)) & (r < (top + eh).view(-1, 1, 1))
           & (c >= left.view(-1, 1, 1)) & (c < (left + ew).view(-1, 1, 1)) & apply.view(-1, 1, 1))
    value = channel_constant(tuple(fill), x.device, x.dtype)
    return torch.where(box[:, None], value, x)


def augment_batch(x: torch.Tensor, aug: Augment, g: torch.Generator, fill: tuple[float, ...]) -> torch.Tensor:
    """Apply ``aug`` to a float batch in [0, 1]: crop, flip, RandAugment, erasing with the colour ``fill``."""
    if aug.crop == "pad":
        x = batch_crop(x, aug.padding, g)
    elif aug.crop == "resized":
        x = batch_resized_crop(x, aug.scale_min, g)
    if aug.flip:
        x = batch_flip(x, g)
    if aug.ra_n > 0:
        x = rand_augment(x, aug.ra_n, aug.ra_m, g)
    return batch_erase(x, aug.erase_p, g, fill)
