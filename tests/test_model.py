"""The library's ConvMixer against the paper's definition, its own formulas, and its own docstrings."""
from __future__ import annotations

import random
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convmixer import ARCHITECTURES, ConvMixer, ConvMixerConfig, convmixer, parameter_count
from convmixer.model import (RESIDUALS, ChannelLayerNorm, ChannelMixing, ConvMixerLayer, PatchEmbedding,
                             SpatialMixing)
from convmixer.costs import multiply_accumulates, parameter_breakdown
from convmixer.reference import (
    load_official_state_dict,
    official_convmixer,
    randomise_norms,
    to_official_state_dict,
    tweetable_convmixer,
)

from helpers import copy_into_paper, paper_convmixer  # the paper's model, written out independently


PAPER_CONFIGS = [
    dict(dim=16, depth=2, kernel_size=3, patch_size=2, n_classes=10),
    dict(dim=24, depth=3, kernel_size=9, patch_size=7, n_classes=5),
    dict(dim=8, depth=1, kernel_size=1, patch_size=1, n_classes=3),
]


def _pair(cfg, act=nn.GELU):
    torch.manual_seed(0)
    model = ConvMixer(**cfg)
    randomise_norms(model)
    paper = paper_convmixer(cfg["dim"], cfg["depth"], cfg["kernel_size"], cfg["patch_size"], cfg["n_classes"], act)
    copy_into_paper(model, paper)
    return model, paper


@pytest.mark.parametrize("cfg", PAPER_CONFIGS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_equals_paper_sequential(cfg, mode):
    model, paper = _pair(cfg)
    model.train(mode == "train")
    paper.train(mode == "train")
    x = torch.randn(3, 3, 28, 21, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), paper(x), rtol=0, atol=1e-6)
    if mode == "train":  # the same batch statistics went into the same running averages
        for a, b in zip(model.state_dict().values(), paper.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_preset_256_8_equals_paper_sequential(mode):
    model, paper = _pair(ARCHITECTURES["convmixer_256_8"])
    model.train(mode == "train")
    paper.train(mode == "train")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), paper(x), rtol=0, atol=1e-5)


def test_relu_preset_equals_paper_sequential_with_relu():
    cfg = dict(ARCHITECTURES["convmixer_768_32"], dim=16, depth=2)  # ReLU, k=7, p=7, shrunk
    model = ConvMixer(**cfg)
    randomise_norms(model)
    paper = paper_convmixer(16, 2, cfg["kernel_size"], cfg["patch_size"], cfg["n_classes"], nn.ReLU)
    copy_into_paper(model, paper)
    model.eval(), paper.eval()
    x = torch.randn(2, 3, 35, 35)
    with torch.no_grad():
        torch.testing.assert_close(model(x), paper(x), rtol=0, atol=1e-6)


