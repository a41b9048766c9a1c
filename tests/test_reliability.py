"""Issue 7: every bad input gets a clear message that says what to do, and nothing saved is lost.

Training tests use a tiny synthetic data set (cached uint8 tensors in a temporary folder) and a
ConvMixer-8/1, so a run takes about a second; ``run_epoch1`` trains one such run per module and
tests copy it.  Files are compared byte for byte before and after every failure.
"""
import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convmixer import ConvMixer
from convmixer.checkpoint import (FORMAT, CheckpointError, atomic_save, atomic_save_json, check_architecture,
                                  load_checkpoint)
from convmixer.config import recipe_config
from convmixer.checkpoint import export_model, load_model
from convmixer.train import NonFiniteLoss, Trainer, main

from conftest import N_TEST, N_TRAIN  # the size of the synthetic data_root fixture

BATCH = 16
STEPS = N_TRAIN // BATCH  # steps per epoch
SAVED = ("last.pt", "history.json", "config.json")
REPO = Path(__file__).resolve().parents[1]


# --- Fixtures: a synthetic data folder and a one-epoch run -------------------------------------

@pytest.fixture(scope="module", autouse=True)
def keep_torch_threads():
    """The runs below use threads=1 (steadier on a shared CPU); give the process its setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)



# device="cpu" also on a GPU machine: resumes are compared bit for bit (cuDNN's algorithm search is not repeatable)
TINY = dict(dim=8, depth=1, train_subset=0, test_subset=0, batch_size=BATCH, threads=1, device="cpu")


def cfg(out_dir, data_root, **kw):
    return recipe_config("tiny", out_dir=str(out_dir), data_root=str(data_root), **{**TINY, **kw})


def cli_args(out_dir, data_root, *extra):
    return ["--preset", "tiny", "--dim", "8", "--depth", "1", "--train-subset", "0", "--test-subset", "0",
            "--batch-size", str(BATCH), "--threads", "1", "--epochs", "1", "--device", "cpu", "--data-root", str(data_root),
            "--out-dir", str(out_dir), *extra]


@pytest.fixture(scope="module")
def run_epoch1(tmp_path_factory, data_root) -> Path:
    """A finished one-epoch run (``epochs=1``)."""
    out = tmp_path_factory.mktemp("epoch1") / "run"
    Trainer(cfg(out, data_root, epochs=1), screen=False).fit()
    return out


@pytest.fixture
def run(run_epoch1, tmp_path) -> Path:
    """A private copy of the one-epoch run."""
    return Path(shutil.copytree(run_epoch1, tmp_path / "run"))


def saved_files(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in SAVED if (folder / name).exists()}


def stray_files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def call_main(capsys, argv) -> tuple[int, str]:
    """Run the command line in this process: (exit status, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error" in lines[0]
    return lines[0]


# --- Model arguments and inputs (test_model.py checks every field; these check the advice) ------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dim=0), "dim must be a positive integer, got 0"),
    (dict(depth=-2), "depth must be a positive integer, got -2"),
    (dict(patch_size=2.0), "patch_size must be a positive integer, got 2.0"),
    (dict(kernel_size=4), "kernel_size must be odd .* use 3 or 5"),
    (dict(activation="swish"), r"activation must be one of \('gelu', 'relu'\), got 'swish'"),
    (dict(norm="group"), "norm must be one of"),
])
def test_model_arguments_out_of_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvMixer(**kwargs)


def test_input_with_wrong_channels_or_smaller_than_a_patch():
    model = ConvMixer(dim=8, depth=1, kernel_size=3, patch_size=4).eval()
    with pytest.raises(ValueError, match=r"expected 3 input channels .* got 1 .*"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"permute with x.permute\(0, 3, 1, 2\)"):
        model(torch.zeros(2, 32, 32, 3))  # channels last
    with pytest.raises(ValueError, match=r"\(3x32\) is smaller than one 4x4 patch"):
        model(torch.zeros(2, 3, 3, 32))
    with pytest.raises(ValueError, match=r"shaped \(N, 3, H, W\)"):
        model(torch.zeros(3, 32, 32))  # a single image without its batch dimension
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 10)


# --- Checkpoints that are not what they should be ---------------------------------------------

