"""Data pipeline throughput: the library's BatchLoader against the official per-image PIL pipeline.

The official CIFAR-10 script (locuslab/convmixer-cifar10, ``train.py``) augments one PIL image at a
time in DataLoader worker processes::

    RandomResizedCrop(32, scale=(scale, 1), ratio=(1, 1)), RandomHorizontalFlip(),
    RandAugment(num_ops=ra_n, magnitude=ra_m), ColorJitter(jitter, jitter, jitter), ToTensor(),
    Normalize(mean, std), RandomErasing(p=reprob)

Two settings of its flags (:data:`SETTINGS`): the script's defaults, and the README's command that
reaches ~92.5% (the library's ``official`` preset).  Its data set is torchvision's ``CIFAR10``, which
holds uint8 arrays and makes a PIL image per item; :class:`PILCifar` does exactly that from the
library's uint8 tensors.  The library's :class:`convmixer.data.BatchLoader` does the same augmentations
on whole batches with tensor ops.  It has no colour jitter: at the README's setting (``--jitter 0``)
both sides do the same work; at the defaults the official side also jitters.

Both sides run with glibc told to keep freed memory (:func:`convmixer.runtime.keep_freed_memory`, which
the trainer calls on a CPU); the official DataLoader's workers are forked from this process and
inherit the setting.  Without it every 6 MiB batch tensor is page-faulted in afresh.

On a CPU the library's RandAugment sorts the batch by op and runs each op only on the images that
drew it (``convmixer.randaugment.rand_augment(..., grouped=True)``, its default there).  A third
pipeline forces the GPU-style path instead (``grouped=False``: every op on the whole batch, each image
keeping its own result with ``torch.where``; :func:`gpu_style_randaugment`), to show what the CPU path
is worth.
All three are timed in the steady state (after warm-up batches, which include the workers'
start-up), alternating round by round.
"""
from __future__ import annotations

import contextlib
import functools
import time

import torch


class PILCifar(torch.utils.data.Dataset):
    """torchvision's CIFAR10 behaviour: uint8 HWC arrays, one PIL image per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C like CIFAR10.data
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


# The official script's flags: its defaults, and its README's command (the library's `official` preset).
SETTINGS = {
    "script defaults": dict(scale=0.75, ra_n=1, ra_m=8, jitter=0.1, reprob=0.25),
    "README command": dict(scale=1.0, ra_n=2, ra_m=12, jitter=0.0, reprob=0.0),
}


def official_transform(scale: float, ra_n: int, ra_m: int, jitter: float, reprob: float):
    """The official script's training transform, flag for flag."""
    from torchvision import transforms

    from convmixer.data import MEAN, STD

    return transforms.Compose([
        transforms.RandomResizedCrop(32, scale=(scale, 1.0), ratio=(1.0, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandAugment(num_ops=ra_n, magnitude=ra_m),
        transforms.ColorJitter(jitter, jitter, jitter),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
        transforms.RandomErasing(p=reprob),
    ])


def official_loader(images, labels, batch_size, setting: dict, workers=2):
    ds = PILCifar(images, labels, official_transform(**setting))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=False)


def library_augment(setting: dict):
    """The library's augmentation for the official flags (colour jitter aside)."""
    from convmixer.augment import Augment

    return Augment(crop="resized" if setting["scale"] < 1 else "none", scale_min=setting["scale"], flip=True,
                   ra_n=setting["ra_n"], ra_m=setting["ra_m"], erase_p=setting["reprob"])


def library_loader(images, labels, batch_size, setting: dict):
    from convmixer.data import BatchLoader

    return BatchLoader(images, labels, batch_size, train=True, augment=library_augment(setting), device="cpu")


def time_loader(loader, warmup: int, min_batches: int, min_seconds: float) -> float:
    """Images per second after ``warmup`` batches (start-up excluded), over at least ``min_batches``
    batches and ``min_seconds`` seconds: a fast loader gets a window as long as a slow one's."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, batches, t0 = 0, 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - t0 < min_seconds:
        try:
            x, _ = next(it)
        except StopIteration:  # a new epoch
            it = iter(loader)
            continue
        n, batches = n + len(x), batches + 1
    dt = time.perf_counter() - t0
    del it
    return n / dt


@contextlib.contextmanager
def gpu_style_randaugment():
    """Temporarily make ``rand_augment`` take its GPU path (``grouped=False``) on the CPU too.

    For this benchmark only: the library chooses the grouped path on a CPU by itself.
    """
    from convmixer import randaugment as ra

    original = ra.rand_augment
    ra.rand_augment = functools.partial(original, grouped=False)
    try:
        yield
    finally:
        ra.rand_augment = original


def run(images, labels, settings=tuple(SETTINGS), batch_size=512, repeats=5, batches=8, seconds=1.0,
        warmup=2) -> dict:
    """Official, library (CPU path) and library forced onto the GPU path, alternating round by round."""
    from convmixer.runtime import keep_freed_memory

    from .common import median

    mallopt = keep_freed_memory()
    rows = []
    for name in settings:
        setting = SETTINGS[name]
        official, library, gpu_style = [], [], []
        for r in range(repeats):
            official.append(time_loader(official_loader(images, labels, batch_size, setting), warmup, batches,
                                        seconds))
            library.append(time_loader(library_loader(images, labels, batch_size, setting), warmup, batches,
                                       seconds))
            with gpu_style_randaugment():
                gpu_style.append(time_loader(library_loader(images, labels, batch_size, setting), warmup, batches,
                                             seconds))
        ratios = [b / a for a, b in zip(official, library)]
        ratios_gpu_style = [b / a for a, b in zip(official, gpu_style)]
        rows.append({"setting": name, **setting, "library_augment": library_augment(setting).to_dict(),
                     "official_images_per_second": official,
                     "library_images_per_second": library, "library_gpu_path_images_per_second": gpu_style,
                     "ratios": ratios, "ratios_gpu_path": ratios_gpu_style,
                     "official_median": median(official), "library_median": median(library),
                     "library_gpu_path_median": median(gpu_style),
                     "ratio_median": median(ratios), "ratio_gpu_path_median": median(ratios_gpu_style)})
    return {"batch_size": batch_size, "min_batches_timed": batches, "min_seconds_timed": seconds,
            "warmup_batches": warmup, "repeats": repeats, "glibc_keeps_freed_memory": mallopt,
            "official_pipeline": "torchvision PIL transforms per image, DataLoader(num_workers=2): RandomResizedCrop"
                                 "(32, scale=(scale, 1), ratio=(1, 1)), RandomHorizontalFlip, RandAugment(ra_n, ra_m), "
                                 "ColorJitter(jitter, jitter, jitter), ToTensor, Normalize, RandomErasing(reprob)",
            "library_pipeline": "convmixer.data.BatchLoader on the CPU, one process, library_augment of each row; "
                                "no colour jitter; RandAugment on its CPU path (rand_augment grouped=True: the "
                                "batch sorted by op, each op on the images that drew it)",
            "library_gpu_path_pipeline": "the same, forced onto RandAugment's GPU path (rand_augment grouped=False: "
                                         "every op on the whole batch, torch.where keeps each image's own); "
                                         "identical images",
            "rows": rows}
