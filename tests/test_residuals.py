"""The five residual placements, and the ablation's results read back (issue 16)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from convmixer import ConvMixer, ConvMixerConfig, parameter_count
from convmixer.book.experiments import (ABLATION_GRID, ablation_architecture, init_gradient_table, load_ablation,
                                        measure_init, summarize_ablation, summarize_init, variant_name)
from convmixer.book.stats import rank_correlation, rank_correlation_p
from convmixer.model import NORMS, RESIDUALS, ConvMixerLayer
from convmixer.reference import randomise_norms

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"

# The placements written out by hand from their formulas, with S the spatial and C the channel mixing.
BY_HAND = {
    "spatial": lambda S, C, z: C(z + S(z)),                   # z' = z + S(z);  out = C(z')
    "channel": lambda S, C, z: S(z) + C(S(z)),                # z' = S(z);      out = z' + C(z')
    "two_skips": lambda S, C, z: (z + S(z)) + C(z + S(z)),    # z' = z + S(z);  out = z' + C(z')
    "whole_layer": lambda S, C, z: z + C(S(z)),               # out = z + C(S(z))
    "none": lambda S, C, z: C(S(z)),                          # out = C(S(z))
}


def test_the_five_placements_and_nothing_else():
    assert RESIDUALS == ("spatial", "channel", "two_skips", "whole_layer", "none")
    for bad in ("both", "around"):
        with pytest.raises(ValueError, match="residual must be one of"):
            ConvMixer(dim=8, depth=1, kernel_size=3, patch_size=2, residual=bad)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("residual", RESIDUALS)
def test_each_placement_is_its_formula(residual, norm):
    torch.manual_seed(0)
    z = torch.randn(2, 8, 6, 5)
    layer = ConvMixerLayer(8, 3, norm=norm, residual=residual).eval()
    randomise_norms(layer, seed=1)
    with torch.no_grad():
        expected = BY_HAND[residual](layer.spatial, layer.channel, z)
        torch.testing.assert_close(layer(z), expected, rtol=0, atol=1e-6)
    # the docstring states the same formula
    assert f'"{residual}"' in ConvMixerLayer.__doc__


@pytest.mark.parametrize("norm", NORMS)
def test_placements_are_different_functions_of_the_same_weights(norm):
    torch.manual_seed(0)
    z = torch.randn(2, 8, 6, 5)
    outs = {}
    for residual in RESIDUALS:
        torch.manual_seed(1)  # the same weights for every placement: a skip adds no parameters
        outs[residual] = ConvMixerLayer(8, 3, norm=norm, residual=residual).eval()(z).detach()
    for i, a in enumerate(RESIDUALS):
        for b in RESIDUALS[i + 1:]:
            assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


@pytest.mark.parametrize("residual", RESIDUALS)
def test_shapes_and_parameter_counts_do_not_depend_on_the_placement(residual):
    torch.manual_seed(0)
    for norm in NORMS:
        model = ConvMixer(dim=16, depth=3, kernel_size=5, patch_size=4, residual=residual, norm=norm)
        assert model(torch.randn(2, 3, 32, 28)).shape == (2, 10)
        assert model.features(torch.randn(2, 3, 32, 28)).shape == (2, 16, 8, 7)
        assert model.num_parameters() == parameter_count(16, 3, 5, 4)
        torch.manual_seed(0)
        spatial = ConvMixer(dim=16, depth=3, kernel_size=5, patch_size=4, norm=norm)
        assert {k: v.shape for k, v in model.state_dict().items()} == \
               {k: v.shape for k, v in spatial.state_dict().items()}


def test_the_shipped_checkpoint_loads_as_the_papers_placement():
    from convmixer.checkpoint import load_model

    model, ckpt = load_model(RESULTS / "convmixer-cpu.pt")
    assert ckpt["model_config"]["residual"] == "spatial"
    assert all(layer.residual == "spatial" for layer in model.layers)
    x = torch.randn(2, 192, 8, 8)
    layer = model.layers[0]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.channel(layer.spatial(x) + x), rtol=0, atol=0)


@pytest.mark.parametrize("residual", RESIDUALS)
def test_command_line_accepts_every_placement(residual):
    from convmixer.train import parse_config

    cfg = parse_config(["--preset", "tiny", "--residual", residual])
    assert cfg.residual == residual == cfg.model_config().residual


def test_command_line_rejects_an_unknown_placement(capsys):
    from convmixer.train import parse_config

    with pytest.raises(SystemExit) as e:
        parse_config(["--preset", "tiny", "--residual", "around"])
    assert e.value.code == 2
    assert "two_skips" in capsys.readouterr().err


# --- diagnostics --------------------------------------------------------------------------------

def test_ablation_grid_and_names():
    assert len(ABLATION_GRID) == 11 and len(set(ABLATION_GRID)) == 11
    assert ABLATION_GRID[0] == ("spatial", "batch", "gelu")
    assert {(r, n) for r, n, a in ABLATION_GRID if a == "gelu"} == {(r, n) for r in RESIDUALS for n in NORMS}
    assert [v for v in ABLATION_GRID if v[2] != "gelu"] == [("spatial", "batch", "relu")]
    names = [variant_name(*v) for v in ABLATION_GRID]
    assert len(set(names)) == 11 and "spatial-batch-relu" in names and "whole_layer-layer" in names


def test_load_ablation_reads_the_shipped_grid():
    runs = load_ablation(RESULTS / "ablation" / "grid")
    assert len(runs) == 33
    assert [r["variant"] for r in runs][::3] == [variant_name(*v) for v in ABLATION_GRID]
    assert all(r["name"] == f"{r['variant']}-seed{r['seed']}" for r in runs)
    rows = summarize_ablation(runs)
    assert [row["variant"] for row in rows] == [variant_name(*v) for v in ABLATION_GRID]
    assert all(row["seeds"] == [0, 1, 2] for row in rows)
    assert ablation_architecture(runs) == dict(dim=128, depth=8, kernel_size=5, patch_size=4, n_classes=10,
                                               in_channels=3)


def _fake_run(folder: Path, residual: str, norm: str, activation: str, seed: int, acc: float, dim: int = 16):
    name = f"{variant_name(residual, norm, activation)}-seed{seed}"
    (folder / name).mkdir(parents=True)
    model = dict(dim=dim, depth=2, kernel_size=3, patch_size=4, n_classes=10, in_channels=3,
                 activation=activation, residual=residual, norm=norm)
    (folder / name / "config.json").write_text(json.dumps({"train": {"seed": seed}, "model": model}))
    (folder / name / "history.json").write_text(json.dumps([{"test_accuracy": acc, "elapsed_seconds": 1.0}]))


def test_load_and_summarize_a_grid(tmp_path):
    for seed in (1, 0):
        for i, (r, n, a) in enumerate(reversed(ABLATION_GRID)):
            _fake_run(tmp_path, r, n, a, seed, acc=0.5 + 0.01 * i + 0.001 * seed)
    (tmp_path / "plan.json").write_text("{}")   # not a run folder
    runs = load_ablation(tmp_path)
    assert len(runs) == 22
    rows = summarize_ablation(runs)
    assert [row["variant"] for row in rows] == [variant_name(*v) for v in ABLATION_GRID]
    relu = rows[-1]
    assert relu["activation"] == "relu" and relu["seeds"] == [0, 1]
    assert relu["mean"] == pytest.approx(0.5005) and relu["spread"] == pytest.approx(0.001 / math.sqrt(2))
    assert ablation_architecture(runs)["depth"] == 2
    _fake_run(tmp_path, "none", "batch", "gelu", 5, 0.1, dim=32)
    with pytest.raises(ValueError, match="architecture"):
        ablation_architecture(load_ablation(tmp_path))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from two threads, and a busy machine makes two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_init_gradient_table(one_thread):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4) % 10
    arch = dict(dim=8, depth=4, kernel_size=3, patch_size=2)
    rows = init_gradient_table(measure_init(x, y, seeds=(0, 1), **arch))
    assert [row["variant"] for row in rows] == [variant_name(*v) for v in ABLATION_GRID]
    for row in rows:
        for key in ("loss", "rms_first", "rms_last", "grad_first", "grad_last", "growth", "growth_per_layer",
                    "relative_growth", "weight_grad_first", "weight_grad_last"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["variant"], key)
        assert row["growth_min"] <= row["growth"] <= row["growth_max"]
        assert row["growth_per_layer"] ** 4 == pytest.approx(row["growth"])
        if row["variant"] in ("spatial-batch", "none-batch"):   # RMS(z_0) = RMS(z_d) = 1: the two ratios agree
            assert row["relative_growth"] == pytest.approx(row["growth"], rel=0.02)
    by = {row["variant"]: row for row in rows}
    # a norm at the end of the layer keeps RMS(z_l) = 1; a skip after the last norm lets it grow
    for name in ("spatial-batch", "none-batch", "spatial-batch-relu"):
        assert by[name]["rms_last"] == pytest.approx(1.0, abs=0.01)
    for name in ("channel-batch", "two_skips-batch", "whole_layer-batch"):
        assert by[name]["rms_last"] > 1.2
    # the numbers are those of init_statistics on the same models
    from convmixer.book.experiments import init_statistics

    growths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = ConvMixer(**arch, residual="channel", norm="layer").to(memory_format=torch.channels_last)
        s = init_statistics(model, x.contiguous(memory_format=torch.channels_last), y)
        growths.append(s["grad_norm"][0] / s["grad_norm"][-1])
    assert by["channel-layer"]["growth"] == pytest.approx(math.sqrt(growths[0] * growths[1]), rel=1e-5)


def test_summarize_init_averages_the_seeds_per_layer(one_thread):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4) % 10
    variant = ("channel", "layer", "gelu")
    runs = measure_init(x, y, variants=[variant], seeds=(0, 1, 2), dim=8, depth=3, kernel_size=3, patch_size=2)[variant]
    assert len(runs) == 3 and all(len(run["grad_norm"]) == 4 for run in runs)      # z_0 .. z_3, per seed
    assert runs[0]["grad_norm"] != runs[1]["grad_norm"]                              # seeds give different weights
    summary = summarize_init(runs)
    for layer in range(4):
        rms = [run["activation_rms"][layer] for run in runs]
        grads = [run["grad_norm"][layer] for run in runs]
        assert summary["activation_rms"]["mean"][layer] == pytest.approx(sum(rms) / 3)            # arithmetic
        assert summary["grad_norm"]["mean"][layer] == pytest.approx((grads[0] * grads[1] * grads[2]) ** (1 / 3))  # geometric
        assert summary["grad_norm"]["min"][layer] == min(grads) and summary["grad_norm"]["max"][layer] == max(grads)
    with pytest.raises(ValueError, match="at least one seed"):
        summarize_init([])


def test_rank_correlation_p_is_the_chance_of_so_strong_an_ordering():
    # n = 4, the same order: 1 of the 24 orderings gives rho = +1 and 1 gives -1
    assert rank_correlation_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 24)
    # n = 6: the tabulated two-sided 5% critical value is 0.886 (rho = 1 - 6 D / (n (n^2 - 1)), D the sum of squared rank differences)
    assert rank_correlation([1, 2, 3, 4, 5, 6], [1, 2, 4, 3, 6, 5]) == pytest.approx(1 - 6 * 4 / 210)    # 0.886
    assert rank_correlation_p([1, 2, 3, 4, 5, 6], [1, 2, 4, 3, 6, 5]) <= 0.05
    assert rank_correlation_p([1, 2, 3, 4, 5, 6], [1, 2, 3, 6, 4, 5]) > 0.05                            # 0.829
    # sampled orderings estimate the exact value (n = 8: 40,320 orderings), reproducibly
    xs, ys = list(range(8)), [1, 0, 3, 2, 6, 4, 7, 5]
    exact = rank_correlation_p(xs, ys)
    sampled = rank_correlation_p(xs, ys, permutations=20_000, seed=1)
    assert sampled == rank_correlation_p(xs, ys, permutations=20_000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.01) and 0 < exact < 0.05
    assert rank_correlation_p([1, 2, 3, 4, 5], [3, 1, 5, 2, 4]) > 0.5          # rho = 0.3 with five items: chance
    with pytest.raises(ValueError, match="constant"):
        rank_correlation_p([1, 2, 3], [4, 4, 4])


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert rank_correlation([1, 1, 2], [3, 3, 1]) == pytest.approx(-1.0)   # ties share their mean rank
    with pytest.raises(ValueError):
        rank_correlation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        rank_correlation([1, 1, 1], [1, 2, 3])
