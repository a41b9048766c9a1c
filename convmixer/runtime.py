"""Where and how a run executes: device, precision, optimizer kernel, seeding, and the processes of a launch.

The choices a GPU makes differently from a CPU live here, each in one function a test can call
with a stubbed device: :func:`choose_precision` (bf16 only where the hardware runs it natively),
:func:`use_fused_adamw` (no host synchronisation in the fp16 scaler's step), and
:class:`Distributed` (what every process of a ``torchrun`` launch must agree on).
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import threading
import time
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but no CUDA device is available; use --device cpu")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: a CUDA GPU of compute capability 8.0 (Ampere) or newer.

    ``torch.cuda.is_bf16_supported()`` also counts emulation, so it says yes on a T4 (7.5), V100 (7.0)
    or P100 (6.0), where cuDNN has no bf16 convolutions and autocast falls back to slow kernels.
    """
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8 and torch.cuda.is_bf16_supported(including_emulation=False)


def choose_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: "fp32", "bf16" or "fp16" ("auto" resolved for ``device``).

    auto: bf16 autocast on a GPU that runs it natively (A100, H100, RTX 30xx and newer); fp16
    autocast with a loss scaler on older GPUs (T4, V100); fp32 on a CPU, where bf16 gains nothing
    at the book's widths (chapter 8).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp16"


def use_fused_adamw(device: torch.device) -> bool:
    """Fused AdamW on CUDA: one kernel for all weights, and it takes the fp16 loss scale itself.

    With any other optimizer ``GradScaler.step`` reads the inf check back to the host (``.item()``)
    every step; the fused one skips the step on the device.  It also keeps its step counters on
    the device, so a resumed run never reads them back.  On a CPU the unfused kernels stay, so CPU
    runs give the same numbers as before.
    """
    return device.type == "cuda"


def cpu_name() -> str:
    """The processor's model name ("AMD EPYC", ...), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the kernel (CPU training).

    glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` calls and
    unmaps them on free, so a training step whose activations are that large (256 x 16 x 16
    fp32 at batch 128 is exactly 32 MiB) page-faults its memory in again on every step.
    ``M_MMAP_MAX = 0`` serves every block from the heap and ``M_TRIM_THRESHOLD = 1 GiB`` stops
    the heap from shrinking: the second step reuses the first one's pages.  Measured here
    (book/08_performance): 1.7x faster fp32 steps for ConvMixer-256/8.  The price is that the
    process keeps its peak memory.  Returns False where there is no glibc.

    It changes the whole process, so nothing calls it behind a caller's back: the command line
    (``python -m convmixer.train``, whose process is the run's own) calls it on a CPU; a notebook or
    script that wants the same calls it itself.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


class Distributed:
    """This process's place in a ``torchrun`` launch (world size 1 without one).

    ``shard`` keeps this rank's contiguous 1/world slice of a batch; with equal slices the
    gradient DDP averages is exactly the gradient of the whole batch's mean loss.
    """

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.is_main = self.rank == 0
        self.owns_group = False  # whether init() made the process group (and close() destroys it)

    def init(self, device: torch.device) -> None:
        """Join the launch's process group (NCCL on GPUs, Gloo on CPUs); :meth:`close` leaves it."""
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend, device_id=device if device.type == "cuda" else None)
            self.owns_group = True

    def close(self) -> None:
        """Destroy the process group if :meth:`init` made it (a caller's own group is left alone)."""
        if self.owns_group:
            shutdown_distributed()
            self.owns_group = False

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # also for one process on cuda:N: kernels and NCCL go there
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device, sync_bn: bool = False, compile: bool = False):
        """(model, the module a training step calls): the same weights, under torchrun wrapped in
        DistributedDataParallel (BatchNorm made SyncBatchNorm first if ``sync_bn``, on GPUs only), and
        compiled if ``compile``.  Checkpoints and evaluation use the first, unwrapped one."""
        wrapped = model
        if self.enabled:
            sync_bn = sync_bn and device.type == "cuda"
            if sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            wrapped = torch.nn.parallel.DistributedDataParallel(model, **no_buffer_sync() if sync_bn else {})
        if compile:
            wrapped = torch.compile(wrapped)
        return model, wrapped

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        n = len(t) // self.world
        if n * self.world != len(t):  # the last test batch: share it unevenly but completely
            return t.tensor_split(self.world)[self.rank]
        return t[self.rank * n:(self.rank + 1) * n]

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=op or torch.distributed.ReduceOp.SUM)
        return t

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (a first download, a cache to write); the others then read its result."""
        if self.enabled and not self.is_main:
            torch.distributed.barrier()
        yield
        if self.enabled and self.is_main:
            torch.distributed.barrier()

    def from_main(self, read):
        """``read()`` on rank 0, sent to every rank (an exception there is raised everywhere).

        On several machines only rank 0's disk need hold the run folder: the others get its
        checkpoint over the network instead of reading their own (missing or older) copy.
        """
        if not self.enabled:
            return read()
        box = [None]
        if self.is_main:
            try:
                box[0] = ("ok", read())
            except Exception as e:  # every rank must leave the broadcast, then raise the same error
                box[0] = ("error", e)
        torch.distributed.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value


def no_buffer_sync() -> dict:
    """DDP's flag for "no buffer broadcast before each forward": synchronised BatchNorm statistics are
    already equal on every rank (``forward_sync_buffers`` in newer PyTorch, ``broadcast_buffers`` before)."""
    import inspect

    params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def shutdown_distributed() -> None:
    """Destroy the process group, if this process made one (call it in a ``finally``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM as a request to stop at the next safe point; a second signal stops at once.

    ``with StopSignals(together) as stop:`` installs the handlers (in the main thread; signals reach
    no other) and gives the previous ones back on leaving.  ``stop.reason`` is None until a signal
    arrives, then the signal's number; the trainer also sets it when another process of the launch was
    asked to stop.  A second signal raises ``KeyboardInterrupt`` at once and sets ``stop.abort``.  Under
    ``torchrun`` (``together``) a second signal within 5 seconds is the same request: torchrun passes a
    terminal's Ctrl-C on to its workers as SIGTERM.
    """

    def __init__(self, together: bool = False):
        self.together, self.reason, self.abort = together, None, False
        self._time, self._previous = 0.0, {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _request(self, signum, frame) -> None:
        if self.reason is not None:
            if self.together and time.monotonic() - self._time < 5:
                return
            self.abort = True
            raise KeyboardInterrupt(f"signal {signum}")
        self.reason, self._time = signum, time.monotonic()
