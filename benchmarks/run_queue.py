"""A grid of training runs as a queue that can stop and resume anywhere (the ablation and the p x k grid).

A :class:`Grid` names its runs (``variants``, each a few trainer flags, times ``seeds``) and the
flags every run shares (``settings``).  :func:`main` is the command line of a grid module
(``python -m benchmarks.ablation``, ``python -m benchmarks.patch_kernel``).  Run it from a frozen
copy of the code, so that edits to the checkout cannot reach a grid half-way through::

    git worktree add --detach ../convmixer-grid HEAD         # the code, frozen at this commit
    cd ../convmixer-grid
    nice -n 10 python -m benchmarks.<grid> --max-runs 1      # the first run alone: time it, see the projection
    nice -n 10 python -m benchmarks.<grid>                   # the rest; rerun the same line to resume

Each run's ``config.json``, ``history.json`` and ``meta.json`` (commit, wall clock, load average,
the exact trainer command) land in ``RESULTS/<run>/`` as soon as it finishes.  ``RESULTS`` is the
grid's folder under ``book/results/`` of the *main* checkout when run from a linked worktree (of
this checkout otherwise); ``--results`` overrides it.

Stopping and resuming.  A finished run (its ``history.json`` in ``RESULTS`` with every epoch) is
skipped.  The trainer checkpoints every epoch and on Ctrl-C / SIGTERM into ``--runs-dir/<run>/last.pt``
(scratch, in the worktree), and every run is started with ``--resume``, so an interrupted run
continues from its last checkpoint with the weights an uninterrupted run would have had.
``RESULTS/plan.json`` records the shared settings and the commit; a later invocation with other
settings, or from another commit, refuses to mix them into the same grid (``--allow-other-commit``
overrides the commit check only).  A run that fails (a non-finite loss is a result: the trainer stops
with status 2) leaves ``failed.json`` with the end of its log and the queue moves on; it is retried
only with ``--retry-failed``.  The queue is ordered seed by seed, so a grid stopped early is balanced.
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
from dataclasses import dataclass
from pathlib import Path

from convmixer.checkpoint import atomic_save_json, atomic_write

REPO = Path(__file__).resolve().parents[1]
STOPPED_BY_USER = (130, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGTERM)


@dataclass
class Grid:
    """One experiment: ``variants`` (name -> the trainer flags that make it) x ``seeds``, sharing ``settings``.

    ``settings`` spell out the trainer's flags rather than name a preset, so that every run's
    ``config.json`` says exactly what it ran.
    """
    prog: str                        # "python -m benchmarks.ablation"
    description: str
    settings: dict
    variants: dict[str, dict]
    seeds: tuple[int, ...]
    results: Path                    # relative to the checkout that receives the runs
    runs: Path                       # scratch (checkpoints, logs), relative to the code

    def plan(self, seeds=None, only: list[str] | None = None) -> list[dict]:
        """The queue: one entry per run, seed by seed, variants in their declared order within each seed."""
        return [{"name": f"{variant}-seed{seed}", "variant": variant, **flags, "seed": seed}
                for seed in (self.seeds if seeds is None else seeds)
                for variant, flags in self.variants.items() if not only or variant in only]

    def expected(self, run: dict) -> dict:
        """Every trainer setting of one run: the shared ones, its variant's, its seed."""
        return {**self.settings, **self.variants[run["variant"]], "seed": run["seed"]}

    def trainer_args(self, run: dict, runs_dir: Path | None = None, threads: int = 0) -> list[str]:
        """The ``python -m convmixer.train`` flags of one run (always with --resume: continue if interrupted).

        ``threads`` (0: torch's default) changes the speed and at most the last digits of the arithmetic,
        not the experiment, so it is not part of the plan (the trainer resumes a run under another count).
        """
        args = ["--threads", str(threads)] if threads else []
        for key, value in self.expected(run).items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        return args + ["--out-dir", str((runs_dir or self.runs) / run["name"]), "--resume"]

    def is_finished(self, run: dict, results: Path) -> bool:
        """Its history.json is in ``results`` with every epoch, and its config is this grid's."""
        folder = results / run["name"]
        try:
            history = json.loads((folder / "history.json").read_text())
            config = json.loads((folder / "config.json").read_text())["train"]
        except (OSError, ValueError, KeyError):
            return False
        different = {k: (config.get(k), v) for k, v in self.expected(run).items() if config.get(k) != v}
        if different:
            raise SystemExit(f"{folder} holds a run with other settings ({different}); "
                             f"it is not part of this grid: move it away, or use another --results")
        return len(history) == self.settings["epochs"]

    def check_plan(self, results: Path, state: dict, allow_other_commit: bool) -> None:
        """Write ``plan.json`` on the first call; afterwards refuse other settings (and, unless allowed,
        another commit)."""
        path = results / "plan.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old["settings"] != self.settings:
                raise SystemExit(f"{path} was made with other settings: {old['settings']} (now {self.settings}); "
                                 f"one grid must share one budget")
            if old["commit"] != state["commit"] and not allow_other_commit:
                raise SystemExit(f"{path} was started at commit {old['commit']}, this code is at "
                                 f"{state['commit']}; resume from a worktree at that commit, or pass "
                                 f"--allow-other-commit")
            return
        results.mkdir(parents=True, exist_ok=True)
        atomic_save_json({"settings": self.settings, "variants": list(self.variants), "commit": state["commit"],
                          "seeds": list(self.seeds), "started": now(), "command": self.prog,
                          "settings_note": "the trainer's flags, plus each variant's flags and --seed per run"},
                         path)


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def default_results(relative: Path, cwd: Path = REPO) -> Path:
    """``relative`` in the main checkout when this code is a linked worktree, else in this one."""
    try:
        common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=cwd))
        own = Path(git("rev-parse", "--path-format=absolute", "--git-dir", cwd=cwd))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return cwd / relative
    return (common.parent if common != own else cwd) / relative


