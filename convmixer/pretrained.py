"""The official ImageNet ConvMixer weights in the library's model.

Two public layouts exist, and both map one-to-one onto :class:`convmixer.model.ConvMixer`:

* the paper's release (locuslab/convmixer README, ``convmixer_1536_20_ks9_p7.pth.tar`` etc.):
  the compact ``nn.Sequential``, so parameters are named by position --
  ``0`` patch conv, ``2`` its BatchNorm, ``3+i`` layer i (``.0.fn.0`` depthwise conv,
  ``.0.fn.2`` its BatchNorm, ``.1`` pointwise conv, ``.3`` its BatchNorm), ``d+5`` the linear head;
* timm's ``convmixer_1536_20``, ``convmixer_768_32``, ``convmixer_1024_20_ks9_p14``:
  the same modules grouped as ``stem.*``, ``blocks.i.*`` and ``head``.

The library names them by meaning: ``patch_embed.proj``, ``patch_embed.norm``,
``layers.i.spatial.conv``, ``layers.i.spatial.norm``, ``layers.i.channel.conv``,
``layers.i.channel.norm``, ``head``.  The mapping is one table, :data:`MODULE_NAMES` (below);
the architecture (h, d, k, p, classes) is read off the tensor shapes.  The activation cannot be:
it is the named architecture's when the shapes are one of :data:`convmixer.model.ARCHITECTURES`
(ReLU for 768/32), GELU otherwise, unless the caller says.
"""
from __future__ import annotations

import argparse
import os
import re

import torch

from .model import ARCHITECTURES, ConvMixer


# -- one table: where each of the library's weights lives in the two outside layouts ---------------
# The library names a module by what it does (layers.3.spatial.conv).  "official": the paper's
# nn.Sequential (convmixer.reference.official_convmixer, and the released ImageNet checkpoints), named
# by position: layer i is entry 3 + i and the head d + 5.  "timm": timm's ConvMixer, which groups them
# as stem, blocks.i and head.  convmixer.reference (library -> official) and this module (official or
# timm -> library) both rename through module_names, so there is one mapping to check.
LAYOUTS = ("official", "timm")

#: library module, its name in the official Sequential, its name in timm ({i}: layer index,
#: {j} = 3 + i: the layer's position in the Sequential, {head} = d + 5: the head's position).
MODULE_NAMES = (
    ("patch_embed.proj", "0", "stem.0"),
    ("patch_embed.norm", "2", "stem.2"),
    ("layers.{i}.spatial.conv", "{j}.0.fn.0", "blocks.{i}.0.fn.0"),
    ("layers.{i}.spatial.norm", "{j}.0.fn.2", "blocks.{i}.0.fn.2"),
    ("layers.{i}.channel.conv", "{j}.1", "blocks.{i}.1"),
    ("layers.{i}.channel.norm", "{j}.3", "blocks.{i}.3"),
    ("head", "{head}", "head"),
)


def module_names(depth: int, layout: str) -> dict[str, str]:
    """Library module name -> its name in ``layout`` ("official" or "timm"), for a depth-``depth`` ConvMixer.

    >>> module_names(8, "official")["layers.0.spatial.conv"], module_names(8, "timm")["head"]
    ('3.0.fn.0', 'head')
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    column = 1 + LAYOUTS.index(layout)
    names = {}
    for row in MODULE_NAMES:
        for i in range(depth) if "{i}" in row[0] else [0]:
            where = dict(i=i, j=3 + i, head=depth + 5)
            names[row[0].format(**where)] = row[column].format(**where)
    return names


def rename_keys(keys, renames: dict[str, str]) -> dict[str, str]:
    """Each state-dict key (``module.parameter``) -> the same parameter under its renamed module.

    A key whose module ``renames`` does not name raises ``KeyError``, naming the key.
    """
    out = {}
    for key in keys:
        module, _, parameter = key.rpartition(".")
        if module not in renames:
            raise KeyError(f"{key!r} is not a ConvMixer state-dict key")
        out[key] = f"{renames[module]}.{parameter}"
    return out

# Where a reader with internet gets the weights (the paper's README; timm's hub names).
OFFICIAL_RELEASE = {
    "convmixer_1536_20": "https://github.com/tmp-iclr/convmixer/releases/download/v1.0/convmixer_1536_20_ks9_p7.pth.tar",
    "convmixer_768_32": "https://github.com/tmp-iclr/convmixer/releases/download/v1.0/convmixer_768_32_ks7_p7_relu.pth.tar",
    "convmixer_1024_20_ks9_p14": "https://github.com/tmp-iclr/convmixer/releases/download/v1.0/convmixer_1024_20_ks9_p14.pth.tar",
}
# Each named architecture's activation, where it is not GELU (read from ARCHITECTURES, not restated).
ACTIVATION = {name: arch["activation"] for name, arch in ARCHITECTURES.items() if "activation" in arch}


def detect_layout(state_dict: dict) -> str:
    """"timm", "official" or "convmixer" (this library), from the parameter names."""
    keys = set(state_dict)
    if "stem.0.weight" in keys:
        return "timm"
    if "0.weight" in keys and "2.running_mean" in keys:
        return "official"
    if "patch_embed.proj.weight" in keys:
        return "convmixer"
    raise ValueError("unrecognised ConvMixer state dict: expected timm names (stem.0.weight), the official "
                     f"nn.Sequential's (0.weight) or this library's (patch_embed.proj.weight); got e.g. {sorted(keys)[:4]}")


def _strip(state_dict: dict) -> dict:
    """Unwrap {"state_dict": ...} and drop the "module." prefix nn.DataParallel/DDP add."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    return {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}


