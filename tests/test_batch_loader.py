"""The on-device loader: every image once per epoch with its label, reproducible epochs, normalisation."""
import torch

from convmixer.augment import Augment
from convmixer.data import BatchLoader
from convmixer.data import MEAN, STD, normalize


def gen(seed=1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_data(n=300):
    g = gen(5)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def test_loader_epoch_visits_every_image_once_with_its_label():
    x, y = small_data()
    loader = BatchLoader(x, y, 64, train=True, augment=Augment(flip=False, ra_n=0))
    seen = torch.cat([labels for _, labels in loader])
    assert len(loader) == 300 // 64 and len(seen) == 64 * (300 // 64)  # drop_last, as the official loader
    # without augmentation each batch is normalize() of the images it names: find them by content
    for xb, yb in loader:
        norm = normalize(x)
        match = (xb[:, None] == norm[None]).flatten(2).all(2)  # (batch, data set)
        assert (match.sum(1) == 1).all()
        assert torch.equal(y[match.float().argmax(1)], yb)


def test_test_loader_is_in_order_and_complete():
    x, y = small_data(130)
    batches = list(BatchLoader(x, y, 64, train=False))
    assert [len(b[0]) for b in batches] == [64, 64, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), normalize(x))
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_loader_epochs_are_reproducible_and_differ():
    x, y = small_data()
    aug = Augment(crop="pad", flip=True, ra_n=1, ra_m=9)

    def epoch(e):
        loader = BatchLoader(x, y, 50, train=True, augment=aug, seed=3)
        loader.set_epoch(e)
        return torch.cat([b for b, _ in loader])

    assert torch.equal(epoch(2), epoch(2))  # resuming at epoch 2 sees the same batches
    assert not torch.equal(epoch(2), epoch(3))


def test_loader_leaves_the_data_set_alone():
    x, y = small_data()
    before = x.clone()
    for _ in BatchLoader(x, y, 64, train=True, augment=Augment(crop="pad", ra_n=2, ra_m=12, erase_p=0.5)):
        pass
    assert torch.equal(x, before)


def test_normalize_matches_its_definition():
    x, _ = small_data(20)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(normalize(x), (x.float() / 255 - mean) / std)
