"""Test helpers shared by several test modules (pytest puts tests/ on the import path).

The paper's model is written out again here, from locuslab/convmixer's ``convmixer.py``, so that
tests do not trust ``convmixer/reference.py``: a mistake there would otherwise be tested against itself.
"""
from __future__ import annotations

import torch
from torch import nn

from convmixer.model import ConvMixer

N_TRAIN, N_TEST = 64, 32  # the size of conftest's synthetic ``data_root`` set


class _Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def paper_convmixer(dim, depth, kernel_size=9, patch_size=7, n_classes=1000, act=nn.GELU):
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size),
        act(),
        nn.BatchNorm2d(dim),
        *[nn.Sequential(
                _Residual(nn.Sequential(
                    nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                    act(),
                    nn.BatchNorm2d(dim)
                )),
                nn.Conv2d(dim, dim, kernel_size=1),
                act(),
                nn.BatchNorm2d(dim)
        ) for i in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes)
    )


def copy_into_paper(model: ConvMixer, seq: nn.Sequential) -> None:
    """Copy weights module by module, by hand, without the key mapping under test."""
    pairs = [(model.patch_embed.proj, seq[0]), (model.patch_embed.norm, seq[2])]
    for i, layer in enumerate(model.layers):
        block = seq[3 + i]
        pairs += [(layer.spatial.conv, block[0].fn[0]), (layer.spatial.norm, block[0].fn[2]),
                  (layer.channel.conv, block[1]), (layer.channel.norm, block[3])]
    pairs.append((model.head, seq[-1]))
    for src, dst in pairs:
        dst.load_state_dict(src.state_dict(), strict=True)
