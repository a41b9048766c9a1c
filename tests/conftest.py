import os
from pathlib import Path

import pytest

from convmixer.data import data_root


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The real CIFAR-10 copy ($CONVMIXER_DATA); CI always provides it, so there it must exist."""
    root = data_root()
    if not any((root / p).exists() for p in ("train", "cifar10-train-uint8.pt", "cifar-10-batches-py")):
        if os.environ.get("CI"):
            pytest.fail(f"CIFAR-10 not found under {root}: .ci/run must extract it and set CONVMIXER_DATA")
        pytest.skip("CIFAR-10 not available: set CONVMIXER_DATA (see README)")
    return root
