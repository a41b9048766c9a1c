"""The benchmark harness's own arithmetic: what its tables and JSON are computed from.

The timings themselves are measurements, not tests; these check that the harness counts right.
"""
import pytest
import torch

from benchmarks import step
from benchmarks.gpu import official_epochs, summarise
from benchmarks.step import copy_gbytes_per_second, matmul_gflops, saved_bytes_per_step
from convmixer.reference import official_convmixer


def fake_clock(monkeypatch, durations):
    """time.perf_counter as the benchmarks see it: each pair of calls is one timing of the next duration."""
    ticks = iter([t for i, d in enumerate(durations) for t in (10.0 * i, 10.0 * i + d)])
    monkeypatch.setattr(step.time, "perf_counter", lambda: next(ticks))


def test_best_seconds_is_the_shortest_timing_after_a_warm_up_call(monkeypatch):
    calls = []
    fake_clock(monkeypatch, [3.0, 1.0, 2.0])
    assert step.best_seconds(lambda: calls.append(1), "cpu", repeats=3) == 1.0
    assert len(calls) == 4                                   # the warm-up is not timed


def test_rates_count_the_work_of_one_timed_call(monkeypatch):
    """2 n^3 FLOPs per n x n matrix product; a copy reads and writes every byte."""
    seconds = []
    monkeypatch.setattr(step, "best_seconds", lambda fn, device, repeats: (fn(), seconds.append(repeats), 0.5)[-1])
    assert matmul_gflops(torch.float32, n=64, repeats=3) == 2 * 64 ** 3 / 0.5 / 1e9
    assert copy_gbytes_per_second(mib=2, repeats=4) == 2 * 2 * 2 ** 20 / 0.5 / 1e9
    assert seconds == [3, 4]


def test_measure_reports_the_median_step_and_the_rate_it_implies(monkeypatch):
    seen = []

    def fake_step(x, y):
        seen.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last), tuple(y.shape)))
        return torch.tensor(1.0)

    fake_clock(monkeypatch, [0.75, 0.25, 0.5])                     # exact in binary
    m = step.measure(fake_step, torch.channels_last, batch=4, steps=3, warmup=2)
    assert len(seen) == 5 and set(seen) == {((4, 3, 32, 32), True, (4,))}   # 2 warm-up + 3 timed steps
    assert m["steps"] == 3 and m["step_seconds_median"] == 0.5 and m["step_seconds_min"] == 0.25
    assert m["images_per_second"] == 4 / 0.5
    assert m["cpu_seconds_per_step"] >= 0 and m["minor_faults_per_step"] >= 0


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
