"""The streaming ImageFolder path: an ImageNet-layout folder through DataLoader workers into the trainer."""
import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.imagenet import imagefolder_loaders
from convmixer.train import Trainer, TrainConfig


def make_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=(40, 48), tinted=False):
    """An ImageNet-layout folder of noise images; ``tinted``: class c's images lean to colour channel c,
    so that a model can learn to tell the classes apart."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                if tinted:
                    arr = (arr // 2).astype(np.uint8)
                    arr[..., k % 3] += 127
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


def imagefolder_config(root, out_dir, **overrides) -> TrainConfig:
    return TrainConfig(**{**dict(dataset="imagefolder", data_root=str(root), n_classes=3, image_size=32, workers=0,
                                 dim=16, depth=1, kernel_size=3, patch_size=4, batch_size=6, epochs=1,
                                 crop="resized", ra_n=0, lr_max=0.01, out_dir=str(out_dir)), **overrides})


def test_the_trainer_learns_from_an_imagefolder(tmp_path):
    """Classes a model can tell apart by colour, through the folder loader (resized crops, flips) into the
    trainer: after a few epochs it classifies the held-out val/ images (chance is 1/3)."""
    root = make_folder(tmp_path / "data", per_class=12, tinted=True)
    history = Trainer(imagefolder_config(root, tmp_path / "run", epochs=4), screen=False).fit()
    assert len(history) == 4 and history[-1]["test_accuracy"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_mixup_cutmix_and_randaugment_run_on_an_imagefolder(tmp_path):
    root = make_folder(tmp_path / "data")
    cfg = imagefolder_config(root, tmp_path / "run", ra_n=1, ra_m=5, mixup=0.5, cutmix=0.5)
    history = Trainer(cfg, screen=False).fit()
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))


@pytest.mark.parametrize("setting, message", [(dict(crop="pad"), "always crops with RandomResizedCrop"),
                                              (dict(crop="none"), "always crops with RandomResizedCrop"),
                                              (dict(flip=False), "always flips")])
def test_settings_the_folder_loader_cannot_apply_are_refused_in_python_too(setting, message, tmp_path):
    """Not only the command line: a TrainConfig built in Python refuses them, instead of training with
    resized crops and flips it did not ask for."""
    with pytest.raises(ValueError, match=message):
        imagefolder_config(tmp_path, tmp_path / "run", **setting)


def test_imagefolder_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="needs --data-root"):
        TrainConfig(dataset="imagefolder", crop="resized")
    with pytest.raises(ValueError, match="--mixup/--cutmix need --dataset imagefolder"):
        TrainConfig(mixup=0.5)
    root = make_folder(tmp_path / "data")
    cfg = imagefolder_config(root, tmp_path / "run", n_classes=1000)
    with pytest.raises(ValueError, match="pass --n-classes 3"):
        Trainer(cfg, screen=False)
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        imagefolder_loaders(tmp_path / "nothing", 4, device="cpu")


def batch_of(n=8, n_classes=5, seed=0):
    """(image, label) pairs with distinct labels for neighbours, as a Dataset would give them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % n_classes
    return [(x[i], int(y[i])) for i in range(n)], x, y


def test_mixup_targets_are_the_mixing_weights_of_the_images():
    from convmixer.imagenet import mix_collate

    torch.manual_seed(0)
    pairs, x, y = batch_of()
    mixed, target = mix_collate(5, mixup=0.5, cutmix=0.0)(pairs)
    assert target.shape == (8, 5) and torch.allclose(target.sum(1), torch.ones(8))
    lam = target[torch.arange(8), y]  # the weight of each image's own class
    assert torch.allclose(lam, lam[0].expand(8)) and 0 < lam[0] < 1  # one lambda per batch
    partner = torch.roll(torch.arange(8), 1)  # torchvision mixes each image with the previous one
    assert torch.allclose(target[torch.arange(8), y[partner]], 1 - lam)
    torch.testing.assert_close(mixed, lam[0] * x + (1 - lam[0]) * x[partner])


def test_cutmix_targets_are_the_areas_of_the_pasted_boxes():
    from convmixer.imagenet import mix_collate

    torch.manual_seed(1)
    pairs, x, y = batch_of()
    mixed, target = mix_collate(5, mixup=0.0, cutmix=0.5)(pairs)
    assert torch.allclose(target.sum(1), torch.ones(8))
    partner = torch.roll(torch.arange(8), 1)
    pasted = (mixed == x[partner]).all(1) & (mixed != x).any(1)  # (N, H, W): pixels from the partner
    own = (mixed == x).all(1)
    assert (pasted | own).all()  # every pixel is the image's own or its partner's, nothing blended
    area = pasted.flatten(1).float().mean(1)  # the box's share of each image, the same box in all
    assert torch.allclose(area, area[0].expand(8)) and 0 < area[0] < 1
    torch.testing.assert_close(target[torch.arange(8), y], 1 - area)
    torch.testing.assert_close(target[torch.arange(8), y[partner]], area)


def test_imagefolder_applies_flip_and_refuses_the_cifar_crops(tmp_path):
    from torchvision.transforms import v2

    from convmixer.imagenet import check_imagefolder_crop, train_transform

    has_flip = [any(isinstance(t, v2.RandomHorizontalFlip) for t in train_transform(32, flip=f).transforms)
                for f in (True, False)]
    assert has_flip == [True, False]
    check_imagefolder_crop("resized")  # the one crop a folder of photos gets
    for crop in ("pad", "none"):
        with pytest.raises(ValueError, match=f"crop='{crop}' cannot be applied.*use crop='resized'"):
            check_imagefolder_crop(crop)
    with pytest.raises(ValueError, match="crop='pad'"):
        imagefolder_loaders(make_folder(tmp_path), 4, device="cpu", workers=0, crop="pad")
