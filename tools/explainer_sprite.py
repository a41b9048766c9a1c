"""Write the explainer's test images: the first ten CIFAR-10 test images of each class as one PNG.

    python tools/explainer_sprite.py          # -> book/explainer/sprite.png + sprite.json

The sprite is committed, so building the site needs no CIFAR-10.  Row r holds class r (in
``convmixer.data.CLASSES`` order), column c its c-th image in test-set order; each tile is 32 x 32
pixels, exactly the model's input.  sprite.json lists every tile's test-set index, label and place.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from convmixer.data import CLASSES, load_cifar10

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "explainer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    images, labels = load_cifar10("test")
    n, tile = args.per_class, images.shape[-1]
    sheet = np.zeros((len(CLASSES) * tile, n * tile, 3), dtype=np.uint8)
    entries = []
    for label in range(len(CLASSES)):
        indices = (labels == label).nonzero().flatten()[:n].tolist()
        for col, index in enumerate(indices):
            sheet[label * tile:(label + 1) * tile, col * tile:(col + 1) * tile] = images[index].permute(1, 2, 0).numpy()
            entries.append({"index": index, "label": label, "class": CLASSES[label], "x": col * tile, "y": label * tile})
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out / "sprite.png", optimize=True)
    meta = {"source": "CIFAR-10 test set", "tile": tile, "classes": list(CLASSES), "images": entries}
    (args.out / "sprite.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(entries)} images to {args.out / 'sprite.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
