"""The paper's ImageNet recipe (``--preset imagenet``) against what timm's train.py ran.

Its RandAugment is timm's ``rand-m9-mstd0.5-inc1`` as timm's transform factory builds it (same
operations, magnitudes, noise, probabilities and fill, and the same images under the same seeds),
and its AdamW, like timm's optimizer factory, leaves every 1-D parameter (biases, norm weights)
without weight decay; CIFAR-10 recipes keep one group with weight decay on every parameter.
"""
import random
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.config import RECIPES, parse_config, recipe_config
from convmixer.imagenet import IMAGENET_MEAN, IMAGENET_STD, rand_augment_spec, train_transform
from convmixer.train import Trainer, optimizer_groups

timm = pytest.importorskip("timm")
from timm.data.auto_augment import RandAugment  # noqa: E402

PAPER_AA = "rand-m9-mstd0.5-inc1"  # the README's --aa


def rand_augment_of(transform) -> RandAugment:
    found = [t for t in transform.transforms if isinstance(t, RandAugment)]
    assert len(found) == 1, transform
    return found[0]


def timm_factory_rand_augment(image_size: int = 224) -> RandAugment:
    """The RandAugment inside timm's own training transform for the paper's --aa, as timm's train.py
    asks for it (its --train-interpolation defaults to "random": bilinear or bicubic, drawn per image)."""
    from timm.data import create_transform

    return rand_augment_of(create_transform(image_size, is_training=True, auto_augment=PAPER_AA,
                                            interpolation="random", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                            re_prob=0.25, re_mode="pixel"))


def describe(ra: RandAugment) -> dict:
    return {"num_layers": ra.num_layers, "choice_weights": ra.choice_weights,
            "ops": [(op.name, op.prob, op.magnitude, op.magnitude_std, op.magnitude_max, op.hparams, op.kwargs)
                    for op in ra.ops]}


def imagenet_rand_augment(image_size: int = 224) -> RandAugment:
    cfg = recipe_config("imagenet", data_root="imagenet")
    return rand_augment_of(train_transform(image_size, cfg.ra_n, cfg.ra_m, cfg.erase_p, cfg.scale_min, cfg.flip))


def test_the_recipe_names_the_papers_rand_augment():
    cfg = recipe_config("imagenet", data_root="imagenet")
    assert (cfg.ra_n, cfg.ra_m) == (2, 9)
    assert rand_augment_spec(cfg.ra_n, cfg.ra_m) == "rand-m9-n2-mstd0.5-inc1"  # timm's default n is 2


@pytest.mark.parametrize("image_size", [224, 32])
def test_imagenet_rand_augment_is_timms_factory_output(image_size):
    ours, theirs = imagenet_rand_augment(image_size), timm_factory_rand_augment(image_size)
    assert describe(ours) == describe(theirs)
    names = [op.name for op in ours.ops]
    assert "Rotate" in names and "SolarizeIncreasing" in names and "Solarize" not in names  # inc1
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in ours.ops} == {(0.5, 9, 0.5)}
    assert ours.num_layers == 2


def test_imagenet_rand_augment_gives_timms_images_under_the_same_seed():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    ours, theirs = imagenet_rand_augment(64), timm_factory_rand_augment(64)
    outputs = []
    for ra in (ours, theirs):
        random.seed(3), np.random.seed(3)
        outputs.append([np.asarray(ra(image)) for _ in range(20)])
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))
    assert sum(not np.array_equal(a, np.asarray(image)) for a in outputs[0]) > 10  # it does change images


def test_rotations_reach_27_degrees_at_magnitude_9():
    ra = imagenet_rand_augment()
    rotate = next(op for op in ra.ops if op.name == "Rotate")
    assert abs(rotate.level_fn(rotate.magnitude, rotate.hparams)[0]) == pytest.approx(27.0)


def test_magnitude_above_timms_10_is_refused():
    with pytest.raises(ValueError, match="0 to 10"):
        train_transform(32, ra_n=2, ra_m=12)


def test_without_timm_the_recipe_says_pip_install_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm.data.auto_augment", None)  # import fails as if timm were absent
    with pytest.raises(ImportError, match="pip install timm"):
        train_transform(32, ra_n=2, ra_m=9)
    train_transform(32, ra_n=0)  # RandAugment off: no timm needed


# -- weight decay ---------------------------------------------------------------------------------
def test_only_the_imagenet_recipe_exempts_1d_parameters():
    assert RECIPES["imagenet"]["wd_exempt_1d"] is True
    assert parse_config(["--preset", "imagenet", "--data-root", "x"]).wd_exempt_1d
    assert not parse_config(["--preset", "imagenet", "--data-root", "x", "--no-wd-exempt-1d"]).wd_exempt_1d
    for name in RECIPES:
        if name != "imagenet":
            assert recipe_config(name).wd_exempt_1d is False, name
    assert parse_config([]).wd_exempt_1d is False


def groups_of(optimizer):
    return [(g["weight_decay"], [tuple(p.shape) for p in g["params"]]) for g in optimizer.param_groups]


def test_cifar10_trainer_decays_every_parameter(data_root, tmp_path):
    trainer = Trainer(recipe_config("tiny", data_root=str(data_root), out_dir=str(tmp_path / "run")),
                      screen=False)
    groups = trainer.optimizer.param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == trainer.cfg.weight_decay
    assert len(groups[0]["params"]) == len(list(trainer.model.parameters()))


def test_exempting_trainer_puts_every_1d_parameter_in_a_zero_decay_group(data_root, tmp_path):
    trainer = Trainer(recipe_config("tiny", data_root=str(data_root), out_dir=str(tmp_path / "run"),
                                    weight_decay=0.05, wd_exempt_1d=True), screen=False)
    (wd0, no_decay), (wd1, decay) = groups_of(trainer.optimizer)
    assert (wd0, wd1) == (0.0, 0.05)
    assert no_decay and all(len(s) == 1 for s in no_decay) and all(len(s) > 1 for s in decay)
    one_d = {id(p) for p in trainer.model.parameters() if p.ndim == 1}
    assert {id(p) for p in trainer.optimizer.param_groups[0]["params"]} == one_d
    assert len(no_decay) + len(decay) == len(list(trainer.model.parameters()))
    # every bias and every norm weight is among them
    names = {n for n, p in trainer.model.named_parameters() if id(p) in one_d}
    assert all(n in names for n, _ in trainer.model.named_parameters() if n.endswith(".bias"))
    assert any("norm" in n or "bn" in n for n in names)


def test_exemption_matches_timms_optimizer_factory():
    from timm.optim import param_groups_weight_decay

    from convmixer import ConvMixer

    model = ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=4, n_classes=10)
    cfg = recipe_config("tiny", weight_decay=2e-5, wd_exempt_1d=True)
    ours = [(g["weight_decay"], [id(p) for p in g["params"]]) for g in optimizer_groups(model, cfg)]
    theirs = [(g["weight_decay"], [id(p) for p in g["params"]]) for g in param_groups_weight_decay(model, 2e-5)]
    assert ours == theirs
