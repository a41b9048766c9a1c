"""CIFAR-10 on the training device: the files, the uint8 tensors and their cache, normalisation, batches.

The module reads top to bottom as the data travels: the class names and channel statistics and the
normalisation that uses them; where the files are, how they are read and checked, and their cache
(:func:`load_cifar10`); and :class:`BatchLoader`, which draws, augments and normalises whole batches
where the model runs.

Where the data comes from, in order:

1. ``root`` if given, else the ``CONVMIXER_DATA`` environment variable, else the per-user
   folder :func:`default_data_root` (``~/.cache/convmixer/data``, or under ``$XDG_CACHE_HOME``),
   the same wherever Python or Jupyter was started.
2. In that folder: a cache ``cifar10-<split>-uint8.pt`` written by an earlier call; else an
   ImageFolder tree ``<split>/<class>/*.jpg|png`` (the layout of the JPEG copy in
   ``shared/data``); else torchvision's ``cifar-10-batches-py``; else, if ``download`` is
   true, torchvision's own download (what a Colab reader gets).

A cache that cannot be read is rebuilt from the source (with a warning); a data folder that
cannot be written still works, without a cache.

``python -m convmixer.data --from cifar10-jpeg.tar.gz`` fills that folder from the JPEG archive
(the set-up scripts run it with ``../shared/data/cifar10-jpeg.tar.gz``); ``python -m convmixer.data``
says where the data is looked for.

Images are decoded once and cached as one (N, 3, 32, 32) uint8 tensor per split: 150 MB
for the training set, small enough to keep on a GPU, where :class:`BatchLoader`
indexes and augments whole batches with tensor ops instead of one PIL image at a time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import warnings
from pathlib import Path

import torch

from .augment import Augment, augment_batch, channel_constant
from .checkpoint import atomic_save

# -- classes, channel statistics, normalisation ---------------------------------------------------
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the official training set (as in the official CIFAR-10 script).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)
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


# -- the files and their cache ---------------------------------------------------------------------
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def default_data_root() -> Path:
    """The per-user data folder: ``$XDG_CACHE_HOME/convmixer/data``, by default ``~/.cache/convmixer/data``.

    One place for every working directory: a notebook whose kernel runs in ``book/``, a script run
    from the repository root and a Colab session all find (or download) CIFAR-10 there.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "convmixer" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $CONVMIXER_DATA (when set and not empty), else :func:`default_data_root`."""
    if root is None:
        root = os.environ.get("CONVMIXER_DATA") or default_data_root()
    return Path(root).expanduser()


def has_cifar10(root: str | os.PathLike | None = None) -> bool:
    """Whether ``root`` (default: :func:`data_root`) holds both splits in a form :func:`load_cifar10` reads
    without a download."""
    root = data_root(root)
    return (root / "cifar-10-batches-py").is_dir() or all(
        (root / f"cifar10-{split}-uint8.pt").is_file() or (root / split).is_dir() for split in SPLITS)


def install_archive(archive: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Extract a CIFAR-10 archive (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) into ``root``.

    Does nothing when ``root`` (default: :func:`data_root`) already holds the data set.  The
    archive is unpacked into a temporary folder beside ``root`` and moved into place split by
    split, so an interrupted extraction never leaves a half-filled split behind.
    """
    import shutil
    import tempfile

    root = data_root(root)
    if has_cifar10(root):
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        found = {p.name: p for p in [*Path(tmp).glob("*"), *Path(tmp).glob("*/*")] if p.is_dir() and p.name in SPLITS}
        missing = [s for s in SPLITS if s not in found]
        if missing:
            raise FileNotFoundError(f"{archive} holds no {' or '.join(missing)}/ folder; expected "
                                    f"train/<class>/*.jpg and test/<class>/*.jpg")
        for split in SPLITS:
            if not (root / split).is_dir():
                shutil.move(str(found[split]), root / split)
    return root


REEXTRACT = "extract the data set again (e.g. tar -xzf cifar10-jpeg.tar.gz)"
MAX_LISTED = 10  # bad files named in one error message