def depth_of(state_dict: dict, layout: str) -> int:
    if layout == "timm":
        return 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    if layout == "official":
        return sum(1 for k in state_dict if re.fullmatch(r"\d+\.1\.weight", k))
    return 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layers."))


def to_library_names(state_dict: dict) -> dict:
    """Rename a timm or official state dict to this library's parameter names (tensors shared, not copied)."""
    state_dict = _strip(state_dict)
    layout = detect_layout(state_dict)
    if layout == "convmixer":
        return dict(state_dict)
    to_library = {old: new for new, old in module_names(depth_of(state_dict, layout), layout).items()}
    out, unused = {}, []
    for k, v in state_dict.items():
        module, _, parameter = k.rpartition(".")
        if module in to_library:
            out[f"{to_library[module]}.{parameter}"] = v
        else:
            unused.append(k)
    if unused:
        raise ValueError(f"{len(unused)} parameters have no place in a ConvMixer: {sorted(unused)[:5]}")
    return out


def matching_architecture(config: dict) -> str | None:
    """The name of the :data:`~convmixer.model.ARCHITECTURES` entry with this h, d, k, p, classes and
    input channels (its activation aside), or None."""
    shape = {k: v for k, v in config.items() if k != "activation"}
    for name, arch in ARCHITECTURES.items():
        if shape == {"in_channels": 3, **{k: v for k, v in arch.items() if k != "activation"}}:
            return name
    return None


def config_from_state_dict(state_dict: dict, activation: str | None = None) -> dict:
    """ConvMixer arguments read off the shapes: h, C, p from the patch conv, k from a depthwise kernel.

    Weights do not record their activation.  ``activation=None`` (the default) takes the named
    architecture's when the shapes match one (ReLU for ConvMixer-768/32, whose official and timm
    weights were trained with it) and GELU, the paper's, otherwise; a string overrides that.
    """
    sd = to_library_names(state_dict)
    h, c, p, _ = sd["patch_embed.proj.weight"].shape
    config = dict(dim=h, depth=depth_of(sd, "convmixer"), kernel_size=sd["layers.0.spatial.conv.weight"].shape[-1],
                  patch_size=p, n_classes=sd["head.weight"].shape[0], in_channels=c)
    if activation is None:
        activation = ACTIVATION.get(matching_architecture(config), "gelu")
    return {**config, "activation": activation}


def load_pretrained(source: str | os.PathLike | dict, activation: str | None = None) -> ConvMixer:
    """A ConvMixer with the weights of a timm or official checkpoint (a file or a state dict).

    Files are read with ``torch.load(weights_only=True)``; ``argparse.Namespace`` (the training
    arguments timm stores beside the weights) is the one extra type allowed.  The activation is
    the named architecture's when the shapes match one (so a ConvMixer-768/32 file gets ReLU
    without being told), else GELU; pass ``activation`` to choose it yourself
    (see :func:`config_from_state_dict`).
    """
    if not isinstance(source, dict):
        with torch.serialization.safe_globals([argparse.Namespace]):
            source = torch.load(source, map_location="cpu", weights_only=True)
    sd = to_library_names(source)
    model = ConvMixer(**config_from_state_dict(sd, activation))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def from_timm(name: str) -> ConvMixer:
    """Download timm's pretrained ``name`` (needs internet and ``pip install timm``) into the library's model."""
    import timm

    return load_pretrained(timm.create_model(name, pretrained=True).state_dict(), ACTIVATION.get(name, "gelu"))


def from_official_release(name: str, cache_dir: str | os.PathLike | None = None) -> ConvMixer:
    """Download the paper's released checkpoint for preset ``name`` (needs internet)."""
    url = OFFICIAL_RELEASE[name]
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.hub.load_state_dict_from_url(url, model_dir=cache_dir, map_location="cpu", weights_only=True)
    return load_pretrained(state, ACTIVATION.get(name, "gelu"))
