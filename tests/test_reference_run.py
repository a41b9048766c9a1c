"""The checkpoint shipped with the book reproduces the test accuracy stored beside it."""
import json
from pathlib import Path

import pytest

from convmixer.data import BatchLoader
from convmixer.data import load_cifar10
from convmixer.train import evaluate
from convmixer.checkpoint import load_model

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


@pytest.mark.slow  # all 10,000 test images through ConvMixer-256/8: over a minute on two cores
@pytest.mark.parametrize("stem", ["convmixer-paper"])
def test_shipped_paper_checkpoint_reproduces_its_float32_accuracy(cifar_root, stem):
    """The official script's model, trained with the cpu-paper preset (bf16 autocast), evaluated as readers load it:
    float32 weights, float32 arithmetic, all 10,000 test images. Its stated accuracy is that number."""
    import dataclasses

    from convmixer.config import recipe_config

    model, ckpt = load_model(RESULTS / f"{stem}.pt")
    history = json.loads((RESULTS / f"{stem}-history.json").read_text())
    meta = json.loads((RESULTS / f"{stem}-meta.json").read_text())
    assert ckpt["history"] == history
    assert (ckpt["model_config"]["dim"], ckpt["model_config"]["depth"], ckpt["model_config"]["kernel_size"],
            ckpt["model_config"]["patch_size"]) == (256, 8, 5, 2)
    # the named preset is exactly the shipped run's recipe (settings that change the result)
    from convmixer.checkpoint import RUNTIME_FIELDS

    preset = dataclasses.asdict(recipe_config("cpu-paper"))
    assert {k: v for k, v in ckpt["train_config"].items() if k not in RUNTIME_FIELDS} == \
        {k: preset[k] for k in ckpt["train_config"] if k not in RUNTIME_FIELDS}
    assert meta["final_test_accuracy"] == meta["test_accuracy_fp32"]
    x, y = load_cifar10("test")
    assert len(y) == 10_000
    loader = BatchLoader(x, y, 500, train=False, channels_last=ckpt["train_config"]["channels_last"])
    accuracy = evaluate(model, loader)["accuracy"]  # no autocast: float32
    assert accuracy == pytest.approx(meta["final_test_accuracy"], abs=3e-4)
    assert history[-1]["epoch"] == ckpt["train_config"]["epochs"] == len(history)


def test_shipped_checkpoints_hold_no_paths_of_the_machine():
    import re

    import torch

    absolute = re.compile(r'"(/(?:home|root|tmp|work|Users|var|mnt|opt)/[^"]*)"')
    for path in sorted(RESULTS.glob("*.pt")):
        ckpt = torch.load(path, weights_only=True)
        assert not absolute.findall(repr(ckpt["train_config"]).replace("'", '"')), path.name


@pytest.mark.parametrize("stem", ["convmixer-cpu", "convmixer-paper"])
def test_shipped_run_configs_still_build_a_config_that_may_resume_them(stem):
    """Configs written before the library's refactors (old field names and values included) still give a
    TrainConfig, and the resume rules accept it unchanged and refuse a changed recipe."""
    import dataclasses

    from convmixer.checkpoint import CheckpointError, load_checkpoint
    from convmixer.config import TrainConfig
    from convmixer.checkpoint import check_resume

    ckpt = load_checkpoint(RESULTS / f"{stem}.pt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})
    assert check_resume(ckpt, cfg) == []
    assert check_resume(ckpt, dataclasses.replace(cfg, epochs=cfg.epochs + 1))[0].startswith("resuming a")
    with pytest.raises(CheckpointError, match="lr_max"):
        check_resume(ckpt, dataclasses.replace(cfg, lr_max=cfg.lr_max * 2))