def test_gradients_equal_paper_sequential():
    model, paper = _pair(PAPER_CONFIGS[0])
    x = torch.randn(4, 3, 16, 16)
    model(x).square().sum().backward()
    paper(x).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    paper_grads = [p.grad for p in paper.parameters()]
    assert len(grads) == len(paper_grads)
    for a, b in zip(grads, paper_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- convmixer/reference.py against the inline copy -----------------------------------------

@pytest.mark.parametrize("cfg", PAPER_CONFIGS)
def test_reference_module_matches_inline_copy(cfg):
    args = (cfg["dim"], cfg["depth"], cfg["kernel_size"], cfg["patch_size"], cfg["n_classes"])
    ref, inline = official_convmixer(*args), paper_convmixer(*args)
    assert str(ref).replace("Residual", "_Residual") == str(inline)
    assert [(k, v.shape) for k, v in ref.state_dict().items()] == [(k, v.shape) for k, v in inline.state_dict().items()]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_state_dict_mapping_round_trip(mode):
    cfg = PAPER_CONFIGS[1]
    model, inline = _pair(cfg)
    official = official_convmixer(cfg["dim"], cfg["depth"], cfg["kernel_size"], cfg["patch_size"], cfg["n_classes"])
    official.load_state_dict(to_official_state_dict(model), strict=True)
    for a, b in zip(official.state_dict().values(), inline.state_dict().values()):
        assert torch.equal(a, b)
    back = load_official_state_dict(ConvMixer(**cfg), official.state_dict())
    for a, b in zip(back.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    for m in (model, official, back):
        m.train(mode == "train")
    x = torch.randn(2, 3, 21, 21)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(back(x), official(x), rtol=0, atol=1e-6)


def test_tweetable_matches_official():
    torch.manual_seed(0)
    official = official_convmixer(16, 2, 5, 2, 10)
    randomise_norms(official)
    tweet = tweetable_convmixer(16, 2, 5, 2, 10)
    assert [v.shape for v in tweet.state_dict().values()] == [v.shape for v in official.state_dict().values()]
    tweet.load_state_dict(dict(zip(tweet.state_dict().keys(), official.state_dict().values())))
    x = torch.randn(2, 3, 16, 16)
    for mode in (True, False):
        tweet.train(mode), official.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(tweet(x), official(x), rtol=0, atol=1e-6)


def test_mapping_rejects_wrong_depth_and_non_paper_models():
    official = official_convmixer(16, 3, 5, 2, 10)
    with pytest.raises(KeyError, match="unexpected"):
        load_official_state_dict(ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=2), official.state_dict())
    for bad in (dict(norm="layer"), dict(residual="none"), dict(in_channels=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            to_official_state_dict(ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=2, **bad))


# --- Parameter and compute accounting --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_parameter_count_presets(name, norm):
    with torch.device("meta"):  # the count needs shapes only; no memory for 50M weights
        model = convmixer(name, norm=norm)
    assert parameter_count(**{k: v for k, v in ARCHITECTURES[name].items() if k != "activation"}) == model.num_parameters()
    assert sum(parameter_breakdown(model).values()) == model.num_parameters()


def test_parameter_count_paper_table():
    """The rounded sizes listed for the paper's ImageNet models: 51.6M, 21.1M, 24.4M parameters."""
    millions = {name: round(parameter_count(**{k: v for k, v in cfg.items() if k != "activation"}) / 1e6, 1)
                for name, cfg in ARCHITECTURES.items()}
    assert millions["convmixer_1536_20"] == 51.6
    assert millions["convmixer_768_32"] == 21.1
    assert millions["convmixer_1024_20_ks9_p14"] == 24.4


def test_parameter_count_random_configs():
    rng = random.Random(0)
    for _ in range(40):
        cfg = dict(dim=rng.randint(1, 64), depth=rng.randint(0 + 1, 6), kernel_size=rng.choice([1, 3, 5, 7, 9]),
                   patch_size=rng.randint(1, 16), n_classes=rng.randint(1, 100), in_channels=rng.randint(1, 4))
        for norm in ("batch", "layer"):
            for residual in RESIDUALS:
                with torch.device("meta"):
                    model = ConvMixer(**cfg, norm=norm, residual=residual)
                assert parameter_count(**cfg) == model.num_parameters(), (cfg, norm, residual)


def test_parameter_breakdown_parts():
    h, d, k, p, n = 32, 3, 5, 4, 7
    parts = parameter_breakdown(ConvMixer(dim=h, depth=d, kernel_size=k, patch_size=p, n_classes=n))
    assert parts == {"patch embedding": 3 * p * p * h + h, "depthwise": d * (h * k * k + h),
                     "pointwise": d * (h * h + h), "norms": (1 + 2 * d) * 2 * h, "head": h * n + n}


def test_multiply_accumulates_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = dict(dim=32, depth=3, kernel_size=5, patch_size=4, n_classes=7)
    model = ConvMixer(**cfg)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 36, 28))
    assert counter.get_total_flops() == 2 * multiply_accumulates(**cfg, image_size=(36, 28))["total"]


# --- Initialisation ----------------------------------------------------------------------------

def test_layers_initialised_independently():
    torch.manual_seed(0)
    model = ConvMixer(dim=32, depth=3, kernel_size=5, patch_size=2)
    l0, l1 = model.layers[0], model.layers[1]
    assert not torch.equal(l0.spatial.conv.weight, l1.spatial.conv.weight)
    assert not torch.equal(l0.channel.conv.weight, l1.channel.conv.weight)
    assert l0.spatial.conv.weight.data_ptr() != l1.spatial.conv.weight.data_ptr()


# --- The building blocks do what their docstrings say ------------------------------------------

