"""The streaming ImageFolder path: an ImageNet-layout folder through DataLoader workers into the trainer."""
import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.imagenet import imagefolder_loaders
from convmixer.train import Trainer, TrainConfig


def make_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=(40, 48)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.JPEG", format="JPEG")
    return root


def test_loaders_give_normalised_crops_and_mixed_labels(tmp_path):
    root = make_folder(tmp_path)
    train, val, classes = imagefolder_loaders(root, 4, device="cpu", image_size=32, workers=0, mixup=0.5,
                                              cutmix=0.5)
    assert classes == ["cat", "dog", "fox"]
    x, y = next(iter(train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (4, 3) and torch.allclose(y.sum(1), torch.ones(4))  # MixUp/CutMix: class probabilities
    xv, yv = next(iter(val))
    assert xv.shape == (4, 3, 32, 32) and yv.dtype == torch.int64
    assert len(train) == 18 // 4 and len(val) == -(-18 // 4)


def test_trainer_runs_on_an_imagefolder(tmp_path):
    root = make_folder(tmp_path / "data")
    cfg = TrainConfig(dataset="imagefolder", data_root=str(root), n_classes=3, image_size=32, workers=0,
                      dim=16, depth=1, kernel_size=3, patch_size=4, batch_size=6, epochs=1, ra_n=1, ra_m=5,
                      mixup=0.5, cutmix=0.5, out_dir=str(tmp_path / "run"))
    history = Trainer(cfg, screen=False).fit()
    assert len(history) == 1 and 0 <= history[0]["test_accuracy"] <= 1


def test_imagefolder_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="needs --data-root"):
        TrainConfig(dataset="imagefolder")
    with pytest.raises(ValueError, match="--mixup/--cutmix need --dataset imagefolder"):
        TrainConfig(mixup=0.5)
    root = make_folder(tmp_path / "data")
    cfg = TrainConfig(dataset="imagefolder", data_root=str(root), n_classes=1000, image_size=32, workers=0,
                      dim=16, depth=1, kernel_size=3, patch_size=4, batch_size=6, epochs=1,
                      out_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="pass --n-classes 3"):
        Trainer(cfg, screen=False)
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        imagefolder_loaders(tmp_path / "nothing", 4, device="cpu")
