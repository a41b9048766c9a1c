"""The on-device loader: CIFAR-10 batches drawn, augmented and normalised where the model runs.

The data set arrives as one uint8 tensor (from :func:`convmixer.data.load_cifar10`) and stays on
the training device; every batch is gathered by indexing and transformed as a whole, the way
airbench's loader works, instead of one PIL image at a time in worker processes.
"""
from __future__ import annotations

import torch

from .augment import Augment, augment_batch
from .normalize import MEAN, normalize_float


class BatchLoader:
    """Batches of a data set that lives on ``device`` as one uint8 tensor.

    Each epoch draws one random permutation and slices it into batches; a batch is
    gathered by indexing, converted to float, augmented as a whole (see
    :mod:`convmixer.augment`) and normalised, all on the device: no worker
    processes, no per-image Python, no host-device copy per step.  All randomness
    comes from a generator seeded with (seed, epoch), so epoch e is the same
    whether training ran straight through or resumed at e.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool,
                 augment: Augment | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 channels_last: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment = augment if train else None
        self.channels_last = channels_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.images)
        order = torch.randperm(n, device=self.device, generator=g) if self.train else torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            # index_select: the same rows as images[idx], several times faster on a CPU; dividing the
            # uint8 batch makes the float batch in one pass
            x = torch.div(self.images.index_select(0, idx), 255)
            if self.augment is not None:
                x = augment_batch(x, self.augment, g, fill=MEAN)
            x = normalize_float(x, inplace=True)  # x is this loop's own tensor
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
