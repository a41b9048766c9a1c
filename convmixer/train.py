"""Train ConvMixer on CIFAR-10: the official recipe, on an on-device data pipeline.

The official CIFAR-10 script's recipe (its README's command for ~92.5% in 25 epochs):
ConvMixer-256/8 with k = 5, p = 2; AdamW (lr_max 0.05, weight decay 0.005), batch 512;
a per-iteration piecewise-linear "one-cycle" learning rate; RandAugment(n=2, m=12) and
horizontal flips; mixed precision.  ``TrainConfig()`` holds exactly that; the recipes of
:data:`convmixer.config.RECIPES` (``--preset NAME``) add budgets that finish in minutes on a CPU.

This file is the training path, top to bottom: the learning-rate schedule (:func:`one_cycle_lr`),
the run's data (:func:`build_loaders`), evaluation (:func:`evaluate`), then the loop
(:meth:`Trainer.fit`: batch, learning rate, forward, loss, backward, step, then at each epoch's end
evaluation and checkpoint) and its command line.  The settings live in :mod:`convmixer.config`,
checkpoints and the resume rules in :mod:`convmixer.checkpoint`, device and processes in
:mod:`convmixer.runtime`.

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

import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .checkpoint import FORMAT, CheckpointError, atomic_save, atomic_save_json, check_resume, load_checkpoint
from .config import TrainConfig, parse_config, recipe_config
from .data import BatchLoader, load_cifar10
from .model import ConvMixer
from .runtime import (DTYPES, Distributed, StopSignals, choose_precision, hardware_name, keep_freed_memory,
                      native_bf16, seed_everything, shutdown_distributed, use_fused_adamw)


# -- the learning-rate schedule -------------------------------------------------------------------
# The trainer sets each step's learning rate from one_cycle_lr itself instead of wrapping it in
# torch.optim.lr_scheduler.LambdaLR: a LambdaLR multiplies the optimizer's base rate by a factor, and
# lr_max * (one_cycle_lr(...) / lr_max) differs from one_cycle_lr(...) in the last bit for about one step
# in ten (tests/test_train.py checks this), so saved checkpoints and histories would no longer be
# reproduced bit for bit; a scheduler would also add state to every checkpoint that the position in the
# schedule (epoch, step) already determines.
def one_cycle_lr(t: float, epochs: float, lr_max: float) -> float:
    """The official piecewise-linear schedule at (fractional) epoch t.

    lr rises linearly from 0 to lr_max over the first 2/5 of training, falls to lr_max/20 at
    4/5, then to 0 at the end: np.interp(t, [0, 2E/5, 4E/5, E], [0, lr_max, lr_max/20, 0]).
    Warm-up lets AdamW's moment estimates settle before large steps; the long decay anneals.
    The trainer calls it after each step's batch with t = epoch + (step + 1) / steps_per_epoch.
    """
    points = [(0.0, 0.0), (0.4 * epochs, lr_max), (0.8 * epochs, lr_max / 20), (float(epochs), 0.0)]
    t = min(max(t, 0.0), float(epochs))
    for (t0, y0), (t1, y1) in zip(points, points[1:]):
        if t <= t1:
            return y0 + (y1 - y0) * (t - t0) / (t1 - t0) if t1 > t0 else y1
    return 0.0


# -- the run's data ---------------------------------------------------------------------------------
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
    if cfg.dataset == "imagefolder":  # TrainConfig has refused the crops and flips this loader cannot do
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


def optimizer_groups(model: nn.Module, cfg: TrainConfig):
    """What AdamW optimises: all parameters at ``cfg.weight_decay``, or, with ``cfg.wd_exempt_1d``, two groups,
    the 1-D parameters (every bias and every norm's weight) without weight decay and the rest with it.

    The second is timm's optimizer factory (``param_groups_weight_decay``, which the paper's ImageNet
    runs used whenever a weight decay was set): those few parameters set the scales and offsets of
    outputs, where pulling them towards zero does not regularise as it does for filters and matrices.
    """
    if not cfg.wd_exempt_1d:
        return model.parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay}]


# -- evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, loader, dtype: torch.dtype | None = None, dist: Distributed | None = None,
             shard: bool = True) -> dict:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode), under autocast to ``dtype``.

    Under data parallelism (``dist``) each process evaluates its share of every batch and the sums are
    all-reduced, so every process returns the same numbers for the whole set.  ``shard=True`` when
    every process's loader yields the whole batch (the in-memory CIFAR-10 loader: each keeps its
    share); ``shard=False`` when it already yields only this process's share (the folder loader's
    ``DistributedSampler``).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)
    for x, y in loader:
        if dist is not None and shard:
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


# -- the loop -----------------------------------------------------------------------------------------


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became inf or NaN; the run folder still holds the last good epoch."""


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices, also from MixUp/CutMix's class-probability targets."""
    return y.argmax(1) if y.ndim == 2 else y


