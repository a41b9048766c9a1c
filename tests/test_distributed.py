"""Data parallelism under torchrun: two CPU processes (gloo) reach one process's weights."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from convmixer.checkpoint import load_checkpoint


def run(args, tmp_path, torchrun=False):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    if torchrun:
        launcher = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
        cmd = [launcher, "--standalone", "--nproc_per_node", "2", "-m", "convmixer.train"]
    else:
        cmd = [sys.executable, "-m", "convmixer.train"]
    out = subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_gloo_processes_reach_the_weights_of_one(cifar_root, tmp_path):
    # LayerNorm: on a CPU BatchNorm cannot be synchronised (SyncBatchNorm is GPU-only), and with
    # per-process batch statistics the two runs would legitimately differ.
    flags = ["--preset", "tiny", "--norm", "layer", "--threads", "1", "--data-root", str(cifar_root)]
    run(flags + ["--out-dir", "one"], tmp_path)
    out = run(flags + ["--out-dir", "two"], tmp_path, torchrun=True)
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert two["train_config"]["batch_size"] == one["train_config"]["batch_size"] == 64  # the same global batch
    for k in one["model"]:
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    # metrics are reduced over both processes: they describe the whole data set, like one process's
    assert two["history"][-1]["test_accuracy"] == pytest.approx(one["history"][-1]["test_accuracy"], abs=1e-6)
    assert two["history"][-1]["train_loss"] == pytest.approx(one["history"][-1]["train_loss"], rel=1e-4)
    # rank 0 alone prints the summary line
    assert out.stdout.count("test accuracy") == 1
