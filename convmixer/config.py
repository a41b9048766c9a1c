"""What a training run is: its settings (:class:`TrainConfig`), the named recipes, and what a resume may change.

``TrainConfig()`` is the official CIFAR-10 script's recipe (its README's command for ~92.5% in 25
epochs): ConvMixer-256/8 with k = 5, p = 2; AdamW (lr_max 0.05, weight decay 0.005), batch 512; the
one-cycle learning rate; RandAugment(n=2, m=12) and horizontal flips; mixed precision.  :data:`RECIPES`
adds budgets that finish in minutes on a CPU and the paper's ImageNet command; the command line's
``--preset`` picks one of them.

A checkpoint stores the config it was trained with; :func:`check_resume` holds the rules for what a
resumed run may change (only :data:`RUNTIME_FIELDS`, and the number of epochs), beside the
architecture check they build on.  :func:`parse_config` reads the same settings from the command
line, one flag per field.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields

from .augment import CROPS, Augment
from .checkpoint import CheckpointError, check_architecture, config_differences
from .model import ACTIVATIONS, NORMS, RESIDUAL_NAMES, ConvMixerConfig
from .runtime import DTYPES, PRECISIONS

DESCRIPTION = "Train ConvMixer on CIFAR-10: the official recipe, on an on-device data pipeline."


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
    activation: str = _opt("gelu", "activation", choices=tuple(ACTIVATIONS))
    residual: str = _opt("spatial", "residual placement", choices=RESIDUAL_NAMES)
    norm: str = _opt("batch", "normalization", choices=NORMS)
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
        self.model_config()  # validates the architecture fields (ConvMixerConfig checks the choices)
        self.augment()  # validates the augmentation fields
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
        if self.dataset not in ("cifar10", "imagefolder"):
            raise ValueError(f"dataset must be cifar10 or imagefolder, got {self.dataset!r}")

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

#: The named training recipes (``--preset NAME`` on the command line).  Not the architectures:
#: those are :data:`convmixer.model.ARCHITECTURES`.
RECIPES: dict[str, dict] = {
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
    # AdamW's eps (the README passes --opt-eps 1e-3; the library uses PyTorch's 1e-8).  The folder
    # loader always crops with RandomResizedCrop (area from --scale-min) and flips: crop="resized" says so.
    "imagenet": dict(dataset="imagefolder", dim=1536, depth=20, kernel_size=9, patch_size=7, n_classes=1000,
                     image_size=224, batch_size=640, epochs=150, lr_max=0.01, weight_decay=2e-5,
                     label_smoothing=0.1, sync_bn=False, crop="resized", scale_min=0.08, ra_n=2, ra_m=9,
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


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The config of the recipe ``name``, with ``overrides``: ``recipe_config("tiny", epochs=3)``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **overrides})


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


def check_resume(ckpt: dict, cfg: TrainConfig, path: str | os.PathLike = "checkpoint", precision: str | None = None,
                 hardware: str = "") -> list[str]:
    """Raise :class:`CheckpointError` unless ``cfg`` may continue the run ``ckpt`` saved; return the notes to show.

    The architecture must match, and so must every setting outside :data:`RUNTIME_FIELDS`, except
    ``epochs``: a longer (or shorter) run stretches the schedule from where it stopped, with a note.
    A field added after the checkpoint was written is compared with its default, the behaviour the
    run had then.  A run that continues in another ``precision`` (what ``cfg.precision`` resolved to on
    ``hardware``) than it was trained in gets a note saying how to keep the old one.
    """
    check_architecture(ckpt, cfg.model_config().to_dict(), path)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved = {k: v for k, v in {**defaults, **ckpt["train_config"]}.items() if k not in RUNTIME_FIELDS}
    now = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    notes = []
    if saved.pop("epochs") != now.pop("epochs"):
        notes.append(f"resuming a {ckpt['train_config']['epochs']}-epoch run as a {cfg.epochs}-epoch run; "
                     f"the learning-rate schedule is stretched from here on")
    diffs = config_differences(saved, now)
    if diffs:
        raise CheckpointError(f"{path} was trained with other settings: " + "; ".join(diffs)
                              + ". Resume with the same flags, or start a new run in another --out-dir.")
    trained_in = saved_precision(ckpt)
    if precision is not None and trained_in is not None and trained_in != precision:
        how = (f"--precision auto means {precision} on {hardware}" if cfg.precision == "auto"
               else f"--precision {cfg.precision}")
        notes.append(f"{path} was trained in {trained_in}; it continues in {precision} ({how})"
                     + (", with a fresh loss scale" if precision == "fp16" else "")
                     + f". Pass --precision {trained_in} to keep {trained_in}.")
    return notes


# -- the command line: one flag per field ------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """``python -m convmixer.train``'s parser: ``--preset`` and one flag per :class:`TrainConfig` field."""
    parser = _Parser(prog="python -m convmixer.train", description=DESCRIPTION,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(RECIPES), default="official",
                        help="the training recipe to start from (config.RECIPES); any flag below overrides it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": f.metadata["help"]}
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            py_type = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=py_type, choices=f.metadata.get("choices"), **kw)
    return parser


def _imagefolder_conflicts(cfg: TrainConfig) -> str | None:
    """What ``--dataset imagefolder`` cannot do as asked: its loader always crops with RandomResizedCrop
    (area from --scale-min) and always flips, so other crops, padding and --no-flip would be ignored."""
    if cfg.dataset != "imagefolder":
        return None
    if cfg.crop != "resized":
        return (f"--dataset imagefolder always crops with RandomResizedCrop (--crop resized, area from --scale-min), "
                f"got --crop {cfg.crop}; pass --crop resized or use --preset imagenet")
    if not cfg.flip:
        return "--dataset imagefolder always flips images horizontally; --no-flip would be ignored, leave it out"
    return None


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """The config ``python -m convmixer.train ARGV`` runs: the --preset's recipe, then the flags given.

    A bad flag or value exits with one line (status 2) saying what to change.
    """
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**RECIPES[recipe])
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    try:
        cfg = TrainConfig(**args)
    except ValueError as e:
        parser.error(str(e))
    conflict = _imagefolder_conflicts(cfg)
    if conflict:
        parser.error(conflict)
    return cfg