def code_state(cwd: Path = REPO) -> dict:
    """The commit the code is at, and whether tracked files differ from it (then the code is not frozen)."""
    try:
        return {"commit": git("rev-parse", "HEAD", cwd=cwd),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", cwd=cwd))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": True}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def train_one(args: list[str], out_dir: Path, log=print) -> tuple[int, list[str]]:
    """Run the trainer with ``args`` in a child process (this checkout's code), echoing and logging its output.

    Returns its exit status and the last lines of its output.  SIGTERM to this process is passed on
    to the child, which then saves its checkpoint before it exits.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "convmixer.train", *args]
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


def main(grid: Grid, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=grid.prog, description=grid.description)
    parser.add_argument("--results", type=Path, default=None,
                        help=f"where finished runs land (default: {grid.results} of the main checkout)")
    parser.add_argument("--runs-dir", type=Path, default=grid.runs, help="scratch for checkpoints and logs, "
                        "relative to this checkout")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(grid.seeds))
    parser.add_argument("--only", nargs="+", metavar="VARIANT", default=None,
                        help=f"only these variants ({', '.join(grid.variants)})")
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
    if args.only and not set(args.only) <= set(grid.variants):
        parser.error(f"unknown variants {sorted(set(args.only) - set(grid.variants))}; "
                     f"choose from {list(grid.variants)}")

    results = (args.results or default_results(grid.results)).resolve()
    queue = grid.plan(args.seeds, args.only)
    state = code_state()
    status = {}
    for run in queue:
        failed = (results / run["name"] / "failed.json").is_file()
        status[run["name"]] = ("finished" if grid.is_finished(run, results) else
                               "failed" if failed and not args.retry_failed else "to run")
    todo = [run for run in queue if status[run["name"]] == "to run"]
    dirty = " (with uncommitted changes)" if state["dirty"] else ""
    print(f"results: {results}\ncode: commit {state['commit']}{dirty}\n"
          f"queue: {len(queue)} runs, {sum(s == 'finished' for s in status.values())} finished, "
          f"{sum(s == 'failed' for s in status.values())} failed, {len(todo)} to run", flush=True)
    if args.dry_run:
        for run in queue:
            print(f"  {status[run['name']]:<9} {run['name']:<28} python -m convmixer.train "
                  f"{shlex.join(grid.trainer_args(run, args.runs_dir, args.threads))}")
        return 0
    if state["dirty"] and not args.allow_dirty:
        print("error: tracked files differ from the commit, so the code is not frozen; run from a clean "
              "`git worktree` (see --help) or pass --allow-dirty", file=sys.stderr)
        return 2
    if not todo:
        return 0
    grid.check_plan(results, state, args.allow_other_commit)

    walls = []
    for i, run in enumerate(todo[:args.max_runs or None]):
        print(f"\n=== {i + 1}/{len(todo)}: {run['name']} ===", flush=True)
        started, load0, t0 = now(), load_average(), time.perf_counter()
        trainer_args = grid.trainer_args(run, args.runs_dir, args.threads)
        rc, tail = train_one(trainer_args, REPO / args.runs_dir / run["name"])
        wall = time.perf_counter() - t0
        meta = {"commit": state["commit"], "dirty": state["dirty"], "started": started, "finished": now(),
                "wall_seconds": round(wall, 1), "load_average_start": load0, "load_average_end": load_average(),
                "command": "python -m convmixer.train " + shlex.join(trainer_args)}
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
