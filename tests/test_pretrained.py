"""The official ImageNet weights' layouts map onto the library's model: same outputs, same names."""
import pytest
import torch
from torch import nn

from convmixer import ARCHITECTURES, ConvMixer
from convmixer.pretrained import (config_from_state_dict, detect_layout, load_pretrained, matching_architecture,
                                  to_library_names)
from convmixer.reference import randomise_norms, to_official_state_dict

from helpers import paper_convmixer  # the paper's nn.Sequential, written out independently

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("act", [nn.GELU, nn.ReLU])
def test_timm_model_with_random_weights_gives_the_same_outputs(act):
    torch.manual_seed(0)
    ref = timm.models.convmixer.ConvMixer(dim=48, depth=3, kernel_size=5, patch_size=4, num_classes=7, act_layer=act)
    randomise_norms(ref)  # random BatchNorm statistics: a wrong mapping of running_mean/var cannot hide
    ref.eval()
    model = load_pretrained(ref.state_dict(), activation="relu" if act is nn.ReLU else "gelu")
    assert model.config.dim == 48 and model.config.depth == 3 and model.config.kernel_size == 5
    assert model.config.patch_size == 4 and model.config.n_classes == 7
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14"])
def test_timm_named_models_map_onto_the_presets(name):
    """timm's real configurations (random weights: no download) land on the library's presets."""
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False)
    sd = ref.state_dict()
    assert detect_layout(sd) == "timm"
    # every shape read off, and the activation the named architecture was trained with (ReLU for 768/32)
    assert config_from_state_dict(sd) == {"in_channels": 3, "activation": "gelu", **ARCHITECTURES[name]}
    with torch.device("meta"):
        ours = ConvMixer(**ARCHITECTURES[name])
    mapped = to_library_names(sd)
    assert mapped.keys() == ours.state_dict().keys()
    for k, v in mapped.items():
        assert v.shape == ours.state_dict()[k].shape, k


def test_official_release_layout_with_dataparallel_prefix(tmp_path):
    torch.manual_seed(1)
    ref = paper_convmixer(32, 2, 3, 2, 5)
    randomise_norms(ref)
    ref.eval()
    wrapped = {"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}, "epoch": 150}
    torch.save(wrapped, tmp_path / "release.pth.tar")
    model = load_pretrained(tmp_path / "release.pth.tar")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_unknown_layouts_are_refused():
    with pytest.raises(ValueError, match="unrecognised ConvMixer state dict"):
        to_library_names({"fc.weight": torch.zeros(1)})
    sd = paper_convmixer(8, 1, 3, 2, 2).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no place in a ConvMixer"):
        to_library_names(sd)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_activation_is_the_named_architectures_when_the_shapes_match(name):
    """Weights cannot tell ReLU from GELU; the shapes of ConvMixer-768/32 can tell it is that model."""
    with torch.device("meta"):
        state = to_official_state_dict(ConvMixer(**{**ARCHITECTURES[name], "activation": "gelu"}))
    expected = ARCHITECTURES[name].get("activation", "gelu")
    assert config_from_state_dict(state)["activation"] == expected
    assert matching_architecture(config_from_state_dict(state)) == name
    assert config_from_state_dict(state, activation="gelu")["activation"] == "gelu"  # the caller's word wins


def test_a_shape_no_architecture_has_gets_gelu():
    state = paper_convmixer(16, 2, 3, 2, 10).state_dict()
    assert matching_architecture(config_from_state_dict(state)) is None
    assert load_pretrained(state).config.activation == "gelu"
    assert load_pretrained(state, activation="relu").config.activation == "relu"
