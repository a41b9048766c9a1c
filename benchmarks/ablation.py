"""The residual and normalisation ablation of issue 16, as a queue that can stop and resume anywhere.

Eleven variants (``convmixer.diagnostics.ABLATION_GRID``): the five residual placements of
``convmixer.model.ConvMixerLayer`` with BatchNorm and with LayerNorm over channels, plus ReLU instead
of GELU at the paper's placement with BatchNorm; three seeds each; all 50,000 training images, all
10,000 test images.  Run it from a frozen copy of the code, so that edits to the checkout cannot
reach a grid half-way through::

    git worktree add --detach ../convmixer-ablation HEAD      # the code, frozen at this commit
    cd ../convmixer-ablation
    nice -n 10 python -m benchmarks.ablation --max-runs 1     # the first run alone: time it, see the projection
    nice -n 10 python -m benchmarks.ablation                  # the rest; rerun the same line to resume

Each run's ``config.json``, ``history.json`` and ``meta.json`` (commit, wall clock, load average)
land in ``RESULTS/<variant>-seed<N>/`` as soon as it finishes.  ``RESULTS`` defaults to
``book/results/ablation/grid/`` of the *main* checkout when run from a linked worktree (of this
checkout otherwise); ``--results`` overrides it.  The first ablation's runs stay in
``book/results/ablation/<variant>-seed<N>/``; ``convmixer.diagnostics.load_ablation`` of that folder
skips ``grid/``, and ``load_ablation(".../ablation/grid")`` reads only the new runs.

Stopping and resuming.  A finished run (its ``history.json`` in ``RESULTS`` with every epoch) is
skipped.  The trainer itself checkpoints every epoch and on Ctrl-C / SIGTERM into
``--runs-dir/<name>/last.pt`` (scratch, in the worktree), and every run is started with
``--resume``, so an interrupted run continues from its last checkpoint with the weights an
uninterrupted run would have had.  ``RESULTS/plan.json`` records the shared settings and the
commit; a later invocation with other settings, or from another commit, refuses to mix them into
the same grid (``--allow-other-commit`` overrides the commit check only).  A run that fails (a
non-finite loss is a result: the trainer stops with status 2) leaves ``failed.json`` with the end of
its log and the queue moves on; it is retried only with ``--retry-failed``.  The queue is ordered
seed by seed (all eleven variants with seed 0 first), so a grid stopped early is balanced.

Sizing (why ConvMixer-128/8, p = 4, two epochs).  The budget is about 90 minutes of a 2-core CPU for
33 runs, i.e. about 160 s per run including start-up and the two evaluations on 10,000 images, and
the target is 65-75% test accuracy for the paper's variant.

* The reference point is the library's CPU preset, ConvMixer-192/6 with p = 4: 615 images/s on the
  2 idle cores (``book/results/convmixer-cpu-history.json``), 54.5 / 66.8 / 76.0 / 77.7% after
  epochs 1-4 of its 4-epoch schedule, 75% after a 3-epoch schedule.
* Depth 8 rather than 6: the paper's CIFAR-10 depth, and a residual's placement matters more the
  deeper the stack.  ConvMixer-128/8 with p = 4 needs 10.4 M multiply-accumulates per image against
  the preset's 16.6 M (x 0.63; ``convmixer.costs.multiply_accumulates``) and has 171k parameters.
* One measurement, 40 s of interleaved training steps (batch 256, channels_last, AdamW) of both
  models on this machine while it was running another training job (load average 1.5-4.9): the
  preset's model at 76 images/s (8x below its idle rate, so the absolute numbers say nothing),
  ConvMixer-128/8 1.31x faster than it.  Small widths use the cores less well than the
  multiply-accumulate ratio (1.59x) promises, so the estimate for the idle machine is
  615 x 1.3 = 800 images/s, up to ~980 if the ratio approaches 1.59x.
* Two epochs: 100,000 images / 800 per s = 125 s of training, plus ~4 s per evaluation and ~6 s
  start-up: ~140 s per run, 33 runs in ~77 minutes (~64 at 980 images/s).  Three epochs would take
  ~205 s per run, ~113 minutes: over budget.  Two epochs of the preset's recipe on a model of 0.63x
  its compute should land between the preset's 66.8% (epoch 2 of 4, before the learning rate had
  decayed) and its 75% (3 epochs): the 65-75% band.
* The recipe is the CPU preset's apart from the model and the epochs: batch 256, AdamW with the
  one-cycle schedule to lr 0.01, weight decay 0.01, label smoothing 0.1, gradient clipping at 1.0,
  flips only, fp32.

That is an estimate made on a busy machine.  ``--max-runs 1`` runs the paper's variant with seed 0
alone first and prints the projected time of the whole grid from it; if that projection is far off
(over ~100 minutes), change ``SETTINGS`` in a new commit before any other run starts (``plan.json``
then has to go, together with that one run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from convmixer.checkpoint import atomic_save_json, atomic_write
from convmixer.diagnostics import ABLATION_GRID, variant_name

REPO = Path(__file__).resolve().parents[1]

# Everything the runs share; the trainer's flags, spelled out rather than taken from a preset so that
# every run's config.json says exactly what it ran.
SETTINGS: dict = dict(
    dim=128, depth=8, kernel_size=5, patch_size=4,
    train_subset=0, test_subset=0, batch_size=256, epochs=2,
    lr_max=0.01, weight_decay=0.01, label_smoothing=0.1, clip_norm=1.0,
    crop="none", flip=True, ra_n=0, precision="fp32", channels_last=True,
)
SEEDS = (0, 1, 2)
RESULTS = Path("book") / "results" / "ablation" / "grid"   # relative to the checkout that receives them
RUNS = Path("runs") / "ablation"                            # scratch: checkpoints, logs (relative to the code)
STOPPED_BY_USER = (130, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGTERM)


def plan(seeds=SEEDS, only: list[str] | None = None) -> list[dict]:
    """The queue: one entry per run, seed by seed, the paper's variant first within each seed."""
    runs = []
    for seed in seeds:
        for residual, norm, activation in ABLATION_GRID:
            variant = variant_name(residual, norm, activation)
            if only and variant not in only:
                continue
            runs.append({"name": f"{variant}-seed{seed}", "variant": variant, "residual": residual,
                         "norm": norm, "activation": activation, "seed": seed})
    return runs