def test_sub_modules_are_conv_act_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    s = SpatialMixing(8, 5).eval()
    torch.testing.assert_close(s(x), s.norm(F.gelu(F.conv2d(x, s.conv.weight, s.conv.bias, padding=2, groups=8))))
    c = ChannelMixing(8).eval()
    torch.testing.assert_close(c(x), c.norm(F.gelu(F.conv2d(x, c.conv.weight, c.conv.bias))))
    pe = PatchEmbedding(8, 4).eval()
    img = torch.randn(2, 3, 16, 12)
    torch.testing.assert_close(pe(img), pe.norm(F.gelu(F.conv2d(img, pe.proj.weight, pe.proj.bias, stride=4))))


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_channel_mixing_never_mixes_positions(norm):
    """C (conv, activation, norm in eval mode) maps each token on its own: change one token's input and
    only that token's output changes, whichever norm follows."""
    torch.manual_seed(0)
    c = randomise_norms(ChannelMixing(8, norm=norm)).eval()
    x = torch.randn(2, 8, 5, 7)
    x2 = x.clone()
    x2[:, :, 2, 3] += torch.randn(2, 8)
    with torch.no_grad():
        changed = (c(x2) - c(x)).abs().sum(1) > 0        # (N, H, W): which tokens moved
    expected = torch.zeros_like(changed)
    expected[:, 2, 3] = True
    assert torch.equal(changed, expected)


def test_spatial_mixing_never_mixes_channels():
    """S (depthwise conv, activation, BatchNorm in eval mode) keeps channels apart: change one channel of
    the input and only that channel of the output changes, within k // 2 tokens of the change."""
    torch.manual_seed(0)
    s = randomise_norms(SpatialMixing(4, 3)).eval()
    x = torch.randn(1, 4, 7, 7)
    x2 = x.clone()
    x2[0, 1, 3, 3] += 1.0
    with torch.no_grad():
        diff = (s(x2) - s(x)).abs()
    assert diff[0, 1].sum() > 0 and diff[0, [0, 2, 3]].sum() == 0
    rows, cols = diff[0, 1].nonzero(as_tuple=True)
    assert rows.min() >= 2 and rows.max() <= 4 and cols.min() >= 2 and cols.max() <= 4   # a 3 x 3 neighbourhood


def test_channel_layernorm_equals_nn_layernorm_channels_last():
    torch.manual_seed(0)
    ln = ChannelLayerNorm(8)
    ref = nn.LayerNorm(8, eps=ln.eps)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(8))
        ln.bias.copy_(torch.randn(8))
        ref.weight.copy_(ln.weight)
        ref.bias.copy_(ln.bias)
    x = 3 * torch.randn(2, 8, 5, 6) + 1
    expected = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)
    # per token: zero mean, unit variance over the channels (before the affine part)
    ln2 = ChannelLayerNorm(8)
    y = ln2(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 5, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 5, 6), atol=1e-3, rtol=0)


def test_layer_norm_model_same_in_train_and_eval():
    torch.manual_seed(0)
    model = ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=2, norm="layer")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), model.eval()(x))


@pytest.mark.parametrize("activation,cls", [("gelu", nn.GELU), ("relu", nn.ReLU)])
def test_activation_option(activation, cls):
    model = ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=2, activation=activation)
    acts = [m for m in model.modules() if isinstance(m, (nn.GELU, nn.ReLU))]
    assert len(acts) == 1 + 2 * 2 and all(type(m) is cls for m in acts)
    assert all(type(m) is nn.ReLU for m in convmixer("convmixer_768_32", dim=8, depth=1).modules()
               if isinstance(m, (nn.GELU, nn.ReLU)))


# --- Invalid arguments and inputs -------------------------------------------------------------

@pytest.mark.parametrize("name", ["dim", "depth", "kernel_size", "patch_size", "n_classes", "in_channels"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3"])
def test_invalid_sizes_raise_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        ConvMixer(**{name: value})


def test_even_kernel_raises():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvMixer(kernel_size=4)


@pytest.mark.parametrize("name,value", [("activation", "swish"), ("residual", "all"), ("norm", "group"),
                                        ("activation", "GELU"), ("norm", None)])
def test_invalid_strings_raise_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        ConvMixer(**{name: value})
    with pytest.raises(ValueError, match=name):
        ConvMixerConfig(**{name: value})


def test_unknown_architecture_raises():
    with pytest.raises(ValueError, match="unknown architecture"):
        convmixer("convmixer_512_16")


def test_wrong_input_channels_raises():
    model = ConvMixer(dim=16, depth=1, kernel_size=3, patch_size=2)
    with pytest.raises(ValueError, match=re.escape("expected 3 input channels")):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="permute"):  # channels-last images get a hint
        model(torch.zeros(1, 32, 32, 3))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 3, 32, 32), (32,)])
def test_non_4d_input_raises(shape):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ConvMixer(dim=16, depth=1, kernel_size=3, patch_size=2)(torch.zeros(shape))


