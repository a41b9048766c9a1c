"""The GPU paths of the trainer, rehearsed on a CPU wherever PyTorch runs them there.

bf16 and fp16 autocast (with ``torch.amp.GradScaler``), channels-last and ``torch.compile`` all run
on a CPU; so do the resumes a GPU run meets (mid-run with a loss scale, across a precision change,
from a checkpoint written before the precision was stored) and a step the scaler skips.  The
precision a T4, an A100 and a CPU get is checked with the capability query stubbed, and a
dispatch-level guard fails the run if anything between two log points waits for the device
(``.item()``, ``bool(t)``, ``nonzero`` ...), with the fused AdamW the trainer uses on CUDA.

On a GPU machine the same tests run unchanged; they pin the device to the CPU, whose results are
bit-for-bit repeatable (cuDNN's algorithm search is not).
"""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from convmixer import runtime, train as train_module
from convmixer.config import recipe_config
from convmixer.checkpoint import saved_precision
from convmixer.checkpoint import export_model, load_model
from convmixer.checkpoint import atomic_save, load_checkpoint
from convmixer.runtime import choose_precision
from convmixer.train import Trainer

from conftest import N_TEST, N_TRAIN  # the size of the synthetic data_root fixture

BATCH = 16
STEPS = N_TRAIN // BATCH


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)



def cfg(out_dir, data_root, **kw):
    base = dict(dim=8, depth=1, train_subset=0, test_subset=0, batch_size=BATCH, threads=1, epochs=1,
                device="cpu", out_dir=str(out_dir), data_root=str(data_root))
    return recipe_config("tiny", **{**base, **kw})


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# --- Which precision, which optimizer ----------------------------------------------------------

GPUS = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "H100": (9, 0)}


@pytest.mark.parametrize("gpu, expected", [("T4", "fp16"), ("V100", "fp16"), ("A100", "bf16"), ("H100", "bf16")])
def test_auto_precision_is_bf16_only_where_it_is_native(gpu, expected, monkeypatch):
    capability = GPUS[gpu]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # PyTorch's own answer counts emulation: yes on every one of these cards unless asked otherwise
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))
    cuda = torch.device("cuda", 0)
    assert choose_precision("auto", cuda) == expected
    assert runtime.native_bf16(cuda) == (expected == "bf16")
    for explicit in ("fp32", "bf16", "fp16"):
        assert choose_precision(explicit, cuda) == explicit
    assert runtime.use_fused_adamw(cuda)


def test_auto_precision_on_a_cpu_is_fp32():
    cpu = torch.device("cpu")
    assert choose_precision("auto", cpu) == "fp32"
    assert not runtime.use_fused_adamw(cpu)  # CPU runs keep their numbers
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp8", cpu)


# --- Mixed precision, channels-last and compile run ---------------------------------------------

@pytest.mark.parametrize("precision, channels_last", [("bf16", True), ("fp16", True), ("fp16", False)])
def test_mixed_precision_runs_and_is_stored(precision, channels_last, data_root, tmp_path):
    trainer = Trainer(cfg(tmp_path, data_root, precision=precision, channels_last=channels_last), screen=False)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    history = trainer.fit()
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["precision"] == precision and saved_precision(ckpt) == precision
    assert bool(ckpt["scaler"]) == (precision == "fp16")  # a scale only where there is a scaler
    x, _ = next(iter(trainer.train_loader))
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.slow  # torch.compile's first compilation: about 20 s on two cores
def test_compiled_model_trains(data_root, tmp_path, monkeypatch):
    # a private compile cache: a shared /tmp/torchinductor_<user> may hold another process's half-written files
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    trainer = Trainer(cfg(tmp_path, data_root, compile=True, precision="bf16"), screen=False)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    assert len(history) == 1
    saved = load_checkpoint(tmp_path / "last.pt")["model"]
    assert saved.keys() == initial.keys()  # the plain model's names, not the compiled wrapper's
    assert not torch.equal(saved["head.weight"], initial["head.weight"])  # the compiled steps trained it
    # the compiled module computes what the model it wraps computes
    x, _ = next(iter(trainer.test_loader))
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.wrapped_model(x[:8]), trainer.model(x[:8]), rtol=1e-4, atol=1e-4)


# --- Resuming what a GPU run leaves behind ------------------------------------------------------

def stop_after(trainer, steps):
    """Send this process SIGTERM after ``steps`` training steps (the trainer stops after that step)."""
    real, calls = trainer.train_step, {"n": 0}

    def step_then_sigterm(*args):
        out = real(*args)
        calls["n"] += 1
        if calls["n"] == steps:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_sigterm


def test_fp16_run_resumed_mid_epoch_reaches_the_same_weights(data_root, tmp_path):
    flags = dict(precision="fp16", epochs=2)
    Trainer(cfg(tmp_path / "straight", data_root, **flags), screen=False).fit()
    trainer = Trainer(cfg(tmp_path / "stopped", data_root, **flags), screen=False)
    stop_after(trainer, STEPS + 2)  # mid-epoch 1, with a loss scale that has already changed nothing yet
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2) and ckpt["scaler"]["scale"] > 0
    Trainer(cfg(tmp_path / "stopped", data_root, resume=True, **flags), screen=False).fit()
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "stopped" / "last.pt"))
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["scaler"]
    b = load_checkpoint(tmp_path / "stopped" / "last.pt")["scaler"]
    assert a == b


