"""ImageNet-layout folders larger than memory, streamed through a standard ``DataLoader``.

CIFAR-10 fits on the device (:class:`convmixer.data.BatchLoader`); ImageNet's 1.28 M JPEGs
do not, so here worker processes decode and augment images one at a time, as in the paper's
timm training.  The paper's ImageNet recipe (locuslab/convmixer README) used
``--aa rand-m9-mstd0.5-inc1 --cutmix 0.5 --mixup 0.5 --reprob 0.25 --remode pixel`` on
224 x 224 crops, that is

    RandomResizedCrop(224, bicubic) -> flip -> timm RandAugment rand-m9-mstd0.5-inc1 -> normalise
    -> RandomErasing(0.25, per-pixel noise)

and, per batch, MixUp(alpha 0.5) or CutMix(alpha 0.5), chosen at random, which turns labels
into class probabilities.  Evaluation resizes to 224 / 0.96 and takes the centre crop, as timm's
``crop_pct=0.96`` for ConvMixer.

The RandAugment is timm's own (:func:`timm_rand_augment`), built with timm's factory and the
parameters timm's ``create_transform`` gives it, because torchvision's is a different, much
weaker augmentation at the same numbers: ``rand-m9-mstd0.5-inc1`` means 2 operations per image,
each applied with probability 0.5, at magnitude 9 of timm's 10 (rotations up to 27 degrees) with
Gaussian noise of standard deviation 0.5 on the magnitude, using the "increasing" variants of the
colour operations (a larger magnitude always means a stronger change); torchvision's
``RandAugment(magnitude=9)`` is 9 of its 30 bins (rotations up to 9 degrees), every op always
applied.  So on this path ``ra_m`` is timm's magnitude, 0 to 10.  timm is an optional dependency
of the library: a folder loader with RandAugment on needs ``pip install timm``.

The folder holds ``train/<class>/*`` and ``val/<class>/*`` (the usual ImageNet layout).
Under ``torchrun`` a ``DistributedSampler`` gives each process its own shard of every epoch.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.96


def check_imagefolder_crop(crop: str) -> None:
    """Raise ``ValueError`` unless ``crop`` is one a folder of full-size photos can apply: "resized".

    ImageNet images come in every size, so training always cuts a RandomResizedCrop of area
    fraction [scale_min, 1] and resizes it to ``image_size``; the CIFAR-10 crops ("pad" with its
    ``padding``, or "none" for images already 32 x 32) have no meaning here.  Refusing them
    keeps a configuration from saying one thing while the loader does another.
    """
    if crop != "resized":
        raise ValueError(f"crop={crop!r} cannot be applied to an ImageNet-layout folder: its training images "
                         f"are always cut with a RandomResizedCrop; use crop='resized' (--crop resized, area "
                         f"fraction from --scale); 'pad' with its padding and 'none' are for CIFAR-10's 32x32 images")


def rand_augment_spec(ra_n: int = 2, ra_m: int = 9) -> str:
    """timm's configuration string for ``ra_n`` ops at magnitude ``ra_m`` (of 10), with the paper's
    magnitude noise and increasing ops: ``rand_augment_spec(2, 9)`` is ``"rand-m9-n2-mstd0.5-inc1"``,
    the same augmentation as the paper's ``rand-m9-mstd0.5-inc1`` (timm's default is 2 ops)."""
    return f"rand-m{ra_m}-n{ra_n}-mstd0.5-inc1"


def timm_rand_augment(image_size: int = 224, ra_n: int = 2, ra_m: int = 9):
    """timm's RandAugment ``rand-m{ra_m}-n{ra_n}-mstd0.5-inc1`` for ``image_size`` crops, with the
    parameters ``timm.data.create_transform(image_size, is_training=True, auto_augment=...)`` gives it:
    translations up to 45% of the crop, ImageNet's mean colour to fill what a rotation or shear uncovers,
    bilinear or bicubic resampling at random (timm ``train.py``'s default ``--train-interpolation random``).

    Raises ``ImportError`` naming ``pip install timm`` without timm, and ``ValueError`` for a
    magnitude outside timm's 0..10 (timm would silently clip it).
    """
    if not 0 <= ra_m <= 10:
        raise ValueError(f"ra_m={ra_m}: the ImageNet-folder loader uses timm's RandAugment, whose magnitude runs "
                         f"from 0 to 10 (the paper: --ra-m 9, timm's rand-m9); 0..30 is the CIFAR-10 loader's scale")
    try:
        from timm.data.auto_augment import rand_augment_transform
    except ImportError as e:
        raise ImportError("the ImageNet recipe's RandAugment is timm's rand-m9-mstd0.5-inc1, and timm is not "
                          "installed: pip install timm (or switch RandAugment off with --ra-n 0)") from e
    hparams = dict(translate_const=int(image_size * 0.45),
                   img_mean=tuple(min(255, round(255 * x)) for x in IMAGENET_MEAN))
    return rand_augment_transform(rand_augment_spec(ra_n, ra_m), hparams)


def train_transform(image_size: int = 224, ra_n: int = 2, ra_m: int = 9, erase_p: float = 0.25,
                    scale_min: float = 0.08, flip: bool = True):
    """The training augmentation of one image: RandomResizedCrop, a flip (unless ``flip`` is false),
    timm's RandAugment (``ra_n`` ops at magnitude ``ra_m`` of 10, :func:`timm_rand_augment`; off for
    ``ra_n=0``, which needs no timm), normalisation, random erasing with per-pixel noise."""
    from torchvision.transforms import InterpolationMode, v2

    steps = [v2.RandomResizedCrop(image_size, scale=(scale_min, 1.0), interpolation=InterpolationMode.BICUBIC,
                                  antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if ra_n > 0:
        steps.append(timm_rand_augment(image_size, ra_n, ra_m))  # on the PIL image, as in timm
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erase_p > 0:
        steps.append(v2.RandomErasing(p=erase_p, value="random"))  # timm's --remode pixel: per-pixel noise
    return v2.Compose(steps)


def eval_transform(image_size: int = 224):
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose([v2.Resize(int(image_size / CROP_FRACTION), interpolation=InterpolationMode.BICUBIC,
                                 antialias=True),
                       v2.CenterCrop(image_size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def mix_collate(n_classes: int, mixup: float, cutmix: float):
    """A collate function applying MixUp or CutMix (one of them, at random) to each batch."""
    from torch.utils.data import default_collate
    from torchvision.transforms import v2

    mixers = ([v2.MixUp(alpha=mixup, num_classes=n_classes)] if mixup > 0 else []) + \
             ([v2.CutMix(alpha=cutmix, num_classes=n_classes)] if cutmix > 0 else [])
    if not mixers:
        return default_collate
    mix = v2.RandomChoice(mixers)
    return lambda batch: mix(*default_collate(batch))


def _folder(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no {split}/ folder in {root}: an ImageNet-layout data set holds "
                                f"{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG")
    return folder


class StreamingLoader:
    """A ``DataLoader`` over an ImageFolder that moves batches to ``device``; one per split.

    Under ``torchrun`` its ``DistributedSampler`` already gives this process its own share of the
    images, so the trainer does not split its batches again (see ``convmixer.train``).
    ``channels_last`` converts each batch on the device to the layout a channels-last model wants
    (else every convolution converts it again).
    """

    def __init__(self, dataset, batch_size: int, *, train: bool, device, workers: int, seed: int,
                 world: int = 1, rank: int = 0, collate_fn=None, channels_last: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler

        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.sampler = DistributedSampler(dataset, world, rank, shuffle=train, seed=seed, drop_last=train) \
            if world > 1 else None
        g = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(dataset, batch_size=batch_size // world, shuffle=train and self.sampler is None,
                                 sampler=self.sampler, num_workers=workers, drop_last=train, generator=g,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 collate_fn=collate_fn)

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield (x.to(self.device, non_blocking=True, memory_format=self.memory_format),
                   y.to(self.device, non_blocking=True))


def imagefolder_loaders(root: str | os.PathLike, batch_size: int, *, device, image_size: int = 224,
                        workers: int = 8, seed: int = 0, ra_n: int = 2, ra_m: int = 9, erase_p: float = 0.25,
                        scale_min: float = 0.08, mixup: float = 0.0, cutmix: float = 0.0, crop: str = "resized",
                        flip: bool = True, world: int = 1, rank: int = 0, channels_last: bool = False):
    """(train loader, validation loader, class names) for an ImageNet-layout folder.

    Every augmentation argument is applied; ``crop`` must be "resized" (:func:`check_imagefolder_crop`
    says why and raises otherwise), ``flip=False`` leaves out the horizontal flip.
    """
    from torchvision.datasets import ImageFolder

    check_imagefolder_crop(crop)
    root = Path(root)
    train_set = ImageFolder(str(_folder(root, "train")), transform=train_transform(image_size, ra_n, ra_m,
                                                                                  erase_p, scale_min, flip))
    val_set = ImageFolder(str(_folder(root, "val")), transform=eval_transform(image_size))
    if train_set.classes != val_set.classes:
        raise ValueError(f"train/ and val/ in {root} hold different class folders")
    collate = mix_collate(len(train_set.classes), mixup, cutmix)
    train = StreamingLoader(train_set, batch_size, train=True, device=device, workers=workers, seed=seed,
                            world=world, rank=rank, collate_fn=collate, channels_last=channels_last)
    val = StreamingLoader(val_set, batch_size, train=False, device=device, workers=workers, seed=seed,
                          world=world, rank=rank, channels_last=channels_last)
    return train, val, train_set.classes
