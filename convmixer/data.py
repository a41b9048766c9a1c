"""CIFAR-10 as two uint8 tensors, and a loader that keeps them on the training device.

Where the data comes from, in order:

1. ``root`` if given, else the ``CONVMIXER_DATA`` environment variable, else ``./data``.
2. In that folder: a cache ``cifar10-<split>-uint8.pt`` written by an earlier call; else an
   ImageFolder tree ``<split>/<class>/*.jpg|png`` (the layout of the JPEG copy in
   ``shared/data``); else torchvision's ``cifar-10-batches-py``; else, if ``download`` is
   true, torchvision's own download (what a Colab reader gets).

Images are decoded once and cached as one (N, 3, 32, 32) uint8 tensor per split: 150 MB
for the training set, small enough to keep on a GPU, where whole batches are
indexed and augmented with tensor ops instead of one PIL image at a time.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .augment import Augment, augment_batch
from .checkpoint import atomic_save

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the official training set (as in the official CIFAR-10 script).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $CONVMIXER_DATA, else ./data."""
    return Path(root if root is not None else os.environ.get("CONVMIXER_DATA", "data")).expanduser()


def _read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``folder/<class>/*`` into uint8 (N, 3, 32, 32) images and int64 labels."""
    from PIL import Image, UnidentifiedImageError
    import numpy as np

    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    missing = [c for c in CLASSES if c not in present]
    if missing:
        raise FileNotFoundError(
            f"{folder} is missing the class folder(s) {', '.join(missing)}; expected one folder per "
            f"CIFAR-10 class: {', '.join(CLASSES)}"
        )
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        files = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{folder / name} holds no images (.jpg, .jpeg, .png or .bmp)")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if im.size != (32, 32):
                        raise ValueError(f"{f} is {im.size[0]}x{im.size[1]}, expected a 32x32 CIFAR-10 image")
                    images.append(np.asarray(im, dtype=np.uint8))
            except (OSError, UnidentifiedImageError) as e:
                raise ValueError(f"cannot decode {f} ({e}); the file is truncated or not an image: "
                                 f"replace it or extract the data set again") from e
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def _read_torchvision(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=train, download=download)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def load_cifar10(split: str = "train", root: str | os.PathLike | None = None, download: bool = True,
                 cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ("train" or "test") as (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    cache_file = root / f"cifar10-{split}-uint8.pt"
    if cache_file.is_file():
        blob = torch.load(cache_file, weights_only=True)
        return blob["images"], blob["labels"]
    folder = root / split
    looked = [str(cache_file), str(folder)]
    if folder.is_dir():
        x, y = _read_image_folder(folder)
    elif (root / "cifar-10-batches-py").is_dir():
        x, y = _read_torchvision(root, split == "train", download=False)
    else:
        looked.append(str(root / "cifar-10-batches-py"))
        if not download:
            raise FileNotFoundError(_not_found(looked, "download=False"))
        try:
            x, y = _read_torchvision(root, split == "train", download=True)
        except Exception as e:  # no network, a proxy, a full disk: say what to do instead
            raise FileNotFoundError(_not_found(looked, f"the download failed: {e}")) from e
    if cache:
        try:
            atomic_save({"images": x, "labels": y}, cache_file)
        except OSError:
            pass  # a read-only data folder still works, just without the cache
    return x, y


def _not_found(looked: list[str], why: str) -> str:
    return (
        "CIFAR-10 not found. Looked for: " + "; ".join(looked) + f" ({why}). "
        "Fix: pass root=... (or --data-root), or set CONVMIXER_DATA to a folder holding "
        "train/<class>/*.jpg and test/<class>/*.jpg, or torchvision's cifar-10-batches-py, "
        "or allow the download on a machine with internet."
    )


def normalize(x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> (x / 255 - mean) / std, per channel."""
    return normalize_float(x_uint8.to(dtype) / 255)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, to [0, 1] floats for plotting."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)


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
            x = self.images[idx].float().div_(255)
            if self.augment is not None:
                x = augment_batch(x, self.augment, g)
            x = normalize_float(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


def normalize_float(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> (x - mean) / std, per channel."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
