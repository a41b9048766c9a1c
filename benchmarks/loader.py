"""Data pipeline throughput: the library's BatchLoader against the official per-image PIL pipeline.

The official CIFAR-10 script (locuslab/convmixer, ``train.py``) augments one PIL image at a time
in DataLoader worker processes::

    RandomResizedCrop(32, scale=(0.75, 1), ratio=(1, 1)), RandomHorizontalFlip(),
    RandAugment(num_ops=n, magnitude=m), ColorJitter(0.1, 0.1, 0.1), ToTensor(),
    Normalize(mean, std), RandomErasing(p=0.25)

Its data set is torchvision's ``CIFAR10``, which holds uint8 arrays and makes a PIL image per item;
:class:`PILCifar` does exactly that from the library's uint8 tensors.  The library's
:class:`convmixer.data.BatchLoader` does the same augmentations on whole batches with tensor ops
(it has no colour jitter, which the README's command switches off with ``--jitter 0``).

On a CPU the library's RandAugment runs each op only on the images that drew it
(``convmixer.randaugment.apply_ops(..., grouped=True)``, its default there).  A third pipeline forces
the GPU-style path instead (``grouped=False``: every op on the whole batch, each image keeping its
own result with ``torch.where``; :func:`gpu_style_randaugment`), to show what the CPU path is worth.
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


def official_transform(ra_n: int, ra_m: int, scale: float = 0.75, jitter: float = 0.1, reprob: float = 0.25):
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


def official_loader(images, labels, batch_size, ra_n, ra_m, workers=2):
    ds = PILCifar(images, labels, official_transform(ra_n, ra_m))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=False)


def library_loader(images, labels, batch_size, ra_n, ra_m):
    from convmixer.augment import Augment
    from convmixer.data import BatchLoader

    aug = Augment(crop="resized", scale_min=0.75, flip=True, ra_n=ra_n, ra_m=ra_m, erase_p=0.25)
    return BatchLoader(images, labels, batch_size, train=True, augment=aug, device="cpu")


def time_loader(loader, warmup: int, batches: int) -> float:
    """Images per second over ``batches`` batches after ``warmup`` batches (start-up excluded)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        n += len(x)
    dt = time.perf_counter() - t0
    del it
    return n / dt


@contextlib.contextmanager
def gpu_style_randaugment():
    """Temporarily make ``rand_augment`` take the GPU path of ``apply_ops`` (``grouped=False``) on the CPU too.

    For this benchmark only: the library chooses the grouped path on a CPU by itself.
    """
    from convmixer import randaugment as ra

    original = ra.apply_ops
    ra.apply_ops = functools.partial(original, grouped=False)
    try:
        yield
    finally:
        ra.apply_ops = original


def run(images, labels, settings=((1, 8), (2, 12)), batch_size=512, repeats=3, batches=6, warmup=2) -> dict:
    """Official, library (CPU path) and library forced onto the GPU path, alternating round by round."""
    from .common import median

    rows = []
    for ra_n, ra_m in settings:
        official, library, gpu_style = [], [], []
        for r in range(repeats):
            official.append(time_loader(official_loader(images, labels, batch_size, ra_n, ra_m), warmup, batches))
            library.append(time_loader(library_loader(images, labels, batch_size, ra_n, ra_m), warmup, batches))
            with gpu_style_randaugment():
                gpu_style.append(time_loader(library_loader(images, labels, batch_size, ra_n, ra_m), warmup,
                                             batches))
        ratios = [b / a for a, b in zip(official, library)]
        ratios_gpu_style = [b / a for a, b in zip(official, gpu_style)]
        rows.append({"ra_n": ra_n, "ra_m": ra_m, "official_images_per_second": official,
                     "library_images_per_second": library, "library_gpu_path_images_per_second": gpu_style,
                     "ratios": ratios, "ratios_gpu_path": ratios_gpu_style,
                     "official_median": median(official), "library_median": median(library),
                     "library_gpu_path_median": median(gpu_style),
                     "ratio_median": median(ratios), "ratio_gpu_path_median": median(ratios_gpu_style)})
    return {"batch_size": batch_size, "batches_timed": batches, "warmup_batches": warmup, "repeats": repeats,
            "official_pipeline": "torchvision PIL transforms per image, DataLoader(num_workers=2): RandomResizedCrop"
                                 "(32, scale=(0.75, 1), ratio=(1, 1)), RandomHorizontalFlip, RandAugment(n, m), "
                                 "ColorJitter(0.1, 0.1, 0.1), ToTensor, Normalize, RandomErasing(0.25)",
            "library_pipeline": "convmixer.data.BatchLoader on the CPU, one process: Augment(crop='resized', "
                                "scale_min=0.75, flip=True, ra_n=n, ra_m=m, erase_p=0.25); no colour jitter; "
                                "RandAugment on its CPU path (apply_ops grouped=True: each op on the images "
                                "that drew it)",
            "library_gpu_path_pipeline": "the same, forced onto RandAugment's GPU path (apply_ops grouped=False: "
                                         "every op on the whole batch, torch.where keeps each image's own); "
                                         "identical images",
            "rows": rows}