def _read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``folder/<class>/*`` into uint8 (N, 3, 32, 32) images and int64 labels.

    Every file is decoded in full (``im.load()``) with PIL's tolerance for truncated files
    switched off, so a truncated JPEG is an error rather than an image with a grey bottom half;
    all unusable files are reported together, by path, before anything is cached.
    """
    from PIL import Image, ImageFile
    import numpy as np

    entries = list(folder.iterdir())
    present = sorted(p.name for p in entries if p.is_dir())
    expected = ", ".join(CLASSES)
    if not present:
        state = "is empty" if not entries else "holds no class folders"
        raise FileNotFoundError(
            f"{folder} {state}; expected one folder per CIFAR-10 class ({expected}) holding that class's "
            f"32x32 images. Fix: {REEXTRACT}, or point root=... / CONVMIXER_DATA at a complete copy"
        )
    missing = [c for c in CLASSES if c not in present]
    if missing:
        raise FileNotFoundError(
            f"{folder} is missing the class folder(s) {', '.join(missing)} (it holds: {', '.join(present)}); "
            f"expected one folder per CIFAR-10 class, named exactly: {expected}. "
            f"Fix: add or rename the missing folders, or {REEXTRACT}"
        )
    images, labels, problems = [], [], []
    strict = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a global some libraries switch on; a cut file must fail here
    try:
        for label, name in enumerate(CLASSES):
            files = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"{folder / name} (class {name!r}) holds no images (.jpg, .jpeg, .png or .bmp). "
                    f"Fix: put that class's 32x32 images there, or {REEXTRACT}"
                )
            for f in files:
                try:
                    with Image.open(f) as im:
                        im.load()  # decode now: open() only reads the header
                        if im.size != (32, 32):
                            problems.append(f"{f} is {im.size[0]}x{im.size[1]} pixels, not 32x32 (resize it)")
                            continue
                        images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                        labels.append(label)
                except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    problems.append(f"{f} cannot be decoded: truncated or not an image ({reason})")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = strict
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ValueError(
            f"{len(problems)} image file(s) under {folder} cannot be used: {listed}{more}. "
            f"Fix: replace or delete these files, or {REEXTRACT}; nothing was cached"
        )
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def _read_torchvision(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=train, download=download)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def _read_cache(cache_file: Path) -> tuple[torch.Tensor, torch.Tensor] | str:
    """The cached (images, labels), or why the file cannot be used (it is then rebuilt)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            blob = torch.load(cache_file, weights_only=True)  # never runs pickled code
    except Exception as e:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
    if not isinstance(blob, dict) or not all(isinstance(blob.get(k), torch.Tensor) for k in ("images", "labels")):
        return "it does not hold an 'images' and a 'labels' tensor"
    x, y = blob["images"], blob["labels"]
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
        return f"its images are {x.dtype} {tuple(x.shape)}, not uint8 (N, 3, 32, 32)"
    if y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
        return f"its labels are {y.dtype} {tuple(y.shape)}, not int64 ({len(x)},)"
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(CLASSES):
        return f"its labels are not all in 0..{len(CLASSES) - 1}"
    return x, y


def load_cifar10(split: str = "train", root: str | os.PathLike | None = None, download: bool = True,
                 cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ("train" or "test") as (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    A cache file that cannot be read (a crash elsewhere, a bad copy) is rebuilt from the source
    with a warning; a folder that cannot be written (read-only) still loads, without a cache.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    cache_file = root / f"cifar10-{split}-uint8.pt"
    damaged = None
    if cache_file.is_file():
        got = _read_cache(cache_file)
        if not isinstance(got, str):
            return got
        damaged = got
    folder, batches = root / split, root / "cifar-10-batches-py"
    looked = [f"{cache_file} (unreadable: {damaged})" if damaged else str(cache_file), str(folder)]
    if folder.is_dir():
        source, read = str(folder), lambda: _read_image_folder(folder)
    elif batches.is_dir():
        source, read = str(batches), lambda: _read_torchvision(root, split == "train", download=False)
    else:
        looked.append(str(batches))
        absent = f"the folder {root} does not exist; " if not root.exists() else ""
        if not download:
            raise FileNotFoundError(_not_found(looked, absent + "download=False"))
        source = "a fresh download"

        def read():
            try:
                return _read_torchvision(root, split == "train", download=True)
            except Exception as e:  # no network, a proxy, a full disk: say what to do instead
                raise FileNotFoundError(_not_found(looked, f"{absent}the download failed: {e}")) from e
    if damaged:
        warnings.warn(f"the data cache {cache_file} cannot be used ({damaged}); rebuilding it from {source}",
                      stacklevel=2)
    x, y = read()
    if cache:
        try:
            atomic_save({"images": x, "labels": y}, cache_file)
        except OSError as e:  # a read-only data folder still works, just without the cache
            warnings.warn(f"cannot write the data cache {cache_file} ({e.strerror or e}); the data loaded "
                          f"fine but will be decoded again next time", stacklevel=2)
    return x, y


def _not_found(looked: list[str], why: str) -> str:
    return (
        "CIFAR-10 not found. Looked for: " + "; ".join(looked) + f" ({why}). "
        "Fix: pass root=... (or --data-root), or set CONVMIXER_DATA to a folder holding "
        "train/<class>/*.jpg and test/<class>/*.jpg, or torchvision's cifar-10-batches-py, "
        "or fill the default folder with python -m convmixer.data --from cifar10-jpeg.tar.gz, "
        "or allow the download on a machine with internet."
    )


# -- batches on the device -------------------------------------------------------------------------
# The data set arrives as one uint8 tensor and stays on the training device; every batch is gathered
# by indexing and transformed as a whole, the way airbench's loader works, instead of one PIL image at
# a time in worker processes.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convmixer.data",
                                     description="Where CIFAR-10 is looked for; fill that folder from an archive.")
    parser.add_argument("--from", dest="archive", metavar="TAR_GZ",
                        help="extract this archive (train/ and test/ class folders) there, unless the data is there")
    parser.add_argument("--root", help="the folder (default: $CONVMIXER_DATA, else the per-user cache folder)")
    args = parser.parse_args(argv)
    root = data_root(args.root)
    if args.archive:
        if not Path(args.archive).is_file():
            print(f"python -m convmixer.data: error: no archive at {args.archive}", file=sys.stderr)
            return 2
        already = has_cifar10(root)
        install_archive(args.archive, root)
        print(f"CIFAR-10 {'already in' if already else 'extracted to'} {root}")
    else:
        print(f"{root} ({'holds CIFAR-10' if has_cifar10(root) else 'no CIFAR-10 yet: the first use downloads it'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
