import os
from pathlib import Path

import pytest
import torch

from convmixer.checkpoint import atomic_save
from convmixer.data import data_root as default_data_root

from helpers import N_TEST, N_TRAIN  # the synthetic set's size (re-exported: tests import it from here)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A synthetic CIFAR-10 cache folder (random uint8 images, N_TRAIN + N_TEST): fast, and the same in every test."""
    root = tmp_path_factory.mktemp("data")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        atomic_save({"images": torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     "labels": torch.randint(0, 10, (n,), generator=g)}, root / f"cifar10-{split}-uint8.pt")
    return root


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The real CIFAR-10 copy ($CONVMIXER_DATA); CI always provides it, so there it must exist."""
    root = default_data_root()
    if not any((root / p).exists() for p in ("train", "cifar10-train-uint8.pt", "cifar-10-batches-py")):
        if os.environ.get("CI"):
            pytest.fail(f"CIFAR-10 not found under {root}: .ci/run must extract it and set CONVMIXER_DATA")
        pytest.skip("CIFAR-10 not available: set CONVMIXER_DATA (see README)")
    return root
