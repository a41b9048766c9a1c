"""Reading the patch size x kernel size grid (convmixer.book.patch_kernel): the contrasts, the pooled noise, the tables."""
import math
import statistics
from pathlib import Path

import pytest

pytest.importorskip("scipy")

from convmixer.book.patch_kernel import (cell_finals, comparison_table, effect_table, grid_comparisons,
                                         load_speed, training_hours)
from convmixer.book.stats import compare_with_pooled_noise, contrast, pooled_noise

REPO = Path(__file__).resolve().parents[1]


def run(p, k, seed, accuracy):
    return {"patch_size": p, "kernel_size": k, "seed": seed, "history": [{"test_accuracy": accuracy}]}


def grid(p_effect=0.10, k_effect=0.0, noise=(-0.002, 0.002), ps=(8, 4, 2), ks=(3, 5, 7, 9)):
    """Accuracy = 0.5 + p_effect per halving of p + k_effect per step of k, plus a fixed +-noise per seed."""
    runs = []
    for i, p in enumerate(ps):
        for j, k in enumerate(ks):
            for seed, e in enumerate(noise):
                runs.append(run(p, k, seed, 0.5 + i * p_effect + j * k_effect + e))
    return runs


def test_contrast_of_two_cells_is_the_pooled_t_comparison():
    a, b = [0.70, 0.72], [0.60, 0.63, 0.61]
    c = contrast([(1.0, a), (-1.0, b)], sd=0.01, dof=12)
    d = compare_with_pooled_noise(a, b, sd=0.01, dof=12)
    assert c == d
    assert c["difference"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert c["standard_error"] == pytest.approx(0.01 * math.sqrt(1 / 2 + 1 / 3))


def test_contrast_weights_cells_equally_whatever_their_seeds():
    # row a: cells with 1 and 3 seeds; row b: cells with 2 and 2 seeds
    a1, a2, b1, b2 = [0.8], [0.6, 0.6, 0.6], [0.5, 0.5], [0.3, 0.3]
    c = contrast([(0.5, a1), (0.5, a2), (-0.5, b1), (-0.5, b2)], sd=0.02, dof=10)
    assert c["difference"] == pytest.approx((0.8 + 0.6) / 2 - (0.5 + 0.3) / 2)   # not the mean of all runs
    assert c["standard_error"] == pytest.approx(0.02 * math.sqrt(0.25 * (1 + 1 / 3 + 1 / 2 + 1 / 2)))
    low, high = c["ci"]
    assert low < c["difference"] < high


def test_contrast_refuses_an_empty_cell():
    with pytest.raises(ValueError, match="at least one value"):
        contrast([(1.0, [0.5]), (-1.0, [])], sd=0.01, dof=3)


def test_grid_comparisons_find_a_real_effect_and_not_an_absent_one():
    runs = grid(p_effect=0.05, k_effect=0.0)
    result = grid_comparisons(runs)
    sd, dof = pooled_noise(list(cell_finals(runs).values()))
    assert (result["sd"], result["dof"]) == (pytest.approx(sd), 12)
    by_question = {(c["question"], c["over"]): c for c in result["comparisons"]}
    assert len(result["comparisons"]) == 2 + 3 + 3                      # p halvings, k steps, k9 vs k3 at each p
    halving = by_question["p = 4 vs p = 8", "k = 3, 5, 7, 9"]
    assert halving["difference"] == pytest.approx(0.05) and halving["beyond_noise"]
    for c in result["comparisons"]:
        assert c["p_holm"] >= c["p"]
        if c["question"].startswith("k"):
            assert c["difference"] == pytest.approx(0.0, abs=1e-12) and not c["beyond_noise"]


def test_grid_comparisons_call_a_difference_inside_the_noise_within_it():
    runs = grid(p_effect=0.001, noise=(-0.02, 0.02))                 # 0.1 points against a 2.8-point spread
    halving = grid_comparisons(runs)["comparisons"][0]
    assert halving["question"] == "p = 4 vs p = 8" and not halving["beyond_noise"]
    assert halving["ci"][0] < 0 < halving["ci"][1]


def test_grid_comparisons_average_only_over_cells_both_rows_have():
    runs = [r for r in grid() if (r["patch_size"], r["kernel_size"]) != (2, 9)]
    by_question = {c["question"]: c for c in grid_comparisons(runs)["comparisons"]}
    assert grid_comparisons(runs)["comparisons"][1]["over"] == "k = 3, 5, 7"
    assert by_question["k = 9 vs k = 7"]["over"] == "p = 8, 4"


def test_grid_comparisons_need_a_cell_with_two_seeds():
    with pytest.raises(ValueError, match="two or more values"):
        grid_comparisons(grid(noise=(0.0,)))


def test_effect_table_shows_each_cells_mean_spread_and_seeds():
    runs = grid(p_effect=0.10, noise=(-0.01, 0.01))
    text = effect_table(runs, "p")
    spread = f"{statistics.stdev([49.0, 51.0]):.1f}"
    assert f"50.0 ± {spread} (2)" in text and "p = 8, 16 tokens" in text and "k = 9" in text
    assert "70.0 ± " in effect_table(runs, "k")                         # p = 2 column
    with pytest.raises(ValueError, match="'p' or 'k'"):
        effect_table(runs, "d")


def test_comparison_table_gives_each_verdict_in_words():
    text = comparison_table(grid_comparisons(grid(p_effect=0.05))["comparisons"])
    assert "beyond the noise" in text and "within the noise" in text and "+5.00" in text


def test_training_hours_are_epochs_of_images_at_the_throughput():
    assert training_hours(1000.0, epochs=2) == pytest.approx(2 * 50_000 / 1000 / 3600)


def test_the_shipped_speed_file_prices_every_grid_cell_and_p1():
    speed = load_speed(REPO / "book" / "results" / "perf" / "patch_kernel_speed.json")
    expected = {(p, k) for p in (8, 4, 2) for k in (3, 5, 7, 9)} | {(1, 5)}
    assert set(speed) == expected
    from convmixer.costs import multiply_accumulates
    for (p, k), s in speed.items():
        assert s["images_per_second"] > 0
        assert s["macs_per_image"] == multiply_accumulates(128, 8, k, p)["total"]
