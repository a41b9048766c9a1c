"""CIFAR-10's class names and channel statistics, and the normalisation that uses them.

A leaf module: it imports nothing from the package, so the data files (:mod:`convmixer.data`),
the augmentations (:mod:`convmixer.augment`) and the loader (:mod:`convmixer.batch_loader`) can
all use these constants without importing one another.
"""
from __future__ import annotations

import functools

import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the official training set (as in the official CIFAR-10 script).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)


@functools.lru_cache(maxsize=None)
def channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A (1, C, 1, 1) constant, made once per device and dtype.

    Building it from a Python tuple every batch would copy it from the host each time, and on a
    GPU such a copy waits for the device: one hidden synchronisation per training step.
    """
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def normalize_float(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """[0, 1] floats -> (x - mean) / std, per channel; ``inplace`` overwrites x (no new 6 MiB batch)."""
    mean, std = channel_constant(MEAN, x.device, x.dtype), channel_constant(STD, x.device, x.dtype)
    return x.sub_(mean).div_(std) if inplace else (x - mean) / std


def normalize(x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> (x / 255 - mean) / std, per channel."""
    return normalize_float(x_uint8.to(dtype) / 255)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, to [0, 1] floats for plotting."""
    x = x.float()
    return (x * channel_constant(STD, x.device, x.dtype) + channel_constant(MEAN, x.device, x.dtype)).clamp(0, 1)
