"""The checkpoint shipped with the book reproduces the test accuracy stored beside it."""
import json
from pathlib import Path

import pytest

from convmixer.data import BatchLoader, load_cifar10
from convmixer.train import evaluate, load_model

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


def test_shipped_cpu_checkpoint_reproduces_its_accuracy(cifar_root):
    model, ckpt = load_model(RESULTS / "convmixer-cpu.pt")
    history = json.loads((RESULTS / "convmixer-cpu-history.json").read_text())
    meta = json.loads((RESULTS / "convmixer-cpu-meta.json").read_text())
    assert ckpt["history"] == history
    assert meta["final_test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=5e-5)
    x, y = load_cifar10("test")
    assert len(y) == 10_000  # the whole test set, as in training
    loader = BatchLoader(x, y, 500, train=False, channels_last=ckpt["train_config"]["channels_last"])
    accuracy = evaluate(model, loader)["accuracy"]
    # the same images, weights and arithmetic: equal up to a few ties decided by thread scheduling
    assert accuracy == pytest.approx(history[-1]["test_accuracy"], abs=3e-4)
    assert history[-1]["epoch"] == ckpt["train_config"]["epochs"]


def test_shipped_files_hold_no_paths_of_the_machine_that_made_them():
    """Results and notebooks travel to other machines: an absolute path in them would be this machine's."""
    import re

    import torch

    repo = RESULTS.parents[1]
    absolute = re.compile(r'"(/(?:home|root|tmp|work|Users|var|mnt|opt)/[^"]*)"')
    files = sorted(RESULTS.rglob("*.json")) + sorted((repo / "book").glob("*.ipynb"))
    found = {str(f.relative_to(repo)): absolute.findall(f.read_text()) for f in files}
    assert {f: paths for f, paths in found.items() if paths} == {}
    ckpt = torch.load(RESULTS / "convmixer-cpu.pt", weights_only=True)
    assert not absolute.findall(repr(ckpt["train_config"]).replace("'", '"'))
