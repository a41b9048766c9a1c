"""The trainer: the schedule, a real tiny run, checkpoints, resume, and the command line."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from convmixer.checkpoint import CheckpointError, load_checkpoint
from convmixer.config import RECIPES, TrainConfig, parse_config, recipe_config
from convmixer.checkpoint import load_model
from convmixer.train import one_cycle_lr
from convmixer.train import Trainer


def test_one_cycle_matches_official_breakpoints():
    # np.interp(t, [0, 2E/5, 4E/5, E], [0, lr, lr/20, 0]) with E = 25, lr = 0.05
    assert one_cycle_lr(0, 25, 0.05) == 0
    assert one_cycle_lr(10, 25, 0.05) == pytest.approx(0.05)
    assert one_cycle_lr(5, 25, 0.05) == pytest.approx(0.025)
    assert one_cycle_lr(20, 25, 0.05) == pytest.approx(0.0025)
    assert one_cycle_lr(15, 25, 0.05) == pytest.approx((0.05 + 0.0025) / 2)
    assert one_cycle_lr(25, 25, 0.05) == 0
    # the official README's printed learning rates, epoch 0 and 10 (after the last step of the epoch)
    assert one_cycle_lr(1, 25, 0.05) == pytest.approx(0.005)
    assert one_cycle_lr(11, 25, 0.05) == pytest.approx(0.04525)


def test_defaults_are_the_official_recipe():
    cfg = TrainConfig()
    assert (cfg.dim, cfg.depth, cfg.kernel_size, cfg.patch_size) == (256, 8, 5, 2)
    assert (cfg.epochs, cfg.batch_size, cfg.lr_max, cfg.weight_decay) == (25, 512, 0.05, 0.005)
    assert (cfg.ra_n, cfg.ra_m, cfg.scale_min, cfg.erase_p, cfg.flip) == (2, 12, 1.0, 0.0, True)
    assert parse_config([]) == cfg


def tiny(tmp_path, **kw):
    # On the CPU also on a GPU machine: the resume tests compare weights bit for bit, and cuDNN's
    # algorithm search (cudnn.benchmark) may pick other kernels in another process.
    return recipe_config("tiny", out_dir=str(tmp_path), **{"device": "cpu", **kw})


def test_tiny_run_writes_checkpoint_history_and_config(cifar_root, tmp_path):
    history = Trainer(tiny(tmp_path), screen=False).fit()
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((tmp_path / "history.json").read_text()) == history
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["dim"] == 32 and config["train"]["epochs"] == 2
    ckpt = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    assert ckpt["epoch"] == 2 and ckpt["step"] == 0
    model, _ = load_model(tmp_path / "last.pt")
    assert model.config.dim == 32 and not model.training
    for h in history:  # the schedule's rate after the epoch; accuracies counted over all 512 and 256 images
        assert h["lr"] == one_cycle_lr(h["epoch"], 2, 0.01)
        assert h["train_accuracy"] * 512 == round(h["train_accuracy"] * 512)
        assert h["test_accuracy"] * 256 == round(h["test_accuracy"] * 256)
    assert history[1]["elapsed_seconds"] == history[0]["epoch_seconds"] + history[1]["epoch_seconds"]


def test_training_learns_something(cifar_root, tmp_path):
    """512 real images, 6 epochs: the loss on them must fall well below chance (ln 10 = 2.30), and the
    accuracy on 256 test images must be well above chance (10%).  Measured: 1.69 and 28%."""
    history = Trainer(tiny(tmp_path, epochs=6, lr_max=0.02), screen=False).fit()
    assert history[-1]["train_loss"] < 1.8
    assert history[-1]["test_accuracy"] > 0.2


def test_no_flip_turns_the_flips_off(cifar_root, tmp_path):
    """Without crops or RandAugment, the first batch with flips holds the same images as with --no-flip,
    some of them mirrored; with --no-flip none is."""
    assert parse_config(["--no-flip"]).augment().flip is False
    plain = Trainer(tiny(tmp_path / "a", crop="none", flip=False), screen=False)
    flipped = Trainer(tiny(tmp_path / "b", crop="none"), screen=False)
    (x, y), (xf, yf) = next(iter(plain.train_loader)), next(iter(flipped.train_loader))
    assert torch.equal(y, yf)  # the same images in the same order
    same = [torch.equal(a, b) for a, b in zip(x, xf)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(x, xf)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 0 < sum(same) < len(x) and 0 < sum(mirrored) < len(x)


def test_one_cycle_lr_is_not_a_lambda_lr():
    """Why the trainer sets the rate itself (convmixer.train): LambdaLR's base rate times a factor
    differs from one_cycle_lr in the last bit on some steps, so it would not reproduce earlier runs."""
    epochs, lr_max, steps = 8, 0.01, 390  # the cpu-paper run
    rate = lambda k: one_cycle_lr(k // steps + (k % steps + 1) / steps, epochs, lr_max)  # noqa: E731
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr_max)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: rate(k) / lr_max)
    differ = 0
    for k in range(epochs * steps):
        differ += optimizer.param_groups[0]["lr"] != rate(k)
        optimizer.step()
        scheduler.step()
    assert differ > 0


@pytest.mark.parametrize("args, message", [
    (["--dataset", "imagefolder", "--data-root", "x"], "--dataset imagefolder always crops with RandomResizedCrop"),
    (["--preset", "imagenet", "--data-root", "x", "--crop", "pad"], "got crop='pad'; pass --crop resized"),
    (["--preset", "imagenet", "--data-root", "x", "--no-flip"], "always flips images horizontally"),
])
def test_imagefolder_rejects_augmentation_it_cannot_apply(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert parse_config(["--preset", "imagenet", "--data-root", "x"]).crop == "resized"


def _final_weights(path):
    return load_checkpoint(path)["model"]


def test_interrupted_run_resumes_to_the_same_weights(cifar_root, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny(straight), screen=False).fit()

    stopped = tmp_path / "stopped"
    trainer = Trainer(tiny(stopped), screen=False)
    calls = {"n": 0}
    real_step = trainer.train_step

    def step_then_sigterm(*args):
        out = real_step(*args)
        calls["n"] += 1
        if calls["n"] == 5:  # mid-epoch 0 (8 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_sigterm
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    ckpt = load_checkpoint(stopped / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (0, 5)

    Trainer(tiny(stopped, resume=True), screen=False).fit()
    a, b = _final_weights(straight / "last.pt"), _final_weights(stopped / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert json.loads((stopped / "history.json").read_text())[-1]["test_accuracy"] == \
        json.loads((straight / "history.json").read_text())[-1]["test_accuracy"]


def test_existing_run_is_never_overwritten(cifar_root, tmp_path):
    Trainer(tiny(tmp_path, epochs=1), screen=False).fit()
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny(tmp_path, epochs=1), screen=False)
    with pytest.raises(CheckpointError, match="dim: checkpoint has 32, model has 48"):
        Trainer(tiny(tmp_path, dim=48, resume=True), screen=False)
    with pytest.raises(CheckpointError, match="lr_max"):
        Trainer(tiny(tmp_path, lr_max=0.5, resume=True), screen=False)
    assert (tmp_path / "last.pt").read_bytes() == before


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "convmixer.train", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_cli_help_lists_every_option():
    out = run_cli("--help")
    assert out.returncode == 0
    for f in TrainConfig.__dataclass_fields__:
        assert "--" + f.replace("_", "-") in out.stdout
    for name in RECIPES:
        assert name in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "unrecognized arguments"),
    (["--dim", "0"], "dim must be a positive integer"),
    (["--kernel-size", "4"], "kernel_size must be odd"),
    (["--epochs", "abc"], "invalid int value"),
    (["--preset", "huge"], "invalid choice"),
    (["--device", "cuda:0", "--preset", "tiny"], None),
])
def test_cli_bad_flags_give_one_line(args, message, tmp_path):
    if message is None and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = run_cli(*args, "--out-dir", str(tmp_path / "run"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "error" in lines[0] and (message is None or message in lines[0])


def test_cli_tiny_run_and_resume(cifar_root, tmp_path):
    run = str(tmp_path / "cli")
    first = run_cli("--preset", "tiny", "--out-dir", run, "--device", "cpu")
    assert first.returncode == 0, first.stderr
    assert len(json.loads((tmp_path / "cli" / "history.json").read_text())) == 2
    second = run_cli("--preset", "tiny", "--out-dir", run, "--resume", "--epochs", "3", "--device", "cpu")
    assert second.returncode == 0, second.stderr
    history = json.loads((tmp_path / "cli" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
