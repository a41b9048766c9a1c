"""Where each of the library's weights lives in the two outside layouts of a ConvMixer: one table.

The library names a module by what it does (``layers.3.spatial.conv``).  Two published layouts
hold the same tensors under other names:

* ``"official"``: the paper's ``nn.Sequential`` (:func:`convmixer.reference.official_convmixer`, and
  the released ImageNet checkpoints), named by position: layer i is entry 3 + i and the head d + 5;
* ``"timm"``: timm's ``ConvMixer``, which groups them as ``stem``, ``blocks.i`` and ``head``.

:data:`MODULE_NAMES` has a row per module with parameters and a column per layout;
:mod:`convmixer.reference` (library -> official) and :mod:`convmixer.pretrained` (official or
timm -> library) both rename through :func:`module_names`, so there is one mapping to check.
A leaf module: it imports nothing from the package.
"""
from __future__ import annotations

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
