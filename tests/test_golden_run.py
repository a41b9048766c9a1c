"""A small fixed-seed training run, recorded once, reproduced to within floating-point rounding.

``tests/golden_run.json`` holds the command-line flags of a fixed-seed run (ConvMixer-32/2 on
384 training images, 2 epochs, one thread, flips) and its per-epoch losses and accuracies;
``tests/golden_run.pt`` holds its final weights (4,970 numbers).  A change to the model, the data
pipeline, the augmentation, the schedule, the optimiser or the loop that changes what training computes
moves them far outside the tolerances below: a refactor must leave them alone, and a deliberate change
regenerates both files with ``python -m tests.test_golden_run --write`` and says why in its commit.

Why tolerances and not a hash of the weights.  The same code, the same torch and the same seed give
bit-identical weights on one machine, but not across x86 CPUs: the kernels torch picks depend on the
vector instructions a CPU has, and they add in different orders.  The first recording of this run
differs from this project's CI machine only in the eighth significant digit of one loss, yet every
byte of the weights hash differed.  Measured on one AMD EPYC by forcing torch's AVX2 and its
plain kernels instead of AVX-512 (``ATEN_CPU_CAPABILITY``): the weights move by at most 1.3e-6, 4% of
the tolerance below, while the same run with the learning rate 1% higher moves them 167 times the
tolerance.  ``test_a_different_run_does_not_pass_for_the_golden_one`` checks that a change is seen.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from convmixer.train import main as train_main

GOLDEN = Path(__file__).with_name("golden_run.json")
GOLDEN_WEIGHTS = GOLDEN.with_suffix(".pt")
FLAGS = ["--preset", "tiny", "--train-subset", "384", "--test-subset", "128", "--epochs", "2",
         "--seed", "0", "--threads", "1"]
KEPT = ("epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
WEIGHTS_RTOL, WEIGHTS_ATOL = 1e-4, 1e-5   # |a - b| <= atol + rtol |b| for every weight
METRICS_REL = 1e-5


def golden_run(out_dir: Path, flags: list[str] = FLAGS) -> tuple[dict, dict[str, torch.Tensor]]:
    """Train with ``flags`` into ``out_dir``; return (flags and per-epoch metrics, final weights)."""
    assert train_main(flags + ["--out-dir", str(out_dir)]) == 0
    ckpt = torch.load(out_dir / "last.pt", weights_only=True)
    history = json.loads((out_dir / "history.json").read_text())
    record = {"flags": flags, "history": [{k: epoch[k] for k in KEPT} for epoch in history]}
    return record, {name: t.detach().cpu().clone() for name, t in ckpt["model"].items()}


def assert_history_matches_golden(record: dict) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert record["flags"] == golden["flags"]
    assert len(record["history"]) == len(golden["history"])
    for epoch, expected in zip(record["history"], golden["history"]):
        assert epoch == pytest.approx(expected, rel=METRICS_REL), f"epoch {expected['epoch']}"


def assert_weights_match_golden(weights: dict[str, torch.Tensor]) -> None:
    golden_weights = torch.load(GOLDEN_WEIGHTS, weights_only=True)
    assert sorted(weights) == sorted(golden_weights)
    for name, tensor in golden_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=WEIGHTS_RTOL, atol=WEIGHTS_ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_golden_run_is_reproduced(cifar_root, tmp_path):
    assert json.loads(GOLDEN.read_text())["flags"] == FLAGS
    record, weights = golden_run(tmp_path)
    assert_history_matches_golden(record)
    assert_weights_match_golden(weights)


def test_a_different_run_does_not_pass_for_the_golden_one(cifar_root, tmp_path):
    """The tolerances are tight enough to see a change: the same run with a 1% higher peak lr fails."""
    record, weights = golden_run(tmp_path, FLAGS + ["--lr-max", "0.0101"])
    record["flags"] = FLAGS
    with pytest.raises(AssertionError):
        assert_history_matches_golden(record)
    with pytest.raises(AssertionError):
        assert_weights_match_golden(weights)


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_golden_run --write   (records a new golden run)")
    with tempfile.TemporaryDirectory() as d:
        record, weights = golden_run(Path(d))
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    torch.save(weights, GOLDEN_WEIGHTS)
    print(f"wrote {GOLDEN} and {GOLDEN_WEIGHTS}")
