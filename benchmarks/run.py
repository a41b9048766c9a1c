"""Run the benchmarks of issue 6, print a table per benchmark and write JSON to book/results/perf/.

    python -m benchmarks.run                        # loader, step, preset, time-to-accuracy (from results)
    python -m benchmarks.run --only loader step     # some of them
    python -m benchmarks.run --only tta --train     # rerun the ~6-minute CPU training as well
    python -m benchmarks.run --only seeds           # the CPU preset with seeds 1 and 2 (~12 minutes)

Timings on a shared machine are noisy: every pair is measured in one run, interleaved and repeated,
and the tables give the median of the per-round ratios together with the load average.
"""
from __future__ import annotations

import argparse
import sys

from . import common

STEP_SHAPE = dict(dim=256, depth=8, kernel_size=5, patch_size=2, batch=128)  # the paper's CIFAR-10 model


def preset_shape() -> dict:
    from convmixer.config import RECIPES, TrainConfig

    cfg = TrainConfig(**RECIPES["cpu"])
    return dict(dim=cfg.dim, depth=cfg.depth, kernel_size=cfg.kernel_size, patch_size=cfg.patch_size,
                batch=cfg.batch_size)


def table(headers: list[str], rows: list[list]) -> str:
    """The library's text table, left-aligned: the layout of the saved reports and of chapter 8."""
    from convmixer.book.tables import text_table

    return text_table(headers, rows, align="left")


def bench_loader(args) -> dict:
    from convmixer.data import load_cifar10

    from . import loader

    x, y = load_cifar10("train")
    env = common.environment()
    res = loader.run(x, y, batch_size=args.loader_batch, repeats=args.repeats, batches=args.loader_batches,
                     seconds=args.loader_seconds)
    print(table(["official flags", "RandAugment", "official img/s", "library img/s", "x official",
                 "GPU-path RA img/s", "x official"],
                [[r["setting"], f"n={r['ra_n']}, m={r['ra_m']}", f"{r['official_median']:.0f}",
                  f"{r['library_median']:.0f}", f"{r['ratio_median']:.2f}x", f"{r['library_gpu_path_median']:.0f}",
                  f"{r['ratio_gpu_path_median']:.2f}x"] for r in res["rows"]]))
    return {"benchmark": "loader", "command": common.command_line(), "environment": env, **res}


def bench_step(args, shape: dict, name: str, allocators: bool) -> dict:
    from . import step

    env = common.environment()
    print(f"ConvMixer-{shape['dim']}/{shape['depth']} k={shape['kernel_size']} p={shape['patch_size']}, "
          f"batch {shape['batch']}:")
    res = step.run(shape, repeats=args.repeats, steps=args.steps, include_allocators=allocators,
                   compile=args.compile)
    fp32 = res["matmul_gflops"]["fp32"]
    copy = res["copy_gbytes_per_second"]
    print(table(["variant", "img/s (median)", "x official (wall)", "x official (CPU time)", "faults/step",
                 "model GFLOP/s", "of fp32 matmul", "min GB/s", "of copy"],
                [[r["name"], f"{r['images_per_second_median']:.1f}", f"{r['ratio_to_official_median']:.2f}x",
                  f"{r['cpu_ratio_to_official_median']:.2f}x", f"{r['minor_faults_per_step_median']:.0f}",
                  f"{r['model_gflops_per_second_median']:.0f}", f"{r['model_gflops_per_second_median'] / fp32:.0%}",
                  f"{r['min_traffic_gbytes_per_second']:.1f}", f"{r['min_traffic_gbytes_per_second'] / copy:.0%}"]
                 for r in res["rows"]]))
    print(f"fp32 matmul {fp32:.0f} GFLOP/s, bf16 matmul {res['matmul_gflops']['bf16']:.0f} GFLOP/s (2048^3, best of 10); "
          f"copy {copy:.1f} GB/s (256 MiB, read + write)")
    return {"benchmark": name, "command": common.command_line(), "environment": env, **res}


