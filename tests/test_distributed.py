"""Data parallelism under torchrun: two CPU processes (gloo) reach one process's weights, and stop together.

The device is pinned to the CPU, also on a GPU machine: two processes on one GPU cannot use NCCL.
"""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from convmixer.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun processes: the README's test command runs it

# Only rank 1 is asked to stop (SIGTERM after its third step); rank 0 never gets a signal.
STOP_ONE_RANK = r'''
import os, signal, sys
from convmixer import train

if os.environ["RANK"] == "1":
    real, calls = train.Trainer.train_step, {"n": 0}

    def step(self, *args):
        out = real(self, *args)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    train.Trainer.train_step = step
sys.exit(train.main(sys.argv[1:]))
'''


def run(args, tmp_path, torchrun=False, script=None, check=True, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    if torchrun:
        launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
        cmd = [launcher, "--standalone", "--nproc_per_node", "2"] + ([str(script)] if script else ["-m", "convmixer.train"])
    else:
        cmd = [sys.executable, "-m", "convmixer.train"]
    out = subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def flags(cifar_root):
    # LayerNorm: on a CPU BatchNorm cannot be synchronised (SyncBatchNorm is GPU-only), and with
    # per-process batch statistics the two runs would legitimately differ.
    return ["--preset", "tiny", "--norm", "layer", "--threads", "1", "--device", "cpu", "--data-root", str(cifar_root)]


@pytest.fixture(scope="module")
def runs(flags, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    run(flags + ["--out-dir", "one"], folder)
    out = run(flags + ["--out-dir", "two"], folder, torchrun=True)
    return folder, out


def test_two_gloo_processes_reach_the_weights_of_one(runs):
    folder, out = runs
    one, two = load_checkpoint(folder / "one" / "last.pt"), load_checkpoint(folder / "two" / "last.pt")
    assert two["train_config"]["batch_size"] == one["train_config"]["batch_size"] == 64  # the same global batch
    for k in one["model"]:
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    # metrics are reduced over both processes: they describe the whole data set, like one process's
    assert two["history"][-1]["test_accuracy"] == pytest.approx(one["history"][-1]["test_accuracy"], abs=1e-6)
    assert two["history"][-1]["train_loss"] == pytest.approx(one["history"][-1]["train_loss"], rel=1e-4)
    # rank 0 alone prints: its start line (naming both processes) and one line per epoch
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and "x 2 processes" in lines[0], lines
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2"]


def test_a_signal_to_one_process_stops_both_at_the_same_step(runs, flags, tmp_path):
    """Without agreement, rank 1 would leave the loop alone and rank 0 hang in its next all-reduce."""
    folder, _ = runs
    script = tmp_path / "stop_one_rank.py"
    script.write_text(STOP_ONE_RANK)
    stopped = run(flags + ["--out-dir", "stopped", "--log-every", "2"], tmp_path, torchrun=True, script=script,
                  check=False, timeout=900)
    assert stopped.returncode != 0  # both processes exit 130 (interrupted), and torchrun reports it
    ckpt = load_checkpoint(tmp_path / "stopped" / "last.pt")  # rank 0 saved, at the agreed step
    assert (ckpt["epoch"], ckpt["step"]) == (0, 4), stopped.stderr[-3000:]
    assert stopped.stderr.count("Interrupted at epoch 0, step 4/8") == 1
    run(flags + ["--out-dir", "stopped", "--resume"], tmp_path, torchrun=True)
    a, b = load_checkpoint(folder / "two" / "last.pt")["model"], load_checkpoint(tmp_path / "stopped" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
