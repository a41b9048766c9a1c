"""The grid queue (benchmarks/run_queue.py) and its two grids (ablation, patch_kernel): plan, its trainer flags, skipping, landing, failing, resuming."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from benchmarks import ablation, patch_kernel, run_queue
from convmixer.book.experiments import ABLATION_GRID, load_ablation, summarize_ablation, variant_name
from convmixer.book.stats import compare_variants, holm
from convmixer.train import parse_config

REPO = Path(__file__).resolve().parents[1]


def test_plan_is_eleven_variants_by_three_seeds_seed_by_seed():
    queue = ablation.GRID.plan()
    assert len(queue) == 33 and len({r["name"] for r in queue}) == 33
    assert [r["seed"] for r in queue] == [0] * 11 + [1] * 11 + [2] * 11
    assert [r["variant"] for r in queue[:11]] == [variant_name(*v) for v in ABLATION_GRID]
    assert queue[0]["name"] == "spatial-batch-seed0"   # the paper's variant first: the run to time alone
    assert [r["name"] for r in ablation.GRID.plan((1,), ["none-layer"])] == ["none-layer-seed1"]


def test_every_run_is_a_valid_trainer_command_with_the_shared_settings():
    for run in ablation.GRID.plan():
        cfg = parse_config(ablation.GRID.trainer_args(run))
        assert {k: getattr(cfg, k) for k in ablation.GRID.settings} == ablation.GRID.settings
        assert (cfg.residual, cfg.norm, cfg.activation, cfg.seed) == (run["residual"], run["norm"],
                                                                       run["activation"], run["seed"])
        assert cfg.resume and cfg.out_dir == f"runs/ablation/{run['name']}"
        assert cfg.train_subset == 0 and cfg.test_subset == 0   # the full 50,000 / 10,000 images
    assert parse_config(ablation.GRID.trainer_args(ablation.GRID.plan()[0], threads=1)).threads == 1


def test_patch_kernel_grid_crosses_p_and_k_with_everything_else_shared():
    """Twelve (p, k) cells x three seeds, seed by seed; every run is the ablation's recipe and model with
    only p, k and the seed changed, so the p = 4, k = 5 cell is the ablation's paper variant."""
    grid = patch_kernel.GRID
    queue = grid.plan()
    assert len(queue) == 36 and [r["seed"] for r in queue] == [0] * 12 + [1] * 12 + [2] * 12
    assert {(r["patch_size"], r["kernel_size"]) for r in queue} == {(p, k) for p in (2, 4, 8) for k in (3, 5, 7, 9)}
    paper = ablation.GRID.expected(ablation.GRID.plan((0,), ["spatial-batch"])[0])
    for run in queue:
        cfg = parse_config(grid.trainer_args(run))
        assert (cfg.patch_size, cfg.kernel_size, cfg.seed) == (run["patch_size"], run["kernel_size"], run["seed"])
        shared = {k: v for k, v in paper.items() if k not in ("patch_size", "kernel_size", "seed")}
        assert {k: getattr(cfg, k) for k in shared} == shared
        assert cfg.out_dir == f"runs/patch_kernel/{run['name']}" and cfg.resume


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_results_go_to_the_main_checkout_from_a_worktree(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    _git("init", "-q", cwd=main)
    (main / "f").write_text("x")
    _git("add", "f", cwd=main)
    _git("commit", "-q", "-m", "c", cwd=main)
    _git("worktree", "add", "-q", "--detach", str(tmp_path / "frozen"), "HEAD", cwd=main)
    assert run_queue.default_results(ablation.GRID.results, tmp_path / "frozen").resolve() == (main / ablation.GRID.results).resolve()
    assert run_queue.default_results(ablation.GRID.results, main).resolve() == (main / ablation.GRID.results).resolve()
    assert run_queue.code_state(tmp_path / "frozen")["dirty"] is False
    (tmp_path / "frozen" / "f").write_text("changed")
    assert run_queue.code_state(tmp_path / "frozen")["dirty"] is True


def test_a_result_with_other_settings_is_refused(tmp_path):
    run = ablation.GRID.plan()[0]
    folder = tmp_path / run["name"]
    folder.mkdir()
    (folder / "history.json").write_text("[]")
    (folder / "config.json").write_text(json.dumps({"train": {**ablation.GRID.settings, "epochs": 5}}))
    with pytest.raises(SystemExit, match="other settings"):
        ablation.GRID.is_finished(run, tmp_path)


def test_failed_and_stopped_runs(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_train(args, out_dir, log=print):
        calls.append(out_dir.name)
        return (2, ["NonFiniteLoss: the loss is nan"]) if "-layer-" in out_dir.name else (130, [])

    monkeypatch.setattr(run_queue, "train_one", fake_train)
    argv = ["--results", str(tmp_path), "--seeds", "0", "--only", "none-layer", "spatial-batch", "--allow-dirty"]
    assert ablation.main(argv) == 130     # spatial-batch comes first and is "stopped by the user"
    assert calls == ["spatial-batch-seed0"] and not (tmp_path / "spatial-batch-seed0").exists()
    assert ablation.main(argv[:-3] + ["none-layer", "--allow-dirty"]) == 0
    failed = json.loads((tmp_path / "none-layer-seed0" / "failed.json").read_text())
    assert failed["exit_status"] == 2 and "nan" in failed["log_tail"][-1]
    calls.clear()
    ablation.main(argv[:-3] + ["none-layer", "--allow-dirty"])
    assert calls == []                     # a failed run is not retried ...
    ablation.main(argv[:-3] + ["none-layer", "--allow-dirty", "--retry-failed"])
    assert calls == ["none-layer-seed0"]   # ... unless asked
    assert json.loads((tmp_path / "plan.json").read_text())["settings"] == ablation.GRID.settings


def test_dirty_code_is_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(run_queue, "code_state", lambda cwd=REPO: {"commit": "abc", "dirty": True})
    monkeypatch.setattr(run_queue, "train_one", lambda *a, **k: pytest.fail("must not train"))
    assert ablation.main(["--results", str(tmp_path)]) == 2


TINY = dict(dim=16, depth=1, kernel_size=3, patch_size=4, train_subset=256, test_subset=128, batch_size=64,
            epochs=1, lr_max=0.01, weight_decay=0.01, label_smoothing=0.1, clip_norm=1.0, crop="none", flip=True,
            ra_n=0, precision="fp32", channels_last=True)


def test_a_tiny_grid_lands_skips_and_resumes(cifar_root, tmp_path, monkeypatch):
    """Real trainer runs (a tiny budget in place of SETTINGS): land, skip when finished, land again from the
    checkpoint when only the copy was lost, refuse to mix in another budget."""
    monkeypatch.setattr(ablation.GRID, "settings", TINY)
    runs_dir = Path("runs") / f"test-ablation-{uuid.uuid4().hex[:8]}"
    results = tmp_path / "grid"
    argv = ["--results", str(results), "--runs-dir", str(runs_dir), "--seeds", "0", "--only", "spatial-batch",
            "--threads", "1", "--allow-dirty"]
    try:
        assert ablation.main(argv) == 0
        landed = results / "spatial-batch-seed0"
        history = json.loads((landed / "history.json").read_text())
        config = json.loads((landed / "config.json").read_text())
        meta = json.loads((landed / "meta.json").read_text())
        assert len(history) == 1 and config["model"]["residual"] == "spatial"
        assert config["train"]["out_dir"] == str(runs_dir / "spatial-batch-seed0")   # relative: no machine path
        assert meta["wall_seconds"] > 0 and meta["commit"]
        assert ablation.GRID.is_finished(ablation.GRID.plan((0,), ["spatial-batch"])[0], results)

        monkeypatch.setattr(run_queue, "train_one", lambda *a, **k: pytest.fail("a finished run must be skipped"))
        assert ablation.main(argv) == 0
        monkeypatch.undo()
        monkeypatch.setattr(ablation.GRID, "settings", TINY)

        (landed / "history.json").unlink()     # lost after training: the checkpoint lands it again, no training
        assert ablation.main(argv) == 0
        assert json.loads((landed / "history.json").read_text()) == history

        monkeypatch.setattr(ablation.GRID, "settings", {**TINY, "epochs": 2})
        with pytest.raises(SystemExit, match="other settings"):
            ablation.main(argv)
    finally:
        shutil.rmtree(REPO / runs_dir, ignore_errors=True)


def _row(name, finals):
    return {"variant": name, "finals": finals}


def test_compare_variants_is_welchs_t_test():
    # Hand-computed: means 0.670 and 0.610, variances 1e-4 and 4e-4 over 3 seeds each.
    a, b = _row("a", [0.66, 0.67, 0.68]), _row("b", [0.59, 0.61, 0.63])
    c = compare_variants(a, b)
    se = ((1e-4 + 4e-4) / 3) ** 0.5
    assert c["difference"] == pytest.approx(0.06)
    assert c["standard_error"] == pytest.approx(se)
    assert c["t"] == pytest.approx(0.06 / se)
    dof = se ** 4 / ((1e-4 / 3) ** 2 / 2 + (4e-4 / 3) ** 2 / 2)       # Welch-Satterthwaite: 2.94
    assert c["dof"] == pytest.approx(dof)
    assert 0.01 < c["p"] < 0.05 and c["beyond_noise"] and c["separated"]   # t = 4.65 on 2.94 dof
    low, high = c["ci"]
    assert low > 0 and (low + high) / 2 == pytest.approx(0.06)
    flipped = compare_variants(b, a)
    assert flipped["t"] == pytest.approx(-c["t"]) and flipped["p"] == pytest.approx(c["p"])


def test_compare_variants_does_not_call_overlapping_seeds_a_difference():
    c = compare_variants(_row("a", [0.66, 0.67, 0.68]), _row("b", [0.655, 0.675, 0.665]))
    assert not c["beyond_noise"] and not c["separated"] and c["p"] > 0.5
    assert c["ci"][0] < 0 < c["ci"][1]
    # Equal spreads, 3 seeds a side: 4 degrees of freedom, whose tabulated 97.5% t quantile is 2.776
    c = compare_variants(_row("a", [1.0, 2.0, 3.0]), _row("b", [2.0, 3.0, 4.0]))
    assert c["dof"] == pytest.approx(4)
    assert c["ci"] == pytest.approx((-1 - 2.776 * c["standard_error"], -1 + 2.776 * c["standard_error"]), rel=1e-3)


def test_holm_keeps_the_chance_of_any_false_difference_at_five_percent():
    rows = holm([0.01, 0.02, 0.5])
    # 0.01 < 0.05/3, then 0.02 < 0.05/2, then 0.5 > 0.05: two survive (Bonferroni, 0.05/3 each, keeps one)
    assert [r["survives"] for r in rows] == [True, True, False]
    assert [r["p_holm"] for r in rows] == pytest.approx([0.03, 0.04, 0.5])
    # the adjusted p-values keep the order of the raw ones and never exceed 1
    rows = holm([0.04, 0.01, 0.03, 0.5])
    assert [r["p_holm"] for r in rows] == pytest.approx([0.09, 0.04, 0.09, 0.5])
    assert [r["survives"] for r in rows] == [False, True, False, False]


def test_compare_variants_needs_two_seeds_of_each():
    with pytest.raises(ValueError, match="at least two seeds"):
        compare_variants(_row("a", [0.6]), _row("b", [0.5, 0.6]))


def test_the_shipped_grid_has_every_variant_with_three_seeds_on_the_full_data():
    """Chapter 4 compares every variant of ABLATION_GRID, so each needs seeds 0, 1 and 2."""
    grid = Path(__file__).resolve().parents[1] / "book" / "results" / "ablation" / "grid"
    runs = load_ablation(grid)
    seeds = {row["variant"]: set(row["seeds"]) for row in summarize_ablation(runs)}
    for variant in ABLATION_GRID:
        assert seeds.get(variant_name(*variant), set()) >= {0, 1, 2}, (variant_name(*variant), seeds)
    for run in runs:
        train = run["config"]["train"]
        assert train["train_subset"] == 0 and train["test_subset"] == 0, run["name"]
        assert len(run["history"]) == train["epochs"], run["name"]


def test_pooled_noise_pools_the_within_cell_variances():
    from convmixer.book.stats import pooled_noise

    sd, dof = pooled_noise([[1.0, 2.0], [3.0, 5.0], [7.0]])      # variances 0.5 and 2, one dof each
    assert dof == 2 and sd == pytest.approx(((0.5 + 2.0) / 2) ** 0.5)
    with pytest.raises(ValueError, match="two or more"):
        pooled_noise([[1.0], [2.0]])


def test_compare_with_pooled_noise_is_students_t_on_the_pooled_dof():
    from convmixer.book.stats import compare_with_pooled_noise

    c = compare_with_pooled_noise([0.70, 0.72], [0.60, 0.62], sd=0.01, dof=12)
    assert c["difference"] == pytest.approx(0.10) and c["standard_error"] == pytest.approx(0.01)
    assert c["t"] == pytest.approx(10.0) and c["p"] < 1e-6
    # tabulated 97.5% quantile of Student's t with 12 dof: 2.179
    assert c["ci"] == pytest.approx((0.10 - 2.179 * 0.01, 0.10 + 2.179 * 0.01), abs=1e-4)
    same = compare_with_pooled_noise([0.70, 0.72], [0.70, 0.72], sd=0.01, dof=12)
    assert same["p"] == pytest.approx(1.0) and same["ci"][0] < 0 < same["ci"][1]


def test_load_and_summarize_the_patch_kernel_grid(tmp_path):
    from convmixer.book.experiments import load_grid, summarize_grid

    for p, k, seed, acc in [(4, 5, 1, 0.66), (4, 5, 0, 0.67), (2, 3, 0, 0.7), (8, 9, 0, 0.5)]:
        d = tmp_path / f"p{p}-k{k}-seed{seed}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model": {"patch_size": p, "kernel_size": k},
                                                   "train": {"seed": seed}}))
        (d / "history.json").write_text(json.dumps([{"test_accuracy": acc, "elapsed_seconds": 10.0 * p,
                                                     "images_per_second": 100.0 * p}]))
        (d / "meta.json").write_text(json.dumps({"wall_seconds": 12.0, "command": "python -m convmixer.train"}))
    (tmp_path / "plan.json").write_text("{}")
    (tmp_path / "p2-k9-seed0").mkdir()                     # unfinished: no history yet
    runs = load_grid(tmp_path)
    assert [(r["patch_size"], r["kernel_size"], r["seed"]) for r in runs] == [(2, 3, 0), (4, 5, 0), (4, 5, 1), (8, 9, 0)]
    rows = summarize_grid(runs)
    assert [(r["patch_size"], r["kernel_size"]) for r in rows] == [(2, 3), (4, 5), (8, 9)]
    cell = rows[1]
    assert cell["seeds"] == [0, 1] and cell["mean"] == pytest.approx(0.665)
    assert cell["spread"] == pytest.approx(0.01 / 2 ** 0.5) and cell["images_per_second"] == pytest.approx(400.0)


