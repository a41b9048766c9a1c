"""What a ConvMixer, and the layers it is compared with, cost: parameters and multiply-accumulates.

Every cost the book prints comes from here, either in closed form (a formula in the paper's
symbols, so a reader can see *why* it grows as it does) or measured (what PyTorch counts while
the module runs), and the chapters check that the two agree::

    parameter_count          parameters of ConvMixer-h/d, closed form
    parameter_breakdown      parameters of a built model, by part (PARTS), counted
    parameter_shares         parameters by part in closed form, also with an MLP as the channel mixing
    multiply_accumulates     MACs of one forward pass on one image, by part, closed form
    training_flops_per_image FLOPs of one training step per image (3 forward passes' worth)
    patch_size_rows          tokens, parameters and MACs of one ConvMixer for several patch sizes
    mixing_costs             one token-mixing layer: depthwise conv, self-attention, token-mixing MLP
    token_mixing_costs       the same four kinds (with the dense conv) as (parameters, FLOPs) pairs
    measured_macs            MACs counted by PyTorch while a module runs
    count_parameters         parameters a module holds, counted
    TokenMixingMLP, SelfAttentionMixing, channel_mlp   the layers ConvMixer is compared with

Counting convention: one MAC is one multiply-accumulate; FLOPs = 2 x MACs (a multiply and an
add), as ``torch.utils.flop_counter`` counts them.  Only the convolutions, linear layers and
matrix products are counted; norms, activations, softmax, additions and biases are a small extra.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

# The parts of a ConvMixer whose parameters :func:`parameter_breakdown` counts.
PARTS = ("patch embedding", "depthwise", "pointwise", "norms", "head")
# The parts :func:`parameter_shares` computes: PARTS, with the pointwise convolution named for its role.
PARAMETER_PARTS = ("patch embedding", "depthwise", "channel mixing", "norms", "head")


# --------------------------------------------------------------------------- parameters

def parameter_count(dim: int, depth: int, kernel_size: int, patch_size: int, n_classes: int = 10, in_channels: int = 3) -> int:
    """Parameters of ConvMixer-h/d, in closed form::

        patch embedding  C p^2 h + h (conv) + 2h (norm)
        each layer       h k^2 + h (depthwise) + 2h + h^2 + h (pointwise) + 2h
        head             h n + n

        total = h (C p^2 + 3) + d (h^2 + h k^2 + 6h) + n (h + 1).

    The h^2 term dominates: channel mixing holds most of the parameters.
    Both norms (BatchNorm and the channel LayerNorm) have 2h parameters; the residual placement adds none.
    """
    h, d, k, p, n, c = dim, depth, kernel_size, patch_size, n_classes, in_channels
    return h * (c * p * p + 3) + d * (h * h + h * k * k + 6 * h) + n * (h + 1)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Where a ConvMixer's parameters are, by part (keys :data:`PARTS`); the values sum to the total.

    ``patch embedding`` is the p x p convolution, ``depthwise`` / ``pointwise`` the
    spatial- and channel-mixing convolutions of all d layers, ``norms`` every
    normalisation layer (2h each), ``head`` the final linear layer.
    """
    parts = dict.fromkeys(PARTS, 0)
    for name, t in model.named_parameters():
        if ".norm." in name:
            part = "norms"
        elif name.startswith("patch_embed.proj."):
            part = "patch embedding"
        elif ".spatial.conv." in name:
            part = "depthwise"
        elif ".channel.conv." in name:
            part = "pointwise"
        elif name.startswith("head."):
            part = "head"
        else:
            raise KeyError(f"parameter {name!r} belongs to no known part")
        parts[part] += t.numel()
    return parts


