"""Train ConvMixer on CIFAR-10: the official recipe, on an on-device data pipeline.

The official CIFAR-10 script's recipe (its README's command for ~92.5% in 25 epochs):
ConvMixer-256/8 with k = 5, p = 2; AdamW (lr_max 0.05, weight decay 0.005), batch 512;
a per-iteration piecewise-linear "one-cycle" learning rate; RandAugment(n=2, m=12) and
horizontal flips; mixed precision.  ``TrainConfig()`` holds exactly that; ``PRESETS``
adds budgets that finish in minutes on a CPU.

    python -m convmixer.train                       # the official recipe (wants a GPU)
    python -m convmixer.train --preset cpu          # ~6 minutes on a 2-core CPU
    python -m convmixer.train --preset tiny --out-dir runs/tiny
    python -m convmixer.train --preset tiny --out-dir runs/tiny --resume --epochs 3 ...

A run writes ``last.pt`` (model, optimizer, position in the schedule, history),
``history.json`` and ``config.json`` into ``--out-dir``, atomically, after every epoch
and when interrupted (Ctrl-C or SIGTERM).  ``--resume`` continues from ``last.pt``
and reaches the same weights as a run that was never interrupted.

Under ``torchrun`` the same command trains data-parallel (DistributedDataParallel): every
process draws the same global batch of ``--batch-size`` images, keeps its own 1/world share,
and gradients are averaged across processes; metrics are reduced and rank 0 alone writes files and
prints.  BatchNorm keeps per-GPU statistics unless ``--sync-bn`` (64 images per GPU for 512/8 are
plenty, and SyncBatchNorm waits for the host in each of ConvMixer-256/8's 17 BatchNorm layers every
step).  Rank 0 fetches CIFAR-10 first; ``--resume`` reads rank 0's ``last.pt`` and sends it to the
other processes, so on several machines only the first needs the run folder.  A stop signal
(Ctrl-C, SIGTERM) stops every process at the same step, the next ``--log-every`` point.

    torchrun --standalone --nproc_per_node 8 -m convmixer.train            # one machine, 8 GPUs
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \
             --rdzv_endpoint HOST:29500 -m convmixer.train                 # two machines
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from .augment import CROPS, Augment
from .checkpoint import (FORMAT, CheckpointError, atomic_save, atomic_save_json, check_architecture,
                         config_differences, load_checkpoint)
from .data import BatchLoader, load_cifar10
from .model import RESIDUAL_NAMES, ConvMixer, ConvMixerConfig
from .runtime import (DTYPES, PRECISIONS, Distributed, autocast_dtype, choose_precision, cpu_name,  # noqa: F401
                      hardware_name, keep_freed_memory, native_bf16, resolve_device, seed_everything,
                      shutdown_distributed, use_fused_adamw)


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every knob of a run.  The defaults are the official CIFAR-10 recipe."""

    # model: ConvMixer-h/d with kernel k and patch p
    dim: int = _opt(256, "width h")
    depth: int = _opt(8, "depth d")
    kernel_size: int = _opt(5, "depthwise kernel size k (odd)")
    patch_size: int = _opt(2, "patch size p")
    activation: str = _opt("gelu", "activation", choices=("gelu", "relu"))
    residual: str = _opt("spatial", "residual placement", choices=RESIDUAL_NAMES)
    norm: str = _opt("batch", "normalization", choices=("batch", "layer"))
    n_classes: int = _opt(10, "classes (10 for CIFAR-10; the folder's class count for --dataset imagefolder)")
    # data
    dataset: str = _opt("cifar10", "cifar10 (in memory, on the device) or imagefolder (streamed: "
                        "DATA_ROOT/train/<class>/*, DATA_ROOT/val/<class>/*)", choices=("cifar10", "imagefolder"))
    data_root: str = _opt("", "data folder (CIFAR-10 default: $CONVMIXER_DATA, else ~/.cache/convmixer/data)")
    image_size: int = _opt(224, "crop size for --dataset imagefolder")
    workers: int = _opt(8, "DataLoader worker processes for --dataset imagefolder")
    train_subset: int = _opt(0, "train on a random subset of this many images (0: all 50,000)")
    test_subset: int = _opt(0, "evaluate on a random subset of this many test images (0: all 10,000)")
    batch_size: int = _opt(512, "batch size")
    # augmentation
    crop: str = _opt("none", "crop: pad+random crop, random resized crop, or none", choices=CROPS)
    padding: int = _opt(4, "padding for --crop pad")
    scale_min: float = _opt(1.0, "smallest area fraction for --crop resized (official --scale)")
    flip: bool = _opt(True, "random horizontal flips")
    ra_n: int = _opt(2, "RandAugment ops per image (0: off)")
    ra_m: int = _opt(12, "RandAugment magnitude, 0..30")
    erase_p: float = _opt(0.0, "random erasing probability (official --reprob)")
    mixup: float = _opt(0.0, "MixUp alpha, --dataset imagefolder only (the paper's ImageNet runs: 0.5)")
    cutmix: float = _opt(0.0, "CutMix alpha, --dataset imagefolder only (the paper's ImageNet runs: 0.5)")
    # optimisation
    epochs: int = _opt(25, "epochs")
    lr_max: float = _opt(0.05, "peak learning rate of the one-cycle schedule")
    weight_decay: float = _opt(0.005, "AdamW weight decay")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy")
    clip_norm: float = _opt(0.0, "clip the gradient norm to this value (0: off)")
    # execution
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    precision: str = _opt("auto", "auto: bf16 autocast on GPUs that run it natively (compute capability 8.0+: A100, "
                          "H100, RTX 30xx+), fp16 autocast with a loss scaler on older GPUs (T4, V100), fp32 on a CPU",
                          choices=PRECISIONS)
    channels_last: bool = _opt(True, "channels_last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    threads: int = _opt(0, "CPU threads for torch (0: torch's default)")
    seed: int = _opt(0, "seed for initialisation, data order and augmentation")
    out_dir: str = _opt("runs/convmixer", "folder for last.pt, history.json, config.json")
    resume: bool = _opt(False, "continue from OUT_DIR/last.pt")
    log_every: int = _opt(50, "check the loss and report progress every this many steps")
    sync_bn: bool = _opt(False, "synchronise BatchNorm statistics across processes under torchrun (GPU only; "
                         "off: each GPU's share of the batch has its own statistics, as in the official script's "
                         "DataParallel, and PyTorch's SyncBatchNorm waits for the host in every BatchNorm layer)")

    def __post_init__(self):
        self.model_config()  # validates the architecture fields
        self.augment()
        for name in ("batch_size", "epochs", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "threads", "weight_decay", "clip_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr_max <= 10:  # inf crashes AdamW, 1e38 overflows its float step size
            raise ValueError(f"lr_max must be in (0, 10], got {self.lr_max} (the official recipe uses 0.05)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.dataset == "cifar10" and (self.mixup or self.cutmix):
            raise ValueError("--mixup/--cutmix need --dataset imagefolder (the in-memory CIFAR-10 loader has none)")
        if self.dataset == "cifar10" and self.n_classes != 10:
            raise ValueError(f"CIFAR-10 has 10 classes, got --n-classes {self.n_classes}")
        if self.dataset == "imagefolder" and not self.data_root:
            raise ValueError("--dataset imagefolder needs --data-root, a folder with train/<class>/ and val/<class>/")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def model_config(self) -> ConvMixerConfig:
        return ConvMixerConfig(dim=self.dim, depth=self.depth, kernel_size=self.kernel_size,
                               patch_size=self.patch_size, n_classes=self.n_classes, in_channels=3,
                               activation=self.activation, residual=self.residual, norm=self.norm)

    def augment(self) -> Augment:
        return Augment(crop=self.crop, padding=self.padding, scale_min=self.scale_min, flip=self.flip,
                       ra_n=self.ra_n, ra_m=self.ra_m, erase_p=self.erase_p)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that may change between an interrupted run and its resumption without changing the result.
# A precision change is allowed too, with a note (a run moved from an A100 to a T4 continues in fp16).
RUNTIME_FIELDS = {"data_root", "out_dir", "resume", "compile", "threads", "log_every", "device", "sync_bn",
                  "workers", "precision"}

PRESETS: dict[str, dict] = {
    # The official script's README command: ~92.5% in 25 epochs on a GPU.
    "official": {},
    # A CPU budget: over 75% test accuracy within 10 minutes of training (book/08_performance.ipynb).
    # ConvMixer-192/6 with 4x4 patches (64 tokens instead of 256), ~9x fewer MACs than 256/8 p=2: ~600 img/s,
    # about 6 minutes for 4 epochs on 2 idle Zen 4 cores (3 epochs reached 75% with one seed of three).
    # fp32 (bf16 autocast gains nothing at this width), batch 256, flips only (too few epochs for crops or
    # RandAugment to pay).
    "cpu": dict(dim=192, depth=6, patch_size=4, kernel_size=5, batch_size=256, epochs=4, lr_max=0.01,
                weight_decay=0.01, crop="none", ra_n=0, label_smoothing=0.1, clip_norm=1.0),
    # The paper's ImageNet command (locuslab/convmixer README), for `torchrun` on 10 GPUs with 64 images
    # each; --data-root must point at ImageNet.  Flags the command leaves out take the defaults of the
    # timm train.py it ran: weight decay 2e-5, label smoothing 0.1, no SyncBatchNorm.  Still different:
    # AdamW's eps (the README passes --opt-eps 1e-3; the library uses PyTorch's 1e-8).
    "imagenet": dict(dataset="imagefolder", dim=1536, depth=20, kernel_size=9, patch_size=7, n_classes=1000,
                     image_size=224, batch_size=640, epochs=150, lr_max=0.01, weight_decay=2e-5,
                     label_smoothing=0.1, sync_bn=False, crop="none", scale_min=0.08, ra_n=2, ra_m=9,
                     erase_p=0.25, mixup=0.5, cutmix=0.5, clip_norm=1.0),
    # The official script's model (ConvMixer-256/8, k=5, p=2) on a 2-core CPU in about 100 minutes:
    # 8 epochs at ~75 img/s (bf16 autocast, which Zen 4's avx512_bf16 runs natively: 86 vs 70 img/s
    # fp32 at batch 128; torch.compile measured no faster). A short schedule wants many small steps and
    # light augmentation: batch 128 (390 steps an epoch), flips and 2-pixel translations, no RandAugment,
    # and the cpu preset's lr, weight decay, label smoothing and clipping. book/06_training.ipynb.
    "cpu-paper": dict(batch_size=128, epochs=8, lr_max=0.01, weight_decay=0.01, label_smoothing=0.1,
                      clip_norm=1.0, crop="pad", padding=2, ra_n=0, precision="bf16"),
    # Seconds: a few hundred images, for smoke tests and the resume demonstration.
    "tiny": dict(dim=32, depth=2, kernel_size=3, patch_size=4, train_subset=512, test_subset=256,
                 batch_size=64, epochs=2, lr_max=0.01, crop="pad", ra_n=0),
}


def one_cycle_lr(t: float, epochs: float, lr_max: float) -> float:
    """The official piecewise-linear schedule at (fractional) epoch t.

    lr rises linearly from 0 to lr_max over the first 2/5 of training, falls to lr_max/20 at
    4/5, then to 0 at the end: np.interp(t, [0, 2E/5, 4E/5, E], [0, lr_max, lr_max/20, 0]).
    Warm-up lets AdamW's moment estimates settle before large steps; the long decay anneals.
    """
    points = [(0.0, 0.0), (0.4 * epochs, lr_max), (0.8 * epochs, lr_max / 20), (float(epochs), 0.0)]
    t = min(max(t, 0.0), float(epochs))
    for (t0, y0), (t1, y1) in zip(points, points[1:]):
        if t <= t1:
            return y0 + (y1 - y0) * (t - t0) / (t1 - t0) if t1 > t0 else y1
    return 0.0


def subset(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int):
    """A seeded random subset of n examples (all of them when n is 0)."""
    if n == 0 or n >= len(images):
        return images, labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx], labels[idx]


@torch.no_grad()
def evaluate(model: nn.Module, loader, dtype: torch.dtype | None = None, dist: "Distributed | None" = None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode).

    Under data parallelism each process evaluates its share of every batch and the sums are
    all-reduced, so every process returns the same numbers for the whole set.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)
    for x, y in loader:
        if dist is not None and not getattr(loader, "sharded", False):
            x, y = dist.shard(x), dist.shard(y)
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        sums[0] += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        sums[1] += (out.argmax(1) == y).sum()
        sums[2] += len(y)
    if dist is not None:
        dist.all_reduce(sums)
    model.train(was_training)
    loss_sum, correct, n = sums.tolist()
    return {"loss": loss_sum / n, "accuracy": correct / n}


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices, also from MixUp/CutMix's class-probability targets."""
    return y.argmax(1) if y.ndim == 2 else y


def load_model(path: str | os.PathLike, map_location="cpu") -> tuple[ConvMixer, dict]:
    """A ConvMixer built from a checkpoint's config, with its trained weights (eval mode)."""
    ckpt = load_checkpoint(path, map_location)
    model = ConvMixer(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export_model(run_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy a run's trained weights, configs and history into one small file (no optimizer state).

    The result loads with :func:`load_model` like any checkpoint but is a third of the size of
    ``last.pt`` (AdamW keeps two moments per weight), small enough to ship with the book.
    """
    ckpt = load_checkpoint(Path(run_dir) / "last.pt")
    slim = {k: ckpt[k] for k in ("format", "model_config", "train_config", "model", "epoch", "history",
                                 "hardware", "torch") if k in ckpt}
    slim["model"] = {k: v.contiguous() for k, v in slim["model"].items()}
    atomic_save(slim, dest)
    return slim


class NonFiniteLoss(RuntimeError):
    pass


def _no_buffer_sync() -> dict:
    """DDP's flag for "no buffer broadcast before each forward": synchronised BatchNorm statistics are
    already equal on every rank (``forward_sync_buffers`` in newer PyTorch, ``broadcast_buffers`` before)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def saved_precision(ckpt: dict) -> str | None:
    """The precision a checkpoint was trained in ("fp32", "bf16", "fp16"), or None when it cannot tell.

    Checkpoints written before the field existed tell by their flags, by their loss scaler (only
    fp16 runs have one) and by their hardware (a CPU's name ends in "threads"; auto meant fp32 there).
    """
    if ckpt.get("precision") in DTYPES:
        return ckpt["precision"]
    asked = ckpt.get("train_config", {}).get("precision", "auto")
    if asked != "auto":
        return asked
    if ckpt.get("scaler"):
        return "fp16"
    return "fp32" if str(ckpt.get("hardware", "")).endswith("threads") else None


class Trainer:
    """One training run: model, optimizer, data, and the position in the schedule.

    ``fit()`` runs the remaining epochs; the state it needs to continue (weights, AdamW moments,
    BatchNorm statistics, epoch and step, metric history) is exactly what ``last.pt`` holds.
    """

    def __init__(self, cfg: TrainConfig, screen: bool = True, progress: str | None = None):
        self.cfg, self.screen = cfg, screen
        self.progress_mode = progress  # None: chosen in fit() from where stdout goes (convmixer.track)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_path = self.out_dir / "last.pt"
        if self.ckpt_path.exists() and not cfg.resume:
            raise FileExistsError(f"{self.ckpt_path} already exists; pass --resume to continue that run, "
                                  f"or choose another --out-dir (nothing was overwritten)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if resolve_device(cfg.device).type == "cpu":
            keep_freed_memory()
        self.dist = Distributed()
        self.device = self.dist.device(cfg.device)
        self.dist.init(self.device)
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {self.dist.world} processes")
        self.precision = choose_precision(cfg.precision, self.device)
        self.dtype = DTYPES[self.precision]
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: time cuDNN's algorithms once, keep the fastest
            if self.precision == "bf16" and not native_bf16(self.device) and self.dist.is_main:
                print(f"note: {hardware_name(self.device)} has no native bf16 (compute capability below 8.0): "
                      f"--precision bf16 runs slow fallback kernels; --precision auto picks fp16", file=sys.stderr)
        seed_everything(cfg.seed)
        self.model = ConvMixer(**cfg.model_config().to_dict()).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.step_model = self.model
        if self.dist.enabled:
            sync_bn = cfg.sync_bn and self.device.type == "cuda"
            if sync_bn:
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.step_model = nn.parallel.DistributedDataParallel(self.model, **_no_buffer_sync() if sync_bn else {})
        if cfg.compile:
            self.step_model = torch.compile(self.step_model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr_max, weight_decay=cfg.weight_decay,
                                           fused=use_fused_adamw(self.device) or None)

        self.train_loader, self.test_loader = self._loaders()
        self.epoch, self.step, self.history = 0, 0, []
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if cfg.resume:
            # Onto the CPU: load_state_dict moves weights and moments to the device, and leaves AdamW's
            # step counters where the optimizer keeps them (a GPU copy would be read back every step).
            # Under torchrun rank 0 reads the file and sends it to the others.
            ckpt = self.dist.from_main(lambda: load_checkpoint(self.ckpt_path, "cpu")
                                       if self.ckpt_path.exists() else None)
            if ckpt is not None:
                self._restore(ckpt)
            elif self.dist.is_main:
                print(f"note: --resume found no {self.ckpt_path}; starting a new run there", file=sys.stderr)

    def _loaders(self):
        cfg = self.cfg
        if cfg.dataset == "imagefolder":
            from .imagenet import imagefolder_loaders

            train, test, classes = imagefolder_loaders(
                cfg.data_root, cfg.batch_size, device=self.device, image_size=cfg.image_size, workers=cfg.workers,
                seed=cfg.seed, ra_n=cfg.ra_n, ra_m=cfg.ra_m, erase_p=cfg.erase_p, scale_min=cfg.scale_min, mixup=cfg.mixup, cutmix=cfg.cutmix,
                world=self.dist.world, rank=self.dist.rank, channels_last=cfg.channels_last)
            if len(classes) != cfg.n_classes:
                raise ValueError(f"{cfg.data_root} holds {len(classes)} classes; pass --n-classes {len(classes)}")
        else:
            root = cfg.data_root or None
            with self.dist.main_first():  # one download and one cache file, by rank 0, on a first run
                xtr, ytr = subset(*load_cifar10("train", root), cfg.train_subset, cfg.seed)
                xte, yte = subset(*load_cifar10("test", root), cfg.test_subset, cfg.seed)
            train = BatchLoader(xtr, ytr, cfg.batch_size, train=True, augment=cfg.augment(),
                                device=self.device, seed=cfg.seed, channels_last=cfg.channels_last)
            test = BatchLoader(xte, yte, max(cfg.batch_size, 500), train=False, device=self.device,
                               channels_last=cfg.channels_last)
        if len(train) == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set")
        return train, test

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": FORMAT,
            "model_config": self.cfg.model_config().to_dict(),
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "precision": self.precision,
            "epoch": self.epoch,
            "step": self.step,
            "partial": dict(self.partial),
            "history": list(self.history),
            "hardware": hardware_name(self.device),
            "torch": str(torch.__version__),
        }

    def save(self) -> None:
        """Write last.pt, history.json and config.json, each atomically (rank 0 only)."""
        if not self.dist.is_main:
            return
        atomic_save(self.state(), self.ckpt_path)
        atomic_save_json(self.history, self.out_dir / "history.json")
        atomic_save_json({"train": self.cfg.to_dict(), "model": self.cfg.model_config().to_dict(),
                          "hardware": hardware_name(self.device), "torch": str(torch.__version__)},
                         self.out_dir / "config.json")

    def _restore(self, ckpt: dict) -> None:
        check_architecture(ckpt, self.cfg.model_config().to_dict(), self.ckpt_path)
        # A field added after the checkpoint was written had its default's behaviour then.
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        saved = {k: v for k, v in {**defaults, **ckpt["train_config"]}.items() if k not in RUNTIME_FIELDS}
        now = {k: v for k, v in self.cfg.to_dict().items() if k not in RUNTIME_FIELDS}
        if saved.pop("epochs") != now.pop("epochs"):
            print(f"note: resuming a {ckpt['train_config']['epochs']}-epoch run as a {self.cfg.epochs}-epoch run; "
                  f"the learning-rate schedule is stretched from here on", file=sys.stderr)
        diffs = config_differences(saved, now)
        if diffs:
            raise CheckpointError(f"{self.ckpt_path} was trained with other settings: " + "; ".join(diffs)
                                  + ". Resume with the same flags, or start a new run in another --out-dir.")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        saved = saved_precision(ckpt)
        if saved is not None and saved != self.precision and self.dist.is_main:
            how = ("--precision auto means " + self.precision + f" on {hardware_name(self.device)}"
                   if self.cfg.precision == "auto" else f"--precision {self.cfg.precision}")
            print(f"note: {self.ckpt_path} was trained in {saved}; it continues in {self.precision} ({how})"
                  + (", with a fresh loss scale" if self.precision == "fp16" else "")
                  + f". Pass --precision {saved} to keep {saved}.", file=sys.stderr)
        if ckpt.get("scaler") and self.scaler.is_enabled():  # an fp16 run's scale; empty from bf16/fp32 runs
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.partial, self.history = dict(ckpt["partial"]), list(ckpt["history"])

    # -- training ----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.step_model(x)
            loss = self.criterion(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), (out.argmax(1) == hard_labels(y)).sum()

    def fit(self) -> list[dict]:
        """Train the remaining epochs; returns the history (one dict per epoch).

        Ctrl-C (SIGINT) or SIGTERM asks the run to stop after the current step (under torchrun:
        every process at the same step, the next log point): the checkpoint then describes exactly
        the steps taken, so ``--resume`` continues as if never stopped.  A second signal stops at once.

        Progress goes to stdout as :func:`convmixer.track.display_mode` finds it: labml's live
        display in a terminal, a block updated in place in a notebook, plain lines otherwise.
        """
        from .track import Progress, display_mode

        cfg, n_steps = self.cfg, len(self.train_loader)
        mode = "off" if not (self.screen and self.dist.is_main) else self.progress_mode or display_mode()
        self.progress = progress = Progress(mode, self.out_dir / "logs", cfg.to_dict(), track=self.dist.is_main)
        self._stop, self._stop_time = None, 0.0
        handlers = self._install_signal_handlers()
        try:
            with progress:
                progress.start(self.describe())
                for done, epoch in enumerate(progress.epochs(range(self.epoch, cfg.epochs)), 1):
                    self.epoch = epoch
                    self._train_epoch(epoch, n_steps, progress)
                    progress.epoch_done(self._end_epoch(epoch), cfg.epochs, done)
        except KeyboardInterrupt:
            if self._stop == "abort":  # a second signal may land mid-step: keep the last consistent file
                print(f"\nStopped at once; {self.ckpt_path} holds the state of its last save. "
                      f"Continue with the same flags plus --resume.", file=sys.stderr)
                raise
            self.save()
            if self.dist.is_main:
                print(f"\nInterrupted at epoch {self.epoch}, step {self.step}/{n_steps}; saved {self.ckpt_path}. "
                      f"Continue with the same flags plus --resume.", file=sys.stderr)
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return self.history

    def _install_signal_handlers(self) -> dict:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled in the main thread

        def request_stop(signum, frame):
            if self._stop is not None:
                # torchrun passes a terminal's Ctrl-C on to its workers as SIGTERM: under torchrun a
                # second signal within a few seconds is the same request, not a second one.
                if self.dist.enabled and time.monotonic() - self._stop_time < 5:
                    return
                self._stop = "abort"
                raise KeyboardInterrupt(f"signal {signum}")
            self._stop, self._stop_time = signum, time.monotonic()

        return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def describe(self) -> str:
        """The line a run starts with: model, parameters, device and precision, epochs, run folder."""
        cfg = self.cfg
        return (f"ConvMixer-{cfg.dim}/{cfg.depth} (k={cfg.kernel_size}, p={cfg.patch_size}), "
                f"{self.model.num_parameters():,} parameters, on {hardware_name(self.device)}"
                f"{f' x {self.dist.world} processes' if self.dist.enabled else ''}, {self.precision}; "
                f"epochs {self.epoch}..{cfg.epochs}, writing to {cfg.out_dir}")

    def _train_epoch(self, epoch: int, n_steps: int, progress) -> None:
        """One epoch's steps.  Nothing here waits for the device between log points: the loss,
        hits and first non-finite step stay on the device until ``_log_point``."""
        self.model.train()
        self.train_loader.set_epoch(epoch)
        self._acc = self._zero_accumulators()
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        skip = self.step
        for i, (x, y) in progress.steps(self.train_loader):
            if i < skip:  # resuming mid-epoch: the same batches, already trained on
                continue
            lr = one_cycle_lr(epoch + (i + 1) / n_steps, self.cfg.epochs, self.cfg.lr_max)
            if not getattr(self.train_loader, "sharded", False):
                x, y = self.dist.shard(x), self.dist.shard(y)
            loss, hits = self.train_step(x, y, lr)
            # No host sync per step: remember the first non-finite step on the device.
            step_id = torch.full_like(first_bad, epoch * n_steps + i)
            first_bad = torch.where(~torch.isfinite(loss) & (first_bad < 0), step_id, first_bad)
            self._acc["loss_sum"] += loss * len(y)
            self._acc["correct"] += hits
            self._acc["seen"] += len(y)
            self.step = i + 1
            # One process stops as soon as it is asked; processes of a launch agree at log points.
            stop_here = self._stop is not None and not self.dist.enabled
            if self.step % self.cfg.log_every == 0 or self.step == n_steps or stop_here:
                stop = self._log_point(first_bad, n_steps)
                progress.step(epoch, self.cfg.epochs, self.step, n_steps,
                              self.partial["loss_sum"] / max(self.partial["seen"], 1))
                if stop:
                    raise KeyboardInterrupt(f"signal {self._stop}")

    def _zero_accumulators(self) -> dict:
        return {"loss_sum": torch.zeros((), device=self.device),
                "correct": torch.zeros((), dtype=torch.long, device=self.device),
                "seen": 0, "start": time.perf_counter()}

    def _flush(self) -> None:
        """Move the on-device running sums into ``self.partial`` (one host sync)."""
        acc, p = self._acc, self.partial
        sums = torch.stack([acc["loss_sum"].double(), acc["correct"].double(),
                            torch.tensor(float(acc["seen"]), dtype=torch.float64, device=self.device)])
        loss_sum, correct, seen = self.dist.all_reduce(sums).tolist()  # the whole global batch
        p["loss_sum"] += loss_sum
        p["correct"] += int(correct)
        p["seen"] += int(seen)
        p["seconds"] += time.perf_counter() - acc["start"]
        self._acc = self._zero_accumulators()

    def _log_point(self, first_bad: torch.Tensor, n_steps: int) -> bool:
        """Check the loss, move the running sums to the host, and say whether to stop (all ranks agree)."""
        self._check_finite(first_bad, n_steps)
        self._flush()
        return self._stop is not None

    def _check_finite(self, first_bad: torch.Tensor, n_steps: int) -> None:
        if self.dist.enabled:  # every process must stop together, for a bad loss or a stop signal
            flags = torch.stack([first_bad, torch.tensor(int(self._stop is not None), device=self.device)])
            self.dist.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            first_bad = flags[0]
            if flags[1] and self._stop is None:  # another process was asked to stop
                self._stop = "from another process"
        bad = int(first_bad)
        if bad >= 0:
            raise NonFiniteLoss(
                f"the loss became non-finite at step {bad} (epoch {bad // n_steps}, batch {bad % n_steps}); "
                f"training stopped and {self.ckpt_path} still holds the last good epoch. "
                f"Lower --lr-max, set --clip-norm, or use --precision fp32.")

    def _end_epoch(self, epoch: int) -> dict:
        if not all(torch.isfinite(t).all() for t in self.model.state_dict().values() if t.is_floating_point()):
            raise NonFiniteLoss(f"the weights became non-finite during epoch {epoch}; {self.ckpt_path} still "
                                f"holds the last good epoch. Lower --lr-max or set --clip-norm.")
        p = self.partial
        test = evaluate(self.model, self.test_loader, self.dtype, self.dist)
        record = {
            "epoch": epoch + 1,
            "lr": one_cycle_lr(epoch + 1, self.cfg.epochs, self.cfg.lr_max),
            "train_loss": p["loss_sum"] / p["seen"],
            "train_accuracy": p["correct"] / p["seen"],
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "epoch_seconds": p["seconds"],
            "images_per_second": p["seen"] / max(p["seconds"], 1e-9),
            "elapsed_seconds": (self.history[-1]["elapsed_seconds"] if self.history else 0.0) + p["seconds"],
        }
        self.history.append(record)
        self.epoch, self.step = epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.save()
        return record


def train(cfg: TrainConfig | None = None, screen: bool = True, **overrides) -> list[dict]:
    """Run (or resume) a training run and return its history: ``train(preset_config("tiny"), epochs=3)``.

    ``screen=False`` shows nothing; otherwise progress suits the place it is shown (see ``Trainer.fit``).
    """
    cfg = dataclasses.replace(cfg or TrainConfig(), **overrides)
    try:
        return Trainer(cfg, screen=screen).fit()
    finally:
        shutdown_distributed()


def preset_config(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


# -- command line ----------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m convmixer.train", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="official",
                        help="starting values; any flag below overrides them")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": f.metadata["help"]}
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            py_type = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=py_type, choices=f.metadata.get("choices"), **kw)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**PRESETS[preset])
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    try:
        return TrainConfig(**args)
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    try:
        trainer = Trainer(cfg)
        history = trainer.fit()
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLoss) as e:
        print(f"python -m convmixer.train: error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if history and trainer.progress.mode == "terminal":  # labml's display ends without a summary
        last = history[-1]
        print(f"\nepoch {last['epoch']}: test accuracy {last['test_accuracy']:.4f}, "
              f"{last['elapsed_seconds']:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