def test_checkpoint_of_another_architecture_lists_every_difference(run):
    ckpt = load_checkpoint(run / "last.pt")
    other = {**ckpt["model_config"], "dim": 16, "depth": 2, "norm": "layer"}
    with pytest.raises(CheckpointError) as e:
        check_architecture(ckpt, other, run / "last.pt")
    msg = str(e.value)
    for diff in ("depth: checkpoint has 1, model has 2", "dim: checkpoint has 8, model has 16",
                 "norm: checkpoint has 'batch', model has 'layer'"):
        assert diff in msg
    assert "kernel_size" not in msg and "load_model" in msg


class MarkerOnLoad:
    """Unpickling this would create ``marker``: the proof that a loader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


NOT_CHECKPOINTS = {
    # name: (bytes to write given (marker, a real checkpoint's bytes), error type, words in the message)
    "random-bytes": (lambda m, real: os.urandom(2048), CheckpointError, "damaged, truncated, or another kind of file"),
    "empty": (lambda m, real: b"", CheckpointError, "the file is empty (0 bytes)"),
    "truncated": (lambda m, real: real[:len(real) // 2], CheckpointError, "damaged, truncated"),
    "tensor": (lambda m, real: _torch_bytes(torch.zeros(3)), CheckpointError, "it holds a Tensor, not a dict"),
    "json": (lambda m, real: json.dumps({"format": FORMAT}).encode(), CheckpointError, "another kind of file"),
    "dict-without-format": (lambda m, real: _torch_bytes({"model": {}}), CheckpointError, "has no 'format'"),
    "other-format": (lambda m, real: _torch_bytes({"format": "convmixer-checkpoint-v0"}), CheckpointError,
                     "its format is 'convmixer-checkpoint-v0'"),
    "no-model-config": (lambda m, real: _torch_bytes({"format": FORMAT, "model": {}}), CheckpointError,
                        "it lacks model_config"),
    "pickle-protocol-2": (lambda m, real: pickle.dumps({"model": MarkerOnLoad(m)}, protocol=2), CheckpointError,
                          "holds pickled Python objects"),
    "pickle-default": (lambda m, real: pickle.dumps({"model": MarkerOnLoad(m)}), CheckpointError,
                       "not a ConvMixer checkpoint"),
    "torch-save-of-object": (lambda m, real: _torch_bytes({"format": FORMAT, "model": MarkerOnLoad(m)}),
                             CheckpointError, "refused without being run"),
}


@pytest.mark.parametrize("kind", NOT_CHECKPOINTS)
def test_file_that_is_not_a_checkpoint(kind, run, tmp_path):
    make, error, words = NOT_CHECKPOINTS[kind]
    marker = tmp_path / "pickled-code-ran"
    path = tmp_path / "suspect.pt"
    path.write_bytes(make(marker, (run / "last.pt").read_bytes()))
    before = path.read_bytes()
    for load in (load_checkpoint, load_model):
        with pytest.raises(error) as e:
            load(path)
        msg = str(e.value)
        assert str(path) in msg and words in msg and "Pass a checkpoint written by convmixer.train" in msg
        assert "\n" not in msg
    assert not marker.exists()  # weights_only=True refused the object without running its code
    assert path.read_bytes() == before


def test_missing_checkpoint_or_a_folder(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*check the path"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=f"is a folder, not a checkpoint file; did you mean {run / 'last.pt'}"):
        load_checkpoint(run)


def test_resuming_from_pickled_code_refuses_it_and_keeps_the_file(run, data_root, tmp_path, capsys):
    marker = tmp_path / "pickled-code-ran"
    (run / "last.pt").write_bytes(_torch_bytes({"format": FORMAT, "model": MarkerOnLoad(marker)}))
    before = saved_files(run)
    with pytest.raises(CheckpointError, match="refused without being run"):
        Trainer(cfg(run, data_root, epochs=1, resume=True), screen=False)
    rc, err = call_main(capsys, cli_args(run, data_root, "--resume"))
    assert rc == 2 and "refused without being run" in one_error_line(err)
    assert not marker.exists() and saved_files(run) == before


# --- Unknown or contradictory command-line flags ------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--resume", "--dim", "16"], "holds a different architecture: dim: checkpoint has 8, model has 16"),
    (["--resume", "--kernel-size", "5", "--norm", "layer"], "kernel_size: checkpoint has 3, model has 5; "
                                                             "norm: checkpoint has 'batch', model has 'layer'"),
    (["--resume", "--lr-max", "0.5"], "was trained with other settings: lr_max"),
    (["--resume", "--device", "cuda"], "no CUDA device is available; use --device cpu"),
    (["--resume", "--crop", "resized", "--scale-min", "0"], r"scale_min must be in (0, 1], got 0.0"),
    (["--resume", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--resume", "--epochs", "0"], "epochs must be positive, got 0"),
    ([], "already exists; pass --resume to continue that run, or choose another --out-dir"),
], ids=["other-dim", "other-kernel-and-norm", "other-lr", "cuda-without-cuda", "resized-crop-scale-0",
        "unknown-flag", "zero-epochs", "no-resume"])
def test_contradictory_flags_give_one_line_and_lose_nothing(extra, message, run, data_root, capsys):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    before = saved_files(run)
    rc, err = call_main(capsys, cli_args(run, data_root, *extra))
    assert rc == 2
    assert message in one_error_line(err)
    assert saved_files(run) == before and not stray_files(run)


# --- A loss that is not finite ------------------------------------------------------------------

def test_non_finite_weights_stop_training_keeping_the_last_good_checkpoint(run, data_root):
    before = saved_files(run)
    good = load_checkpoint(run / "last.pt")["model"]
    trainer = Trainer(cfg(run, data_root, epochs=2, resume=True), screen=False)
    with torch.no_grad():
        trainer.model.head.weight.fill_(float("inf"))  # every logit inf or nan from the first step of epoch 1
    with pytest.raises(NonFiniteLoss) as e:
        trainer.fit()
    msg = str(e.value)
    assert f"non-finite at step {STEPS} (epoch 1, batch 0)" in msg
    assert f"{run / 'last.pt'} still holds the last good epoch" in msg and "Lower --lr-max" in msg
    assert saved_files(run) == before and not stray_files(run)
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0)
    assert_same_weights(ckpt["model"], good)


def test_nan_loss_mid_epoch_names_its_step(run, data_root):
    """The loss is checked every log_every steps without a host sync per step: the message must still
    name the first bad step, not the step where it was noticed."""
    before = saved_files(run)
    trainer = Trainer(cfg(run, data_root, epochs=2, resume=True, log_every=1000), screen=False)
    real_step, calls = trainer.train_step, []

    def step(*args):
        loss, hits = real_step(*args)
        calls.append(1)
        return (torch.full_like(loss, float("nan")) if len(calls) == 3 else loss), hits

    trainer.train_step = step
    with pytest.raises(NonFiniteLoss, match=rf"step {STEPS + 2} \(epoch 1, batch 2\)"):
        trainer.fit()
    assert len(calls) == STEPS  # noticed at the end of the epoch, before anything was saved
    assert saved_files(run) == before


def test_diverging_run_from_the_command_line(tmp_path, data_root, capsys, monkeypatch):
    real_step = Trainer.train_step

    def diverging_step(self, x, y, lr):  # as if the learning rate were far too high
        loss, hits = real_step(self, x, y, lr)
        return loss * float("inf") if self.step >= 1 else loss, hits

    monkeypatch.setattr(Trainer, "train_step", diverging_step)
    out = tmp_path / "diverged"
    rc, err = call_main(capsys, cli_args(out, data_root, "--log-every", "1"))
    assert rc == 2
    line = one_error_line(err)
    assert "the loss became non-finite at step 1 (epoch 0, batch 1)" in line and "Lower --lr-max" in line
    assert not (out / "last.pt").exists()  # no good epoch yet: nothing is written rather than nan weights


# --- Interruption -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_straight(tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    Trainer(cfg(out, data_root), screen=False).fit()
    return out


def test_ctrl_c_mid_epoch_saves_and_resume_reaches_the_same_weights(run_straight, data_root, tmp_path, capsys):
    out = tmp_path / "stopped"
    trainer = Trainer(cfg(out, data_root), screen=False)
    real_step, calls = trainer.train_step, []

    def step_then_ctrl_c(*args):
        result = real_step(*args)
        calls.append(1)
        if len(calls) == STEPS + 2:  # epoch 1, batch 1: after a checkpoint was written at the end of epoch 0
            os.kill(os.getpid(), signal.SIGINT)
        return result

    trainer.train_step = step_then_ctrl_c
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert f"Interrupted at epoch 1, step 2/{STEPS}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # the handler given back as it was
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2) and not stray_files(out)

    Trainer(cfg(out, data_root, resume=True), screen=False).fit()
    assert_same_weights(load_checkpoint(out / "last.pt")["model"], load_checkpoint(run_straight / "last.pt")["model"])
    assert json.loads((out / "history.json").read_text())[-1]["test_loss"] == \
        json.loads((run_straight / "history.json").read_text())[-1]["test_loss"]


def test_ctrl_c_on_the_command_line_exits_130_with_a_resumable_checkpoint(tmp_path, data_root):
    out = tmp_path / "cli"
    args = cli_args(out, data_root, "--epochs", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "convmixer.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():  # the first epoch's checkpoint: training is under way
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Interrupted at epoch" in err and "--resume" in err and "Traceback" not in err
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] >= 1 and not stray_files(out)
    resumed = Trainer(cfg(out, data_root, epochs=100000, resume=True), screen=False)
    assert (resumed.epoch, resumed.step) == (ckpt["epoch"], ckpt["step"])


# --- Atomic writes ----------------------------------------------------------------------------------

def _partial_then(exc):
    def fake_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise exc
    return fake_save


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_crash_inside_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.pt"
    atomic_save({"format": FORMAT, "n": torch.arange(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _partial_then(exc))
    with pytest.raises(type(exc)):
        atomic_save({"format": FORMAT, "n": torch.arange(5)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]  # no temporary file left
    with pytest.raises(TypeError):
        atomic_save_json({"not json": object()}, tmp_path / "history.json")
    assert os.listdir(tmp_path) == ["last.pt"]


def test_crash_while_saving_an_epoch_keeps_the_previous_checkpoint(run, data_root, monkeypatch):
    before = saved_files(run)
    trainer = Trainer(cfg(run, data_root, epochs=2, resume=True), screen=False)
    monkeypatch.setattr(torch, "save", _partial_then(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    monkeypatch.undo()
    assert saved_files(run) == before and not stray_files(run)
    resumed = Trainer(cfg(run, data_root, epochs=2, resume=True), screen=False)
    assert (resumed.epoch, resumed.step) == (1, 0)


def test_trainer_writes_every_file_through_a_temporary_file_and_a_rename(run, data_root, monkeypatch):
    trainer = Trainer(cfg(run, data_root, epochs=1, resume=True), screen=False)
    renames, real_replace = [], os.replace

    def spy(src, dst):
        assert Path(src).is_file() and Path(src).stat().st_size > 0  # complete before the rename
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    trainer.save()
    assert sorted(dst.name for _, dst in renames) == sorted(SAVED)
    for src, dst in renames:
        assert src.parent == dst.parent == run  # same folder: a rename, never a copy across file systems
        assert src.name.startswith(f".{dst.name}.") and src.name.endswith(".tmp")
    assert not stray_files(run)


def test_written_files_keep_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = tmp_path / "fresh.pt"
    atomic_save({"x": 1}, fresh)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file
    private = tmp_path / "private.pt"
    atomic_save({"x": 1}, private)
    private.chmod(0o600)
    atomic_save({"x": 2}, private)
    assert private.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode


# --- What a checkpoint holds ------------------------------------------------------------------------

PLAIN = (str, int, float, bool, type(None))


def assert_plain(value, where):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where}: key {k!r}"
            assert_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(value, PLAIN), f"{where} is a {type(value).__name__}"


def test_checkpoint_holds_plain_config_and_loads_with_weights_only(run, tmp_path):
    ckpt = torch.load(run / "last.pt", weights_only=True)  # raises if anything but tensors and plain data
    assert ckpt["format"] == FORMAT
    for key in ("model_config", "train_config", "history", "partial", "epoch", "step"):
        assert_plain(ckpt[key], key)
    assert ckpt["model_config"] == json.loads(json.dumps(ckpt["model_config"]))
    assert ConvMixer(**ckpt["model_config"]).load_state_dict(ckpt["model"])
    assert all(isinstance(t, torch.Tensor) for t in ckpt["model"].values())
    slim = export_model(run, tmp_path / "model.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True).keys() == slim.keys()
    assert_plain(slim["model_config"], "exported model_config")