@pytest.mark.parametrize("before, after", [("bf16", "fp16"), ("fp32", "fp16"), ("fp16", "bf16"), ("fp16", "fp32")])
def test_resume_across_a_precision_change_says_so(before, after, data_root, tmp_path, capsys):
    Trainer(cfg(tmp_path, data_root, precision=before), screen=False).fit()
    capsys.readouterr()
    trainer = Trainer(cfg(tmp_path, data_root, precision=after, epochs=2, resume=True), screen=False)
    err = capsys.readouterr().err
    assert f"was trained in {before}; it continues in {after}" in err and f"--precision {before}" in err
    assert trainer.scaler.is_enabled() == (after == "fp16")
    if after == "fp16":  # an empty scaler state was not loaded (PyTorch raises on it): a fresh scale
        assert trainer.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()
    trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == after


def test_auto_meaning_something_else_on_this_machine_is_a_note(data_root, tmp_path, capsys, monkeypatch):
    """A run saved where auto meant bf16 (an A100) resumed where auto means fp16 (a T4)."""
    Trainer(cfg(tmp_path, data_root, precision="bf16"), screen=False).fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    ckpt["train_config"]["precision"] = "auto"
    atomic_save(ckpt, tmp_path / "last.pt")
    monkeypatch.setattr(train_module, "choose_precision", lambda precision, device: "fp16")
    capsys.readouterr()
    trainer = Trainer(cfg(tmp_path, data_root, precision="auto", epochs=2, resume=True), screen=False)
    err = capsys.readouterr().err
    assert "was trained in bf16; it continues in fp16 (--precision auto means fp16 on" in err
    assert "Pass --precision bf16 to keep bf16" in err and trainer.scaler.is_enabled()
    trainer.fit()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_checkpoint_written_before_precision_was_stored_still_resumes(precision, data_root, tmp_path, capsys):
    """last.pt from the trainer as it was before this field (no "precision" key) resumes, exports, loads."""
    Trainer(cfg(tmp_path, data_root, precision=precision), screen=False).fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    del ckpt["precision"]
    atomic_save(ckpt, tmp_path / "last.pt")
    assert saved_precision(ckpt) == precision
    capsys.readouterr()
    trainer = Trainer(cfg(tmp_path, data_root, precision=precision, epochs=2, resume=True), screen=False)
    assert "continues in" not in capsys.readouterr().err
    if precision == "fp16":
        assert trainer.scaler.get_scale() == ckpt["scaler"]["scale"]
    trainer.fit()
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "last.pt")["history"]] == [1, 2]
    slim = export_model(tmp_path, tmp_path / "slim.pt")
    model, _ = load_model(tmp_path / "slim.pt")
    assert slim["epoch"] == 2 and model.config.dim == 8


def test_old_checkpoints_tell_their_precision():
    assert saved_precision({"train_config": {"precision": "auto"}, "scaler": {"scale": 8.0}}) == "fp16"
    assert saved_precision({"train_config": {"precision": "auto"}, "scaler": {},
                            "hardware": "AMD EPYC, 2 threads"}) == "fp32"
    assert saved_precision({"train_config": {"precision": "auto"}, "scaler": {}, "hardware": "NVIDIA A100"}) is None
    assert saved_precision({"train_config": {"precision": "bf16"}, "scaler": {}}) == "bf16"
    assert saved_precision({"precision": "fp16", "train_config": {"precision": "auto"}}) == "fp16"


