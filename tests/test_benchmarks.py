"""The benchmark harness's own arithmetic: what its tables and JSON are computed from.

The timings themselves are measurements, not tests; these check that the harness counts right.
"""
import math

import pytest
import torch

from benchmarks.gpu import official_epochs, summarise
from benchmarks.step import copy_gbytes_per_second, matmul_gflops, model_gflops_per_image, saved_bytes_per_step
from convmixer.reference import multiply_accumulates, official_convmixer


def test_model_flops_are_six_per_forward_multiply_accumulate():
    shape = dict(dim=256, depth=8, kernel_size=5, patch_size=2)
    macs = multiply_accumulates(**shape)["total"]
    assert model_gflops_per_image(shape) == pytest.approx(6 * macs / 1e9)
    assert 0.85 < model_gflops_per_image(shape) < 0.95  # ConvMixer-256/8 at p=2: ~148M MACs per image


def test_matmul_and_copy_rates_are_rates():
    assert math.isfinite(rate := matmul_gflops(torch.float32, n=128, repeats=3)) and rate > 0.1
    assert math.isfinite(rate := copy_gbytes_per_second(mib=4, repeats=3)) and rate > 0.1


def test_saved_bytes_count_what_the_backward_pass_keeps():
    shape = dict(dim=32, depth=2, kernel_size=3, patch_size=2, batch=8)
    fp32 = saved_bytes_per_step(shape)
    # the same graph as the official Sequential; a (batch, dim, 16, 16) fp32 activation is 256 KiB here
    assert fp32 == saved_bytes_per_step(shape, impl="official")
    assert fp32 > 2 * 6 * 8 * 32 * 16 * 16 * 4  # at least the convolution and BatchNorm inputs of both layers
    # activations grow with the batch, the weights do not
    assert 1.9 < saved_bytes_per_step({**shape, "batch": 16}) / fp32 < 2.0
    assert saved_bytes_per_step(shape, precision="bf16") < 0.6 * fp32  # most saved tensors are bf16 copies


def history(accuracies, seconds=10.0, images_per_second=100.0):
    return {"history": [{"epoch": i + 1, "test_accuracy": a, "epoch_seconds": seconds, "train_seconds": seconds / 2,
                         "train_images_per_second": images_per_second} for i, a in enumerate(accuracies)]}


def test_time_to_target_counts_every_epoch_up_to_the_first_that_reaches_it():
    s = summarise(history([0.5, 0.93, 0.91, 0.94]), gflop_per_image=1.0, matmul={"fp32": 100.0, "bf16": 200.0})
    assert s["reached_at_epoch"] == 2 and s["seconds_to_target"] == 20.0
    assert s["total_seconds"] == 40.0 and s["final_test_accuracy"] == 0.94
    assert s["model_gflops_per_second"] == pytest.approx(100.0)  # 100 img/s x 1 GFLOP
    assert s["of_bf16_matmul"] == pytest.approx(0.5) and s["of_fp32_matmul"] == pytest.approx(1.0)


def test_target_never_reached_is_said_so():
    s = summarise(history([0.5, 0.9]), 1.0, {"fp32": 1.0, "bf16": 1.0})
    assert s["reached_at_epoch"] is None and s["seconds_to_target"] is None


def test_official_loop_trains_and_reports_every_epoch():
    """The official script's loop (benchmarks.gpu) on a tiny model and an easy synthetic task."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()  # learnable from the first channel
    data = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    test = torch.utils.data.DataLoader(data, batch_size=64)
    torch.manual_seed(0)
    model = official_convmixer(16, 1, kernel_size=3, patch_size=2, n_classes=2)
    records = list(official_epochs(model, train, test, 4, lr_max=0.01, weight_decay=0.0,
                                   device=torch.device("cpu"), log=lambda *a: None))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["test_accuracy"] > 0.7  # chance is 0.5
    assert all(r["epoch_seconds"] >= r["train_seconds"] > 0 for r in records)
