"""The official ImageNet weights' layouts map onto the library's model: same outputs, same names."""
import pytest
import torch
from torch import nn

from convmixer import ARCHITECTURES, ConvMixer
from convmixer.pretrained import config_from_state_dict, detect_layout, load_pretrained, to_library_names

from helpers import paper_convmixer, randomise_norms  # the paper's nn.Sequential, written out independently

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
    preset = {k: v for k, v in ARCHITECTURES[name].items() if k != "activation"}
    cfg = config_from_state_dict(sd)
    assert {k: cfg[k] for k in preset} == preset
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
