"""A small training run, recorded before the library was reorganised, reproduced bit for bit.

``tests/golden_run.json`` holds the command-line flags of a fixed-seed run (ConvMixer-32/2 on
384 training images, 2 epochs, one thread, pad-crops and flips), the SHA-256 of its final weights and
its per-epoch losses and accuracies.  A change to the model, the data pipeline, the augmentation,
the schedule, the optimiser or the loop that changes what training computes changes the hash: a
refactor must leave it alone, and a deliberate change regenerates the file with
``python -m tests.test_golden_run --write`` and says why in its commit.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from convmixer.train import main as train_main

GOLDEN = Path(__file__).with_name("golden_run.json")
FLAGS = ["--preset", "tiny", "--train-subset", "384", "--test-subset", "128", "--epochs", "2",
         "--seed", "0", "--threads", "1"]
KEPT = ("epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def golden_run(out_dir: Path) -> dict:
    assert train_main(FLAGS + ["--out-dir", str(out_dir)]) == 0
    ckpt = torch.load(out_dir / "last.pt", weights_only=True)
    history = json.loads((out_dir / "history.json").read_text())
    return {"flags": FLAGS, "weights_sha256": weights_sha256(ckpt["model"]),
            "history": [{k: record[k] for k in KEPT} for record in history]}


def test_the_golden_run_is_reproduced_bit_for_bit(cifar_root, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    assert golden["flags"] == FLAGS
    assert golden_run(tmp_path) == golden


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_golden_run --write   (records a new golden run)")
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(golden_run(Path(d)), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