def parameter_shares(dim: int, depth: int, kernel_size: int, patch_size: int, n_classes: int = 1000,
                     in_channels: int = 3, mlp_ratio: int | None = None) -> dict[str, int]:
    """Parameters of ConvMixer-h/d by part (keys :data:`PARAMETER_PARTS`), in closed form.

    ``mlp_ratio=None`` is ConvMixer (channel mixing = the pointwise convolution, h^2 + h per
    layer; the parts then equal :func:`parameter_breakdown`, with "pointwise" called "channel
    mixing").  ``mlp_ratio=r`` replaces it by a two-layer channel MLP h -> r h -> h
    (MLP-Mixer's and ViT's, 2 r h^2 + r h + h per layer), to see what that choice would cost.
    """
    h, d, k, p, n, c = dim, depth, kernel_size, patch_size, n_classes, in_channels
    channel = h * h + h if mlp_ratio is None else 2 * mlp_ratio * h * h + mlp_ratio * h + h
    return {"patch embedding": c * p * p * h + h, "depthwise": d * (h * k * k + h), "channel mixing": d * channel,
            "norms": 2 * h * (1 + 2 * d), "head": n * (h + 1)}


def count_parameters(module: nn.Module) -> int:
    """Parameters ``module`` holds, counted (to check a closed form against)."""
    return sum(t.numel() for t in module.parameters())


# --------------------------------------------------------------------------- multiply-accumulates