def state_layout(optimizer):
    return {(i, k): (v.device, v.dtype) for i, s in enumerate(optimizer.state.values())
            for k, v in s.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("fused", [False, True])
def test_resumed_optimizer_state_lives_where_a_fresh_one_does(fused, data_root, tmp_path, monkeypatch):
    """The checkpoint is read onto the CPU; load_state_dict puts each tensor where the optimizer keeps it."""
    monkeypatch.setattr(train_module, "use_fused_adamw", lambda device: fused)
    Trainer(cfg(tmp_path, data_root), screen=False).fit()
    fresh = Trainer(cfg(tmp_path / "fresh", data_root), screen=False)
    x, y = next(iter(fresh.train_loader))
    fresh.train_step(x, y, 0.01)
    read = []
    real = train_module.load_checkpoint
    monkeypatch.setattr(train_module, "load_checkpoint", lambda path, map_location: read.append(map_location)
                        or real(path, map_location))
    resumed = Trainer(cfg(tmp_path, data_root, epochs=2, resume=True), screen=False)
    assert read == ["cpu"]
    assert state_layout(resumed.optimizer) and state_layout(resumed.optimizer) == state_layout(fresh.optimizer)


# --- A step the scaler skips ----------------------------------------------------------------------

def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halves(data_root, tmp_path):
    trainer = Trainer(cfg(tmp_path, data_root, precision="fp16"), screen=False)
    scale = trainer.scaler.get_scale()
    overflow = {"on": True}  # the first step's gradients overflow fp16, as a too-large loss scale makes them
    weight = next(trainer.model.parameters())
    weight.register_hook(lambda g: g * float("inf") if overflow["on"] else g)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    x, y = next(iter(trainer.train_loader))
    loss, _ = trainer.train_step(x, y, 0.01)
    assert torch.isfinite(loss)  # the loss is fine: only its gradients are not
    assert trainer.scaler.get_scale() == scale / 2  # the step was skipped and the scale halved
    for k, v in trainer.model.named_parameters():  # (BatchNorm's running statistics move in the forward)
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    overflow["on"] = False
    history = trainer.fit()  # later steps go through; the skipped one stopped nothing
    assert len(history) == 1 and all(torch.isfinite(v).all() for v in trainer.model.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.named_parameters())


# --- No host synchronisation between log points ---------------------------------------------------

SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "_unique", "_unique2",
               "unique_dim", "unique_consecutive", "repeat_interleave"}


class HostSyncError(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    """Raise on every operation that makes the host wait for a GPU (``.item()``, ``bool(t)``, ``int(t)``,
    ``nonzero``, boolean masks ...), unless paused.  On a CPU these cost nothing, so a trainer tested
    only on a CPU would never notice them; here they fail the test."""

    def __init__(self):
        super().__init__()
        self.paused, self.seen = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and name in SYNCING_OPS:
            raise HostSyncError(f"{func} waits for the device between two log points")
        return func(*args, **(kwargs or {}))


def guard_inner_loop(trainer, monkeypatch):
    """Run ``trainer.fit`` under :class:`NoHostSync`, paused while the loader makes a batch (its CPU
    branches synchronise by design; its GPU branches use torch.where), at the log points and at the
    end of each epoch (evaluation and checkpoint)."""
    mode = NoHostSync()

    class PausedLoader:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def set_epoch(self, epoch):
            self.loader.set_epoch(epoch)

        def __iter__(self):
            it = iter(self.loader)
            while True:
                mode.paused += 1
                try:
                    batch = next(it)
                except StopIteration:
                    return
                finally:
                    mode.paused -= 1
                yield batch

    def paused(method):
        def run(*args, **kwargs):
            mode.paused += 1
            try:
                return method(*args, **kwargs)
            finally:
                mode.paused -= 1
        return run

    trainer.train_loader = PausedLoader(trainer.train_loader)
    trainer._log_point = paused(trainer._log_point)
    trainer._end_epoch = paused(trainer._end_epoch)
    real_fit = trainer.fit

    def guarded_fit():
        with mode:
            return real_fit()

    trainer.fit = guarded_fit
    # .item(), bool(), int() and float() reach the dispatcher as _local_scalar_dense; these two do not
    for name in ("tolist", "numpy"):
        real = getattr(torch.Tensor, name)

        def check(self, *a, _real=real, _name=name, **k):
            if not mode.paused and _inside(mode):
                raise HostSyncError(f"Tensor.{_name}() waits for the device between two log points")
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, check)
    return mode


def _inside(mode) -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return mode in _get_current_dispatch_mode_stack()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_inner_loop_never_waits_for_the_device(precision, data_root, tmp_path, monkeypatch):
    """The CUDA configuration (fused AdamW, the fp16 scaler), run on a CPU under the guard, with the
    log points far apart: two epochs, a resume in between, and the clip-norm path."""
    monkeypatch.setattr(train_module, "use_fused_adamw", lambda device: True)
    flags = dict(precision=precision, log_every=1000, clip_norm=1.0 if precision == "fp16" else 0.0)
    trainer = Trainer(cfg(tmp_path, data_root, **flags), screen=False)
    guard_inner_loop(trainer, monkeypatch)
    trainer.fit()
    trainer = Trainer(cfg(tmp_path, data_root, epochs=2, resume=True, **flags), screen=False)
    guard_inner_loop(trainer, monkeypatch)
    assert len(trainer.fit()) == 2


@pytest.mark.parametrize("sync", ["item", "bool", "nonzero", "tolist"])
def test_the_guard_catches_a_sync_added_to_the_step(sync, data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "use_fused_adamw", lambda device: True)
    trainer = Trainer(cfg(tmp_path, data_root, log_every=1000), screen=False)
    real = trainer.train_step

    def step_with_a_sync(x, y, lr):
        loss, hits = real(x, y, lr)
        {"item": lambda: loss.item(), "bool": lambda: bool(loss > 0), "nonzero": lambda: (y > 3).nonzero(),
         "tolist": lambda: hits.tolist()}[sync]()
        return loss, hits

    trainer.train_step = step_with_a_sync
    guard_inner_loop(trainer, monkeypatch)
    with pytest.raises(HostSyncError):
        trainer.fit()