def trainer_args(run: dict, runs_dir: Path = RUNS, threads: int = 0) -> list[str]:
    """The ``python -m convmixer.train`` flags of one run (always with --resume: continue if interrupted).

    ``threads`` (0: torch's default) changes the speed and at most the last digits of the arithmetic, not
    the experiment, so it is not part of the plan (the trainer resumes a run under another count).
    """
    args = ["--threads", str(threads)] if threads else []
    for key, value in {**SETTINGS, "residual": run["residual"], "norm": run["norm"],
                       "activation": run["activation"], "seed": run["seed"]}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args + ["--out-dir", str(runs_dir / run["name"]), "--resume"]


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def default_results(cwd: Path = REPO) -> Path:
    """``book/results/ablation/grid`` of the main checkout when this code is a linked worktree, else of this one."""
    try:
        common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=cwd))
        own = Path(git("rev-parse", "--path-format=absolute", "--git-dir", cwd=cwd))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return cwd / RESULTS
    return (common.parent if common != own else cwd) / RESULTS


def code_state(cwd: Path = REPO) -> dict:
    """The commit the code is at, and whether tracked files differ from it (then the code is not frozen)."""
    try:
        return {"commit": git("rev-parse", "HEAD", cwd=cwd),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", cwd=cwd))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": True}


def is_finished(run: dict, results: Path) -> bool:
    """Its history.json is in ``results`` with every epoch, and its config is this grid's."""
    folder = results / run["name"]
    try:
        history = json.loads((folder / "history.json").read_text())
        config = json.loads((folder / "config.json").read_text())["train"]
    except (OSError, ValueError, KeyError):
        return False
    expected = {**SETTINGS, "residual": run["residual"], "norm": run["norm"], "activation": run["activation"],
                "seed": run["seed"]}
    different = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
    if different:
        raise SystemExit(f"{folder} holds a run with other settings ({different}); "
                         f"it is not part of this grid: move it away, or use another --results")
    return len(history) == SETTINGS["epochs"]


def check_plan(results: Path, state: dict, allow_other_commit: bool) -> None:
    """Write ``plan.json`` on the first call; afterwards refuse other settings (and, unless allowed, another commit)."""
    path = results / "plan.json"
    mine = {"settings": SETTINGS, "variants": [variant_name(*v) for v in ABLATION_GRID], "commit": state["commit"]}
    if path.is_file():
        old = json.loads(path.read_text())
        if old["settings"] != SETTINGS:
            raise SystemExit(f"{path} was made with other settings: {old['settings']} (now {SETTINGS}); "
                             f"one grid must share one budget")
        if old["commit"] != state["commit"] and not allow_other_commit:
            raise SystemExit(f"{path} was started at commit {old['commit']}, this code is at {state['commit']}; "
                             f"resume from a worktree at that commit, or pass --allow-other-commit")
        return
    results.mkdir(parents=True, exist_ok=True)
    atomic_save_json({**mine, "seeds": list(SEEDS), "started": now(),
                      "command": "python -m benchmarks.ablation", "settings_note": "the trainer's flags, "
                      "plus --residual/--norm/--activation/--seed per run"}, path)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def train_one(run: dict, runs_dir: Path, threads: int = 0, log=print) -> tuple[int, list[str]]:
    """Run the trainer in a child process (this checkout's code), echoing and logging its output.

    Returns its exit status and the last lines of its output.  SIGTERM to this process is passed on
    to the child, which then saves its checkpoint before it exits.
    """
    out_dir = REPO / runs_dir / run["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "convmixer.train", *trainer_args(run, runs_dir, threads)]
    tail: list[str] = []
    with open(out_dir / "train.log", "a") as logfile:
        logfile.write(f"\n# {now()} {shlex.join(cmd[1:])}\n")
        child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 bufsize=1)
        previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        try:
            for line in child.stdout:
                log(line, end="")
                logfile.write(line)
                tail = (tail + [line.rstrip()])[-20:]
            rc = child.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C and is saving its checkpoint
            rc = child.wait()
            rc = rc if rc in STOPPED_BY_USER else 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    return rc, tail


