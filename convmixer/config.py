"""What a training run is: its settings (:class:`TrainConfig`), the named recipes, and the command line.

``TrainConfig()`` is the official CIFAR-10 script's recipe (its README's command for ~92.5% in 25
epochs): ConvMixer-256/8 with k = 5, p = 2; AdamW (lr_max 0.05, weight decay 0.005), batch 512; the
one-cycle learning rate; RandAugment(n=2, m=12) and horizontal flips; mixed precision.  :data:`RECIPES`
adds budgets that finish in minutes on a CPU and the paper's ImageNet command; the command line's
``--preset`` picks one of them.

Each setting is declared once: the architecture's in :class:`convmixer.model.ConvMixerConfig`,
the augmentation's in :class:`convmixer.augment.Augment`, the rest here; ``TrainConfig`` inherits the
first two, and :func:`parse_config` turns every field into one command-line flag.  What a resumed run
may change is :func:`convmixer.checkpoint.check_resume`'s rule.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields

from .augment import Augment
from .model import ConvMixerConfig, check_choice
from .runtime import PRECISIONS

DESCRIPTION = "Train ConvMixer on CIFAR-10: the official recipe, on an on-device data pipeline."


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig(ConvMixerConfig, Augment):
    """Every knob of a run.  The defaults are the official CIFAR-10 recipe.

    The model's fields (``dim``, ``depth``, ``kernel_size``, ``patch_size``, ``n_classes``,
    ``in_channels``, ``activation``, ``residual``, ``norm``) come from :class:`ConvMixerConfig` and the
    augmentation's (``crop``, ``padding``, ``scale_min``, ``flip``, ``ra_n``, ``ra_m``, ``erase_p``)
    from :class:`Augment`; the ones below are training's own.  Frozen: a run's settings do not
    change under it (``dataclasses.replace`` makes a changed copy).
    """

    # data
    dataset: str = _opt("cifar10", "cifar10 (in memory, on the device) or imagefolder (streamed: "
                        "DATA_ROOT/train/<class>/*, DATA_ROOT/val/<class>/*)", choices=("cifar10", "imagefolder"))
    data_root: str = _opt("", "data folder (CIFAR-10 default: $CONVMIXER_DATA, else ~/.cache/convmixer/data)")
    image_size: int = _opt(224, "crop size for --dataset imagefolder")
    workers: int = _opt(8, "DataLoader worker processes for --dataset imagefolder")
    train_subset: int = _opt(0, "train on a random subset of this many images (0: all 50,000)")
    test_subset: int = _opt(0, "evaluate on a random subset of this many test images (0: all 10,000)")
    batch_size: int = _opt(512, "batch size")
    # augmentation beyond Augment's
    mixup: float = _opt(0.0, "MixUp alpha, --dataset imagefolder only (the paper's ImageNet runs: 0.5)")
    cutmix: float = _opt(0.0, "CutMix alpha, --dataset imagefolder only (the paper's ImageNet runs: 0.5)")
    # optimisation
    epochs: int = _opt(25, "epochs")
    lr_max: float = _opt(0.05, "peak learning rate of the one-cycle schedule")
    weight_decay: float = _opt(0.005, "AdamW weight decay")
    wd_exempt_1d: bool = _opt(False, "no weight decay on 1-D parameters (biases, BatchNorm/LayerNorm weights), "
                              "as timm's optimizer factory does; the paper's ImageNet runs: on")
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
        ConvMixerConfig.__post_init__(self)  # the architecture's checks
        Augment.__post_init__(self)  # the augmentation's checks
        for f in fields(TrainConfig):
            if "choices" in f.metadata:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
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
        if self.dataset == "imagefolder":
            if not self.data_root:
                raise ValueError("--dataset imagefolder needs --data-root, a folder with train/<class>/ and val/<class>/")
            # Its loader (convmixer.imagenet) always crops with RandomResizedCrop and always flips:
            # refuse settings it would silently ignore.
            if self.crop != "resized":
                raise ValueError(f"--dataset imagefolder always crops with RandomResizedCrop (crop='resized', area "
                                 f"from scale_min), got crop={self.crop!r}; pass --crop resized or use --preset imagenet")
            if not self.flip:
                raise ValueError("--dataset imagefolder always flips images horizontally; flip=False (--no-flip) "
                                 "would be ignored: leave it out")
        elif self.in_channels != 3:
            raise ValueError(f"CIFAR-10 images have 3 channels, got in_channels={self.in_channels}")

    def model_config(self) -> ConvMixerConfig:
        """The architecture fields, as the config a checkpoint stores and ``ConvMixer`` is built from."""
        return ConvMixerConfig(**ConvMixerConfig.to_dict(self))

    def augment(self) -> Augment:
        """The augmentation fields, as the loader's :class:`Augment`."""
        return Augment(**Augment.to_dict(self))

    def to_dict(self) -> dict:
        """Every field (what ``config.json`` and a checkpoint's ``train_config`` hold)."""
        return dataclasses.asdict(self)


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
    # timm train.py it ran: weight decay 2e-5 with biases and norm weights exempt (timm's optimizer
    # factory), label smoothing 0.1, no SyncBatchNorm.  RandAugment is timm's own (needs timm):
    # ra_n=2, ra_m=9 is --aa rand-m9-mstd0.5-inc1, magnitude 9 of timm's 10 (convmixer.imagenet).  Still
    # different: AdamW's eps (the README passes --opt-eps 1e-3; the library uses PyTorch's 1e-8).  The
    # folder loader always crops with RandomResizedCrop (area from --scale-min) and flips: crop="resized".
    "imagenet": dict(dataset="imagefolder", dim=1536, depth=20, kernel_size=9, patch_size=7, n_classes=1000,
                     image_size=224, batch_size=640, epochs=150, lr_max=0.01, weight_decay=2e-5,
                     wd_exempt_1d=True, label_smoothing=0.1, sync_bn=False, crop="resized", scale_min=0.08,
                     ra_n=2, ra_m=9, erase_p=0.25, mixup=0.5, cutmix=0.5, clip_norm=1.0),
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
        return TrainConfig(**args)
    except ValueError as e:
        parser.error(str(e))
