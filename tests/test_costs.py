"""convmixer.costs: every closed form against what a real module holds or PyTorch counts.

(The ConvMixer's own count and MACs against its presets are in tests/test_model.py.)
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from convmixer.costs import (PARAMETER_PARTS, channel_mlp, count_parameters, measured_macs, mixing_costs,
                             multiply_accumulates, parameter_breakdown, parameter_count, parameter_shares,
                             patch_size_rows, token_mixing_costs, training_flops_per_image, SelfAttentionMixing,
                             TokenMixingMLP)
from convmixer.model import ConvMixer


@pytest.mark.parametrize("h,d,k,p,n", [(256, 8, 5, 2, 10), (64, 3, 9, 7, 1000), (48, 2, 3, 4, 7)])
def test_parameter_shares_match_the_model(h, d, k, p, n):
    parts = parameter_shares(h, d, k, p, n)
    breakdown = parameter_breakdown(ConvMixer(dim=h, depth=d, kernel_size=k, patch_size=p, n_classes=n))
    assert list(parts) == list(PARAMETER_PARTS)
    assert parts == {("channel mixing" if key == "pointwise" else key): v for key, v in breakdown.items()}
    assert sum(parts.values()) == parameter_count(h, d, k, p, n)
    # the two-layer channel MLP, counted on a real one
    with_mlp = parameter_shares(h, d, k, p, n, mlp_ratio=4)
    assert with_mlp["channel mixing"] == d * count_parameters(channel_mlp(h, 4))
    assert {key: v for key, v in with_mlp.items() if key != "channel mixing"} == \
        {key: v for key, v in parts.items() if key != "channel mixing"}


@pytest.mark.parametrize("n,h,k", [(16, 32, 3), (64, 16, 5)])
def test_dense_conv_cost_matches_a_real_convolution(n, h, k):
    conv = nn.Conv2d(h, h, k, padding=k // 2)
    g = int(n ** 0.5)
    params, flops = token_mixing_costs(n, h, k)["dense conv"]
    assert params == count_parameters(conv)
    assert flops == 2 * measured_macs(conv, torch.zeros(1, h, g, g))


def test_mixing_costs_match_the_layers_they_describe():
    n, h, k = 64, 32, 5
    cost = mixing_costs(n, h, k)
    z = torch.zeros(1, h, 8, 8)
    depthwise = nn.Conv2d(h, h, k, groups=h, padding=k // 2)
    layers = {"depthwise": depthwise, "attention": SelfAttentionMixing(h).eval(),
              "mlp": TokenMixingMLP(n, cost["mlp_hidden"])}
    for key, module in layers.items():
        assert count_parameters(module) == cost[f"{key}_params"], key
        assert 2 * measured_macs(module, z) == cost[f"{key}_flops"], key


def test_measured_macs_on_the_meta_device_equal_the_formula():
    """How chapter 5 counts ImageNet-sized presets without allocating them."""
    cfg = dict(dim=64, depth=3, kernel_size=9, patch_size=7, n_classes=1000)
    with torch.device("meta"):
        macs = measured_macs(ConvMixer(**cfg), torch.empty(1, 3, 224, 224))
    assert macs == multiply_accumulates(**cfg, image_size=224)["total"]


def test_training_flops_are_six_per_forward_multiply_accumulate():
    shape = dict(dim=256, depth=8, kernel_size=5, patch_size=2, batch=128)   # a benchmark shape: batch is ignored
    assert training_flops_per_image(**shape) == 6 * multiply_accumulates(256, 8, 5, 2)["total"]
    assert 0.85e9 < training_flops_per_image(**shape) < 0.95e9    # ConvMixer-256/8 at p=2: ~148M MACs per image


def test_patch_size_rows_agree_with_a_built_model():
    rows = patch_size_rows(dim=16, depth=2, kernel_size=3, patch_sizes=(2, 4), image_size=16)
    assert [r["tokens"] for r in rows] == [64, 16]
    for r in rows:
        model = ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=r["p"])
        assert r["params"] == model.num_parameters()
        assert r["embed_params"] == count_parameters(model.patch_embed.proj)
        assert r["total_macs"] == measured_macs(model.eval(), torch.zeros(1, 3, 16, 16))