def multiply_accumulates(dim: int, depth: int, kernel_size: int, patch_size: int, n_classes: int = 10,
                         in_channels: int = 3, image_size: int | tuple[int, int] = 32, **_ignored) -> dict[str, int]:
    """Multiply-accumulates (MACs) of one forward pass on one image, by part, plus ``"total"``.

    With T = floor(H/p) floor(W/p) tokens::

        patch embedding   T C p^2 h
        depthwise         d T h k^2      (zero padding counted, as hardware computes it)
        pointwise         d T h^2
        head              h n

    Activations, norms, residual additions, pooling and biases (O(T h) each) are
    not counted; this is the convention of FLOP counters such as
    ``torch.utils.flop_counter.FlopCounterMode``, which reports 2 x these numbers.
    Extra keyword arguments (``activation``, ``norm``, ``batch``, ...) are accepted and ignored,
    so ``multiply_accumulates(**ARCHITECTURES[name], image_size=224)`` works.
    """
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    h, d, k, p, n, c = dim, depth, kernel_size, patch_size, n_classes, in_channels
    T = (H // p) * (W // p)
    macs = {
        "patch embedding": T * c * p * p * h,
        "depthwise": d * T * h * k * k,
        "pointwise": d * T * h * h,
        "head": h * n,
    }
    macs["total"] = sum(macs.values())
    return macs


def training_flops_per_image(dim: int, depth: int, kernel_size: int, patch_size: int, **shape) -> int:
    """FLOPs of one training step per image: 3 forward passes' worth (the backward pass computes the
    gradients of both the inputs and the weights, each about a forward pass), 2 FLOPs per MAC.

    ``shape`` takes the rest of :func:`multiply_accumulates`' arguments (``n_classes``, ``image_size``,
    ...) and ignores others, so a benchmark's shape dict with its ``batch`` can be passed whole.
    """
    return 3 * 2 * multiply_accumulates(dim, depth, kernel_size, patch_size, **shape)["total"]


def measured_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates PyTorch's own FLOP counter sees in ``module(*inputs)`` (FLOPs / 2).

    Works on the ``meta`` device too, so the cost of an ImageNet-sized model is counted without
    allocating it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def patch_size_rows(dim: int = 256, depth: int = 8, kernel_size: int = 5, patch_sizes: Iterable[int] = (1, 2, 4, 8),
                    image_size: int = 32, n_classes: int = 10) -> list[dict]:
    """One row per patch size: token grid, parameters and MACs of ConvMixer-h/d on image_size^2 images.

    Keys: p, grid, tokens, params (whole model), embed_params (the p x p convolution),
    embed_macs, layer_macs (all d layers) and total_macs, from the closed forms
    :func:`parameter_count` and :func:`multiply_accumulates`.
    """
    rows = []
    for p in patch_sizes:
        macs = multiply_accumulates(dim, depth, kernel_size, p, n_classes, image_size=image_size)
        g = image_size // p
        rows.append(dict(p=p, grid=f"{g}x{g}", tokens=g * g,
                         params=parameter_count(dim, depth, kernel_size, p, n_classes),
                         embed_params=3 * p * p * dim + dim,
                         embed_macs=macs["patch embedding"], layer_macs=macs["depthwise"] + macs["pointwise"],
                         total_macs=macs["total"]))
    return rows


# --------------------------------------------------------------------------- token mixing, compared

def mixing_costs(n_tokens: int, dim: int, kernel_size: int, mlp_hidden: int | None = None) -> dict[str, int]:
    """Parameters and FLOPs (batch of one) of one token-mixing layer of each kind::

        depthwise conv      params h k^2 + h             FLOPs 2 N h k^2
        self-attention      params 4 h^2 + 4 h           FLOPs 2 (4 N h^2 + 2 N^2 h)
        token-mixing MLP    params 2 N D_S + N + D_S     FLOPs 2 (2 N D_S h)

    Self-attention: the Q, K, V and output projections, then the N x N scores and their weighted
    sum (the number of heads does not change the totals).  Token-mixing MLP (MLP-Mixer):
    Linear N -> D_S -> N applied to each of the h channels; ``mlp_hidden`` D_S defaults to h / 2,
    the ratio of every configuration in the MLP-Mixer paper.
    """
    n, h, k = n_tokens, dim, kernel_size
    ds = mlp_hidden if mlp_hidden is not None else h // 2
    return dict(
        depthwise_params=h * k * k + h, depthwise_flops=2 * n * h * k * k,
        attention_params=4 * h * h + 4 * h, attention_flops=2 * (4 * n * h * h + 2 * n * n * h),
        mlp_params=2 * n * ds + n + ds, mlp_flops=2 * 2 * n * ds * h,
        mlp_hidden=ds,
    )


def token_mixing_costs(n_tokens: int, dim: int, kernel_size: int) -> dict[str, tuple[int, int]]:
    """(parameters, FLOPs for one image) of one token-mixing layer of four kinds, in a fixed order.

    The depthwise conv, self-attention and token-mixing MLP (D_S = h / 2) are
    :func:`mixing_costs`; the dense k x k convolution h -> h (what the depthwise one replaces)
    has h^2 k^2 + h parameters and 2 N h^2 k^2 FLOPs.
    """
    c = mixing_costs(n_tokens, dim, kernel_size)
    h, k, n = dim, kernel_size, n_tokens
    return {"depthwise conv": (c["depthwise_params"], c["depthwise_flops"]),
            "dense conv": (h * h * k * k + h, 2 * n * h * h * k * k),
            "self-attention": (c["attention_params"], c["attention_flops"]),
            "token-mixing MLP": (c["mlp_params"], c["mlp_flops"])}


def channel_mlp(dim: int, ratio: int = 4) -> nn.Module:
    """MLP-Mixer's two-layer channel MLP h -> r h -> h, which is also ViT's FFN, on (N, T, h) tokens.
    Not part of ConvMixer: what its pointwise convolution is compared with."""
    return nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class TokenMixingMLP(nn.Module):
    """MLP-Mixer's token-mixing MLP on an (N, h, H, W) token grid: Linear(T -> D_S), GELU, Linear(D_S -> T)
    over the T = H W positions, shared by all h channels.  Used only to *count* its cost."""

    def __init__(self, n_tokens: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_tokens, hidden), nn.GELU(), nn.Linear(hidden, n_tokens))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, h, hgt, wid = z.shape
        return self.mlp(z.flatten(2)).reshape(n, h, hgt, wid)


class SelfAttentionMixing(nn.Module):
    """ViT's multi-head self-attention on an (N, h, H, W) token grid, via ``nn.MultiheadAttention``.
    Used only to *count* its cost."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, h, hgt, wid = z.shape
        t = z.flatten(2).transpose(1, 2)                      # n, tokens, h
        # nn.MultiheadAttention may take fused kernels (its inference fast path, or
        # scaled_dot_product_attention) that PyTorch's FLOP counter cannot look inside; with the
        # fast path off and need_weights=True it computes the same with countable matrix products.
        mha = getattr(torch.backends, "mha", None)          # the switch exists from PyTorch 2.2 on
        fast = mha.get_fastpath_enabled() if mha else None
        if mha:
            mha.set_fastpath_enabled(False)
        try:
            out, _ = self.attn(t, t, t, need_weights=True)
        finally:
            if mha:
                mha.set_fastpath_enabled(fast)
        return out.transpose(1, 2).reshape(n, h, hgt, wid)