def bench_tta(args) -> dict:
    from . import time_to_accuracy as tta

    env = common.environment()
    res = tta.train(out_dir=args.train_dir) if args.train else tta.from_results()
    if args.ship:
        for path in tta.ship(args.train_dir, res):
            print("shipped", path.relative_to(common.REPO))
    print(table(["epoch", "test accuracy", "training seconds", "img/s"],
                [[h["epoch"], f"{h['test_accuracy']:.4f}", f"{h['elapsed_seconds']:.0f}",
                  f"{h['images_per_second']:.0f}"] for h in res["per_epoch"]]))
    reached = res["reached_at_epoch"]
    print(f"{res['target_accuracy']:.0%} reached at epoch {reached}, after "
          f"{res['training_seconds_to_target']:.0f} s of training" if reached else
          f"{res['target_accuracy']:.0%} not reached; final {res['final_test_accuracy']:.4f}")
    return {"benchmark": "time_to_accuracy", "command": common.command_line(), "environment": env, **res}


def bench_seeds(args) -> dict:
    """The CPU preset again with other seeds: how reliably does it reach 75%?"""
    from . import time_to_accuracy as tta

    env = common.environment()
    runs = [tta.from_results()] + [tta.train(["--seed", str(seed)]) for seed in args.seeds]
    seeds = [0] + list(args.seeds)
    print(table(["seed", "final test accuracy", "reached 75% at epoch", "training seconds", "wall seconds"],
                [[seed, f"{r['final_test_accuracy']:.4f}", r["reached_at_epoch"] or "-", f"{r['training_seconds']:.0f}",
                  f"{r['meta']['wall_seconds']:.0f}" if seed else "(shipped run)"] for seed, r in zip(seeds, runs)]))
    return {"benchmark": "cpu_preset_seeds", "command": common.command_line(), "environment": env,
            "note": "seed 0 is the shipped run (book/results/convmixer-cpu-history.json); the others were trained now",
            "runs": [{"seed": seed, **r} for seed, r in zip(seeds, runs)]}


def saved_by_training() -> bool:
    """Whether the saved time-to-accuracy result comes from ``--train`` (a timed re-run), not from the history."""
    import json

    path = common.RESULTS / "time_to_accuracy.json"
    return path.exists() and "--train" in json.loads(path.read_text()).get("command", "").split()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=("loader", "step", "preset", "tta", "seeds"),
                   default=["loader", "step", "preset", "tta"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2],
                   help="seeds: train the CPU preset with these seeds too (about 6 minutes each; not in the default set)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per pair")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per round")
    p.add_argument("--loader-batch", type=int, default=512)
    p.add_argument("--loader-batches", type=int, default=8, help="loader: at least this many batches per round")
    p.add_argument("--loader-seconds", type=float, default=1.0, help="loader: and at least this many seconds")
    p.add_argument("--no-allocators", action="store_true", help="skip the jemalloc/tcmalloc/mallopt variants")
    p.add_argument("--compile", action="store_true", help="add a torch.compile variant (slow to compile)")
    p.add_argument("--train", action="store_true", help="tta: rerun the CPU preset instead of reading its results")
    p.add_argument("--train-dir", help="tta --train: keep the run in this folder (relative to the repository, "
                                        "e.g. runs/cpu-rerun) instead of a temporary one")
    p.add_argument("--ship", action="store_true", help="tta --train --train-dir: make that run the book's reference "
                                                        "CPU run (book/results/convmixer-cpu*)")
    p.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    if args.ship and not (args.train and args.train_dir):
        p.error("--ship needs --only tta --train --train-dir RUN")
    print(f"load average {common.load_average()} on {common.cpu_name()}, {common.environment()['logical_cpus']} "
          f"logical CPUs; ratios are medians over {args.repeats} interleaved rounds")
    jobs = {"loader": lambda: bench_loader(args),
            "step": lambda: bench_step(args, STEP_SHAPE, "step", not args.no_allocators),
            "preset": lambda: bench_step(args, preset_shape(), "step_cpu_preset", False),
            "tta": lambda: bench_tta(args), "seeds": lambda: bench_seeds(args)}
    names = {"loader": "loader", "step": "step", "preset": "step_cpu_preset", "tta": "time_to_accuracy",
             "seeds": "cpu_preset_seeds"}
    for key in args.only:
        print(f"\n== {names[key]}")
        res = jobs[key]()
        if key == "tta" and not args.train and saved_by_training():
            print("kept book/results/perf/time_to_accuracy.json: it holds a --train re-run, whose clock is worth more "
                  "than the saved history's (rerun with --train to replace it)")
            continue
        if not args.no_write:
            print("wrote", common.write_json(names[key], res).relative_to(common.REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