def test_image_smaller_than_a_patch_raises():
    model = ConvMixer(dim=16, depth=1, kernel_size=3, patch_size=7)
    with pytest.raises(ValueError, match="smaller than one 7x7 patch"):
        model(torch.zeros(1, 3, 6, 32))
    with pytest.raises(ValueError, match="smaller than one 7x7 patch"):
        model(torch.zeros(1, 3, 32, 5))
    assert model.eval()(torch.zeros(1, 3, 7, 7)).shape == (1, 10)  # exactly one patch is fine


# --- Shapes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("H,W,p", [(32, 32, 2), (32, 48, 2), (33, 31, 2), (37, 23, 7), (224, 160, 14), (5, 9, 1)])
def test_output_shapes(H, W, p):
    model = ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=p, n_classes=4).eval()
    x = torch.zeros(2, 3, H, W)
    with torch.no_grad():
        assert model.features(x).shape == (2, 8, H // p, W // p)
        assert model(x).shape == (2, 4)


def test_in_channels_option():
    model = ConvMixer(dim=8, depth=1, kernel_size=3, patch_size=4, in_channels=1).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# --- One definition of each choice; the intermediate token grids ------------------------------

def test_check_choice_names_the_option_and_its_choices():
    from convmixer.model import NORMS, check_choice

    check_choice("norm", "layer", NORMS)  # a valid choice passes
    with pytest.raises(ValueError, match=re.escape("norm must be one of ('batch', 'layer'), got 'group'")):
        check_choice("norm", "group", NORMS)


def test_forward_intermediates_are_the_grids_of_a_plain_forward():
    torch.manual_seed(0)
    model = ConvMixer(dim=16, depth=3, kernel_size=3, patch_size=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, grids = model.forward_intermediates(x)
        assert len(grids) == 1 + 3 and all(z.shape == (2, 16, 8, 8) for z in grids)
        assert torch.equal(grids[0], model.patch_embed(x))
        for layer, before, after in zip(model.layers, grids, grids[1:]):
            assert torch.equal(after, layer(before))  # z_l = layer l (z_{l-1})
        assert torch.equal(grids[-1], model.features(x)) and torch.equal(logits, model(x))
    with pytest.raises(ValueError, match="input channels"):
        model.forward_intermediates(torch.zeros(1, 1, 32, 32))


def test_forward_intermediates_keep_the_autograd_history():
    model = ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=4)
    logits, grids = model.forward_intermediates(torch.randn(2, 3, 16, 16))
    for z in grids:
        z.retain_grad()
    logits.sum().backward()
    assert all(z.grad is not None and z.grad.shape == z.shape for z in grids)


def test_layout_table_names_every_weight_once_and_refuses_strangers():
    from convmixer.pretrained import module_names, rename_keys

    model = ConvMixer(dim=8, depth=11, kernel_size=3, patch_size=2)  # layers 1 and 10: no prefix confusion
    for layout in ("official", "timm"):
        names = rename_keys(model.state_dict(), module_names(11, layout))
        assert len(set(names.values())) == len(names)  # one-to-one
    assert module_names(11, "official")["layers.10.channel.norm"] == "13.3"
    assert module_names(11, "timm")["layers.10.channel.norm"] == "blocks.10.3"
    with pytest.raises(KeyError, match="not a ConvMixer state-dict key"):
        rename_keys(["layers.11.spatial.conv.weight"], module_names(11, "official"))
    with pytest.raises(ValueError, match="layout must be one of"):
        module_names(2, "keras")


def test_randomise_norms_makes_every_norm_a_real_map():
    """A fresh norm is the identity in eval mode, so an equivalence check would not see its tensors."""
    torch.manual_seed(0)
    for norm in ("batch", "layer"):
        model = ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=2, n_classes=10, norm=norm).eval()
        fresh = ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=2, n_classes=10, norm=norm).eval()
        fresh.load_state_dict(model.state_dict())
        assert randomise_norms(model, seed=3) is model
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, ChannelLayerNorm))]
        assert len(norms) == 5                                    # the embedding's and two per layer
        for m in norms:
            assert not torch.allclose(m.weight, torch.ones_like(m.weight))
            assert not torch.allclose(m.bias, torch.zeros_like(m.bias))
            if isinstance(m, nn.BatchNorm2d):
                assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            assert not torch.allclose(model(x), fresh(x), atol=1e-3)   # the norms now change the output
        again = randomise_norms(fresh, seed=3)                          # the same seed: the same norms
        with torch.no_grad():
            assert torch.allclose(model(x), again(x))