def land(run: dict, runs_dir: Path, results: Path, meta: dict) -> None:
    """Copy a finished run's config and history into ``results`` (history last: it marks the run finished)."""
    src, dest = REPO / runs_dir / run["name"], results / run["name"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "failed.json").unlink(missing_ok=True)
    atomic_write(dest / "config.json", lambda f: f.write((src / "config.json").read_bytes()))
    atomic_save_json(meta, dest / "meta.json")
    atomic_write(dest / "history.json", lambda f: f.write((src / "history.json").read_bytes()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=None,
                        help="where finished runs land (default: book/results/ablation/grid of the main checkout)")
    parser.add_argument("--runs-dir", type=Path, default=RUNS, help="scratch for checkpoints and logs, "
                        "relative to this checkout")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--only", nargs="+", metavar="VARIANT", default=None,
                        help=f"only these variants ({', '.join(variant_name(*v) for v in ABLATION_GRID)})")
    parser.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0: all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0: torch's default, all cores); 1 on a machine busy with "
                             "other work, where threads that wait for each other lose far more than they gain")
    parser.add_argument("--dry-run", action="store_true", help="print the queue and each run's status, run nothing")
    parser.add_argument("--retry-failed", action="store_true", help="run again the runs that left failed.json")
    parser.add_argument("--allow-other-commit", action="store_true",
                        help="resume a grid that plan.json says was started at another commit")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run although tracked files differ from the commit (the code is then not frozen)")
    args = parser.parse_args(argv)
    if args.runs_dir.is_absolute():
        parser.error("--runs-dir must be relative to the checkout (it is recorded in every config.json)")
    known = {variant_name(*v) for v in ABLATION_GRID}
    if args.only and not set(args.only) <= known:
        parser.error(f"unknown variants {sorted(set(args.only) - known)}; choose from {sorted(known)}")

    results = (args.results or default_results()).resolve()
    queue = plan(args.seeds, args.only)
    state = code_state()
    status = {}
    for run in queue:
        failed = (results / run["name"] / "failed.json").is_file()
        status[run["name"]] = ("finished" if is_finished(run, results) else
                               "failed" if failed and not args.retry_failed else "to run")
    todo = [run for run in queue if status[run["name"]] == "to run"]
    dirty = " (with uncommitted changes)" if state["dirty"] else ""
    print(f"results: {results}\ncode: commit {state['commit']}{dirty}\n"
          f"queue: {len(queue)} runs, {sum(s == 'finished' for s in status.values())} finished, "
          f"{sum(s == 'failed' for s in status.values())} failed, {len(todo)} to run", flush=True)
    if args.dry_run:
        for run in queue:
            print(f"  {status[run['name']]:<9} {run['name']:<28} python -m convmixer.train "
                  f"{shlex.join(trainer_args(run, args.runs_dir, args.threads))}")
        return 0
    if state["dirty"] and not args.allow_dirty:
        print("error: tracked files differ from the commit, so the code is not frozen; run from a clean "
              "`git worktree` (see --help) or pass --allow-dirty", file=sys.stderr)
        return 2
    if not todo:
        return 0
    check_plan(results, state, args.allow_other_commit)

    walls = []
    for i, run in enumerate(todo[:args.max_runs or None]):
        print(f"\n=== {i + 1}/{len(todo)}: {run['name']} ===", flush=True)
        started, load0, t0 = now(), load_average(), time.perf_counter()
        rc, tail = train_one(run, args.runs_dir, args.threads)
        wall = time.perf_counter() - t0
        meta = {"commit": state["commit"], "dirty": state["dirty"], "started": started, "finished": now(),
                "wall_seconds": round(wall, 1), "load_average_start": load0, "load_average_end": load_average(),
                "command": "python -m convmixer.train " + shlex.join(trainer_args(run, args.runs_dir, args.threads))}
        if rc in STOPPED_BY_USER:
            print(f"\n{run['name']} was stopped by a signal (exit status {rc}); run the same command to resume "
                  f"it from its last checkpoint (the trainer saves one when it is interrupted)", file=sys.stderr)
            return 130
        if rc != 0:
            (results / run["name"]).mkdir(parents=True, exist_ok=True)
            atomic_save_json({**meta, "exit_status": rc, "log_tail": tail}, results / run["name"] / "failed.json")
            print(f"\n{run['name']} failed (exit status {rc}); recorded in failed.json, moving on", file=sys.stderr)
            continue
        land(run, args.runs_dir, results, meta)
        walls.append(wall)
        left = len(todo) - (i + 1)
        mean = sum(walls) / len(walls)
        print(f"landed {run['name']} in {wall:.0f} s; {left} runs left, about {left * mean / 60:.0f} minutes "
              f"at {mean:.0f} s per run (whole grid of {len(queue)}: ~{len(queue) * mean / 60:.0f} minutes)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