class EpochSums:
    """The current epoch's training loss, correct predictions, images and seconds, for its history record.

    Each step adds to sums on the device (:meth:`add`, no host synchronisation); at a log point
    :meth:`collect` moves them, summed over the processes, into the host totals ``done``.  A checkpoint
    stores ``done`` (as "partial"), so a run resumed mid-epoch still reports its whole epoch.
    """

    def __init__(self, device: torch.device, dist: Distributed, done: dict | None = None):
        self.device, self.dist = device, dist
        self.done = dict(done or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0})
        self.restart()

    def restart(self) -> None:
        """Empty the device sums and start the clock (at the start of an epoch's steps, and after collecting)."""
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.seen, self.start = 0, time.perf_counter()

    def add(self, loss: torch.Tensor, hits: torch.Tensor, n: int) -> None:
        self.loss_sum += loss * n
        self.correct += hits
        self.seen += n

    def collect(self) -> None:
        sums = torch.stack([self.loss_sum.double(), self.correct.double(),
                            torch.tensor(float(self.seen), dtype=torch.float64, device=self.device)])
        loss_sum, correct, seen = self.dist.all_reduce(sums).tolist()  # one host sync: the whole global batch
        self.done["loss_sum"] += loss_sum
        self.done["correct"] += int(correct)
        self.done["seen"] += int(seen)
        self.done["seconds"] += time.perf_counter() - self.start
        self.restart()

    def mean_loss(self) -> float:
        return self.done["loss_sum"] / max(self.done["seen"], 1)


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
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"--out-dir {cfg.out_dir} is a file, not a folder; choose a folder for the run "
                             f"(it is created if missing)")
        if self.ckpt_path.exists() and not cfg.resume:
            raise FileExistsError(f"{self.ckpt_path} already exists; pass --resume to continue that run, "
                                  f"or choose another --out-dir (nothing was overwritten)")
        # Where and how it runs: threads, device, processes, precision.
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
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
        # The model, and the module each training step calls: the model itself, or the same weights
        # wrapped by DistributedDataParallel and/or torch.compile.  Checkpoints and evaluation use the model.
        seed_everything(cfg.seed)
        self.model = ConvMixer(**cfg.model_config().to_dict()).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model, self.wrapped_model = self.dist.wrap(self.model, self.device, cfg.sync_bn, cfg.compile)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.optimizer = torch.optim.AdamW(optimizer_groups(self.model, cfg), lr=cfg.lr_max,
                                           weight_decay=cfg.weight_decay, fused=use_fused_adamw(self.device) or None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        # The data, and the position in the schedule (a resume moves it).
        self.train_loader, self.test_loader = build_loaders(cfg, self.device, self.dist)
        self.shard_batches = cfg.dataset == "cifar10"  # every process gets the global batch and keeps its share
        self.epoch, self.step, self.history = 0, 0, []
        self.sums = EpochSums(self.device, self.dist)
        if cfg.resume:
            self._resume()

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        """What ``last.pt`` holds: configs, weights, optimizer and loss scaler, and the position in the schedule."""
        return {"format": FORMAT, "model_config": self.cfg.model_config().to_dict(), "train_config": self.cfg.to_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "precision": self.precision,
                "epoch": self.epoch, "step": self.step, "partial": dict(self.sums.done), "history": list(self.history),
                "hardware": hardware_name(self.device), "torch": str(torch.__version__)}

    def save(self) -> None:
        """Write last.pt, history.json and config.json, each atomically (rank 0 only)."""
        if not self.dist.is_main:
            return
        atomic_save(self.state(), self.ckpt_path)
        atomic_save_json(self.history, self.out_dir / "history.json")
        atomic_save_json({"train": self.cfg.to_dict(), "model": self.cfg.model_config().to_dict(),
                          "hardware": hardware_name(self.device), "torch": str(torch.__version__)},
                         self.out_dir / "config.json")

    def _resume(self) -> None:
        """Continue from ``last.pt``: what may change is :func:`convmixer.checkpoint.check_resume`'s rule."""
        # Onto the CPU: load_state_dict moves weights and moments to the device, and leaves AdamW's
        # step counters where the optimizer keeps them (a GPU copy would be read back every step).
        # Under torchrun rank 0 reads the file and sends it to the others.
        ckpt = self.dist.from_main(lambda: load_checkpoint(self.ckpt_path, "cpu") if self.ckpt_path.exists() else None)
        if ckpt is None:
            if self.dist.is_main:
                print(f"note: --resume found no {self.ckpt_path}; starting a new run there", file=sys.stderr)
            return
        notes = check_resume(ckpt, self.cfg, self.ckpt_path, self.precision, hardware_name(self.device))
        for note in notes if self.dist.is_main else ():
            print(f"note: {note}", file=sys.stderr)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.scaler.is_enabled():  # an fp16 run's scale; empty from bf16/fp32 runs
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
        self.sums = EpochSums(self.device, self.dist, ckpt["partial"])

    # -- training ----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float):
        """One optimizer step on batch (x, y): forward, loss, backward, (clip), step.  Returns the loss
        and the number of correct predictions, both still on the device."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.wrapped_model(x)
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
        Nothing between two log points waits for the device: the loss sums and the first non-finite
        step stay there until :meth:`_log_point`.

        Progress goes to stdout as :func:`convmixer.track.display_mode` finds it: labml's live
        display in a terminal, a block updated in place in a notebook, plain lines otherwise.
        Only rank 0 shows progress and tracks the run with labml.
        """
        from .track import Progress, display_mode

        cfg, n_steps = self.cfg, len(self.train_loader)
        mode = "off" if not (self.screen and self.dist.is_main) else self.progress_mode or display_mode()
        self.progress = progress = Progress(mode, self.out_dir / "logs", cfg.to_dict(), track=self.dist.is_main)
        self.stop = StopSignals(together=self.dist.enabled)
        try:
            with self.stop, progress:
                progress.start(self.describe())
                for done, epoch in enumerate(progress.epochs(range(self.epoch, cfg.epochs)), 1):
                    self.epoch, skip = epoch, self.step  # resuming mid-epoch: its first `skip` batches are done
                    self.model.train()
                    self.train_loader.set_epoch(epoch)
                    self.sums.restart()
                    first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
                    for i, (x, y) in progress.steps(self.train_loader):
                        if i < skip:  # the same batches, already trained on
                            continue
                        lr = one_cycle_lr(epoch + (i + 1) / n_steps, cfg.epochs, cfg.lr_max)
                        if self.shard_batches:
                            x, y = self.dist.shard(x), self.dist.shard(y)
                        loss, hits = self.train_step(x, y, lr)
                        # No host sync per step: remember the first non-finite step on the device.
                        step_id = torch.full_like(first_bad, epoch * n_steps + i)
                        first_bad = torch.where(~torch.isfinite(loss) & (first_bad < 0), step_id, first_bad)
                        self.sums.add(loss, hits, len(y))
                        self.step = i + 1
                        # One process stops as soon as it is asked; the processes of a launch agree at log points.
                        stop_here = self.stop.reason is not None and not self.dist.enabled
                        if self.step % cfg.log_every == 0 or self.step == n_steps or stop_here:
                            stop = self._log_point(first_bad, n_steps)
                            progress.step(epoch, cfg.epochs, self.step, n_steps, self.sums.mean_loss())
                            if stop:
                                raise KeyboardInterrupt(f"signal {self.stop.reason}")
                    progress.epoch_done(self._end_epoch(epoch), cfg.epochs, done)
        except KeyboardInterrupt:
            if self.stop.abort:  # a second signal may land mid-step: keep the last consistent file
                print(f"\nStopped at once; {self.ckpt_path} holds the state of its last save. "
                      f"Continue with the same flags plus --resume.", file=sys.stderr)
                raise
            self.save()
            if self.dist.is_main:
                print(f"\nInterrupted at epoch {self.epoch}, step {self.step}/{n_steps}; saved {self.ckpt_path}. "
                      f"Continue with the same flags plus --resume.", file=sys.stderr)
            raise
        finally:
            self.dist.close()  # the run is over: leave the process group this trainer joined
        return self.history

    def _log_point(self, first_bad: torch.Tensor, n_steps: int) -> bool:
        """The one host synchronisation between epoch ends: stop on a non-finite loss, collect the loss
        sums, and say whether to stop for a signal (every process of a launch gives the same answers)."""
        if self.dist.enabled:  # every process must stop together, for a bad loss or a stop signal
            flags = torch.stack([first_bad, torch.tensor(int(self.stop.reason is not None), device=self.device)])
            self.dist.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            first_bad = flags[0]
            if flags[1] and self.stop.reason is None:
                self.stop.reason = "from another process"
        bad = int(first_bad)
        if bad >= 0:
            raise NonFiniteLoss(
                f"the loss became non-finite at step {bad} (epoch {bad // n_steps}, batch {bad % n_steps}); "
                f"training stopped and {self.ckpt_path} still holds the last good epoch. "
                f"Lower --lr-max, set --clip-norm, or use --precision fp32.")
        self.sums.collect()
        return self.stop.reason is not None

    def _end_epoch(self, epoch: int) -> dict:
        """After an epoch's last step: check the weights, evaluate, append the history record, save."""
        if not all(torch.isfinite(t).all() for t in self.model.state_dict().values() if t.is_floating_point()):
            raise NonFiniteLoss(f"the weights became non-finite during epoch {epoch}; {self.ckpt_path} still "
                                f"holds the last good epoch. Lower --lr-max or set --clip-norm.")
        done = self.sums.done
        test = evaluate(self.model, self.test_loader, self.dtype, self.dist, shard=self.shard_batches)
        record = {
            "epoch": epoch + 1,
            "lr": one_cycle_lr(epoch + 1, self.cfg.epochs, self.cfg.lr_max),
            "train_loss": done["loss_sum"] / done["seen"],
            "train_accuracy": done["correct"] / done["seen"],
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "epoch_seconds": done["seconds"],
            "images_per_second": done["seen"] / max(done["seconds"], 1e-9),
            "elapsed_seconds": (self.history[-1]["elapsed_seconds"] if self.history else 0.0) + done["seconds"],
        }
        self.history.append(record)
        self.epoch, self.step = epoch + 1, 0
        self.sums = EpochSums(self.device, self.dist)
        self.save()
        return record

    def describe(self) -> str:
        """The line a run starts with: model, parameters, device and precision, epochs, run folder."""
        cfg = self.cfg
        return (f"ConvMixer-{cfg.dim}/{cfg.depth} (k={cfg.kernel_size}, p={cfg.patch_size}), "
                f"{self.model.num_parameters():,} parameters, on {hardware_name(self.device)}"
                f"{f' x {self.dist.world} processes' if self.dist.enabled else ''}, {self.precision}; "
                f"epochs {self.epoch}..{cfg.epochs}, writing to {cfg.out_dir}")


def train(cfg: TrainConfig | None = None, screen: bool = True, **overrides) -> list[dict]:
    """Run (or resume) a training run and return its history: ``train(recipe_config("tiny"), epochs=3)``.

    ``screen=False`` shows nothing; otherwise progress suits the place it is shown (see ``Trainer.fit``).
    """
    cfg = dataclasses.replace(cfg or TrainConfig(), **overrides)
    try:
        return Trainer(cfg, screen=screen).fit()
    finally:
        shutdown_distributed()  # also when Trainer() failed after joining the process group


def main(argv: list[str] | None = None) -> int:
    """``python -m convmixer.train``: this process is the run's own, so on a CPU it also tells glibc to
    keep freed memory (:func:`convmixer.runtime.keep_freed_memory`: large activations would otherwise be
    returned to the kernel and page-faulted back every step).  A notebook or a script that builds a
    ``Trainer`` itself decides for its own process: calling ``keep_freed_memory()`` first does the same."""
    cfg = parse_config(argv)
    if cfg.device in ("cpu", "auto") and not torch.cuda.is_available():
        keep_freed_memory()
    try:
        trainer = Trainer(cfg)
        history = trainer.fit()
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLoss) as e:
        print(f"python -m convmixer.train: error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()  # also when Trainer() failed after joining the process group
    if history and trainer.progress.mode == "terminal":  # labml's display ends without a summary
        last = history[-1]
        print(f"\nepoch {last['epoch']}: test accuracy {last['test_accuracy']:.4f}, "
              f"{last['elapsed_seconds']:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
