"""The paper's own ConvMixer, and the bookkeeping that proves the library equals it.

The official implementation (``convmixer.py`` in locuslab/convmixer, 2021-10-05) is a
single ``nn.Sequential`` expression of 18 lines.  It is the ground truth: a reader can hold
it in their head, and :class:`convmixer.model.ConvMixer` is only worth trusting if,
given the same weights, it computes the same function.  This module provides

* :func:`official_convmixer`, that ``nn.Sequential`` exactly as published, and
  :func:`tweetable_convmixer`, the 280-character version from the official README;
* :func:`to_official_state_dict` / :func:`load_official_state_dict`, which rename
  weights between the library's descriptive module names and the Sequential's
  numeric indices, so the same weights can be placed in both models;
* :func:`randomise_norms`, which makes every norm a non-trivial map, so that such a comparison
  checks the norms' tensors too;

The index layout of the official Sequential, for depth d::

    0            Conv2d(3, h, p, stride=p)      <- patch_embed.proj
    1, 2         GELU, BatchNorm2d(h)           <- patch_embed.act, patch_embed.norm
    3 + i        layer i:
      .0.fn.0      depthwise Conv2d(h, h, k, groups=h)   <- layers.i.spatial.conv
      .0.fn.2      BatchNorm2d(h)                        <- layers.i.spatial.norm
      .1           pointwise Conv2d(h, h, 1)             <- layers.i.channel.conv
      .3           BatchNorm2d(h)                        <- layers.i.channel.norm
    d + 3, d + 4 AdaptiveAvgPool2d, Flatten     (no weights)
    d + 5        Linear(h, n)                   <- head
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from .model import ChannelLayerNorm, ConvMixer, ConvMixerConfig
from .pretrained import module_names, rename_keys


class Residual(nn.Module):
    """``fn(x) + x``: the official code's skip connection, around spatial mixing only."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def official_convmixer(dim: int, depth: int, kernel_size: int = 9, patch_size: int = 7, n_classes: int = 1000,
                       *, activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """The paper's ConvMixer-h/d, exactly as in the official ``convmixer.py``.

    This is the reference the book and the tests prove :class:`~convmixer.model.ConvMixer`
    equal to: load the same weights into both (see :func:`load_official_state_dict`)
    and they return the same outputs, in train and in eval mode.

    The body is the official code line for line.  The only addition is the keyword
    ``activation`` (GELU by default, as published), the way timm's ``act_layer`` builds
    the ReLU ConvMixer-768/32; it replaces every ``nn.GELU()`` and nothing else.
    """
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size),
        activation(),
        nn.BatchNorm2d(dim),
        *[nn.Sequential(
                Residual(nn.Sequential(
                    nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                    activation(),
                    nn.BatchNorm2d(dim)
                )),
                nn.Conv2d(dim, dim, kernel_size=1),
                activation(),
                nn.BatchNorm2d(dim)
        ) for i in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes)
    )


#: The official README's "tweetable" ConvMixer (it assumes ``from torch.nn import *``), verbatim as
#: the README showed it from 2021-10-06 to 2022-01-24 (its current version names the function
#: ``ConvMixer`` and writes ``AdaptiveAvgPool2d(1)``); :func:`tweetable_convmixer` executes it.
TWEETABLE_SOURCE = """\
def ConvMixr(h,d,k,p,n):
 S,C,A=Sequential,Conv2d,lambda x:S(x,GELU(),BatchNorm2d(h))
 R=type('',(S,),{'forward':lambda s,x:s[0](x)+x})
 return S(A(C(3,h,p,p)),*[S(R(A(C(h,h,k,groups=h,padding=k//2))),A(C(h,h,1))) for i in range(d)],AdaptiveAvgPool2d((1,1)),Flatten(),Linear(h,n))
"""


def tweetable_convmixer(h: int, d: int, k: int, p: int, n: int) -> nn.Sequential:
    """Build ConvMixer-h/d with the README's 280-character definition (:data:`TWEETABLE_SOURCE`).

    Its modules are nested differently from :func:`official_convmixer` (each
    conv-GELU-BN triple is its own Sequential) but are registered in the same order,
    so the two models' ``state_dict`` values line up one to one.
    """
    namespace = {name: getattr(nn, name) for name in
                 ("Sequential", "Conv2d", "GELU", "BatchNorm2d", "AdaptiveAvgPool2d", "Flatten", "Linear")}
    exec(TWEETABLE_SOURCE, namespace)  # a fixed string defined above, never user input
    return namespace["ConvMixr"](h, d, k, p, n)


def _check_paper_config(config: ConvMixerConfig) -> None:
    """The official model has BatchNorm, the skip around spatial mixing only, and RGB input."""
    problems = []
    if config.norm != "batch":
        problems.append(f"norm={config.norm!r} (the official model uses 'batch')")
    if config.residual != "spatial":
        problems.append(f"residual={config.residual!r} (the official model uses 'spatial')")
    if config.in_channels != 3:
        problems.append(f"in_channels={config.in_channels} (the official model takes 3)")
    if problems:
        raise ValueError("this ConvMixer has no official counterpart: " + "; ".join(problems))


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm of ``model`` random affine parameters, and every BatchNorm random running
    statistics; return ``model``.

    A fresh norm is the identity in evaluation mode (weight 1, bias 0, and for BatchNorm running
    mean 0 and variance 1), so two models compared straight after construction agree even if a norm's
    tensors were dropped or swapped on the way from one to the other.  After this, a
    ``torch.allclose`` between two models in eval mode checks the norms too.  Weights are drawn
    from 1 + 0.2 N(0, 1), biases and running means from 0.2 N(0, 1), variances from U(0.5, 1.5).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, ChannelLayerNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def official_name(name: str, depth: int) -> str:
    """The official Sequential's key for the library's state-dict key ``name``.

    >>> official_name("layers.0.spatial.conv.weight", depth=8)
    '3.0.fn.0.weight'
    >>> official_name("head.bias", depth=8)
    '13.bias'
    """
    return rename_keys([name], module_names(depth, "official"))[name]


def to_official_state_dict(model: ConvMixer) -> "OrderedDict[str, torch.Tensor]":
    """``model``'s weights and BatchNorm statistics, keyed as in :func:`official_convmixer`.

    ``official_convmixer(h, d, k, p, n).load_state_dict(to_official_state_dict(model))``
    loads with ``strict=True``: every key matches, none is missing or left over.
    """
    _check_paper_config(model.config)
    state = model.state_dict()
    names = rename_keys(state, module_names(model.config.depth, "official"))
    return OrderedDict((names[k], v) for k, v in state.items())


def load_official_state_dict(model: ConvMixer, state_dict: Mapping[str, torch.Tensor]) -> ConvMixer:
    """Load a state dict of :func:`official_convmixer` (numeric keys) into the library's ``model``.

    Every key of ``model`` must be present and no other: a mismatch (a different depth,
    a missing BatchNorm statistic) raises a ``KeyError`` that lists the keys involved.
    Returns ``model``, with the weights loaded in place.
    """
    _check_paper_config(model.config)
    d = model.config.depth
    to_library = {v: k for k, v in rename_keys(model.state_dict(), module_names(d, "official")).items()}
    missing = sorted(set(to_library) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(to_library))
    if missing or unexpected:
        raise KeyError(f"official state dict does not fit this ConvMixer-{model.config.dim}/{d}: "
                       f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                       f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    model.load_state_dict(OrderedDict((to_library[k], v) for k, v in state_dict.items()), strict=True)
    return model