def test_the_shipped_patch_kernel_runs_reproduce_their_settings():
    """Every landed run of the p x k grid is the grid's own settings with its (p, k, seed), and its
    recorded command parses to exactly that configuration on today's command line."""
    import shlex

    from convmixer.book.experiments import load_grid

    runs = load_grid(REPO / "book" / "results" / "patch_kernel")
    assert runs, "no patch_kernel runs shipped"
    for run in runs:
        expected = patch_kernel.GRID.expected({"variant": f"p{run['patch_size']}-k{run['kernel_size']}",
                                               "seed": run["seed"]})
        assert {k: run["config"]["train"][k] for k in expected} == expected, run["name"]
        argv = shlex.split(run["meta"]["command"])[3:]         # after "python -m convmixer.train"
        cfg = parse_config(argv)
        assert {k: getattr(cfg, k) for k in expected} == expected, run["name"]
        assert len(run["history"]) == patch_kernel.GRID.settings["epochs"]


def test_the_shipped_patch_kernel_grid_is_complete():
    """The chapters compare cells against the noise pooled over the grid, so every (p, k) of the
    grid must hold a finished run for every seed the queue plans (three), and nothing else."""
    from convmixer.book.experiments import load_grid

    runs = load_grid(REPO / "book" / "results" / "patch_kernel")
    seeds: dict[tuple[int, int], set[int]] = {}
    for run in runs:
        seeds.setdefault((run["patch_size"], run["kernel_size"]), set()).add(run["seed"])
    cells = {(p, k) for p in patch_kernel.PATCH_SIZES for k in patch_kernel.KERNEL_SIZES}
    assert set(seeds) == cells
    planned = set(patch_kernel.GRID.seeds)
    assert all(s == planned for s in seeds.values()), {c: sorted(s) for c, s in seeds.items()}
