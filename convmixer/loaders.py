"""The loaders a training run reads: CIFAR-10 in memory on the device, or an ImageNet-layout folder."""
from __future__ import annotations

import torch

from .batch_loader import BatchLoader
from .config import TrainConfig
from .data import load_cifar10
from .runtime import Distributed


def subset(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int):
    """A seeded random subset of n examples (all of them when n is 0)."""
    if n == 0 or n >= len(images):
        return images, labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx], labels[idx]


def build_loaders(cfg: TrainConfig, device: torch.device, dist: Distributed):
    """The run's (train, test) loaders: CIFAR-10 in memory on ``device``, or an ImageNet-layout folder.

    Every process's CIFAR-10 loader yields the whole global batch (each process keeps its share, see
    ``Trainer.shard_batches``); the folder loader's ``DistributedSampler`` gives each its own images.
    """
    if cfg.dataset == "imagefolder":
        from .imagenet import imagefolder_loaders

        train, test, classes = imagefolder_loaders(
            cfg.data_root, cfg.batch_size, device=device, image_size=cfg.image_size, workers=cfg.workers,
            seed=cfg.seed, ra_n=cfg.ra_n, ra_m=cfg.ra_m, erase_p=cfg.erase_p, scale_min=cfg.scale_min,
            mixup=cfg.mixup, cutmix=cfg.cutmix, world=dist.world, rank=dist.rank, channels_last=cfg.channels_last)
        if len(classes) != cfg.n_classes:
            raise ValueError(f"{cfg.data_root} holds {len(classes)} classes; pass --n-classes {len(classes)}")
    else:
        root = cfg.data_root or None
        with dist.main_first():  # one download and one cache file, by rank 0, on a first run
            xtr, ytr = subset(*load_cifar10("train", root), cfg.train_subset, cfg.seed)
            xte, yte = subset(*load_cifar10("test", root), cfg.test_subset, cfg.seed)
        train = BatchLoader(xtr, ytr, cfg.batch_size, train=True, augment=cfg.augment(),
                            device=device, seed=cfg.seed, channels_last=cfg.channels_last)
        test = BatchLoader(xte, yte, max(cfg.batch_size, 500), train=False, device=device,
                           channels_last=cfg.channels_last)
    if len(train) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set")
    return train, test
