"""Training-step throughput: the library's trainer step against the official eager fp32 step.

Each variant runs in its own child process (``python -m benchmarks.step --impl ...``) so that an
allocator given through ``LD_PRELOAD`` applies to it alone; :func:`run` alternates the variants
round by round, so the slow phases of a shared machine hit all of them alike, and reports medians.

The official variant is ``convmixer.reference.official_convmixer`` (the published nn.Sequential)
with a plain eager fp32 AdamW step on contiguous (NCHW) tensors.  The library variants are
``convmixer.train.Trainer.train_step`` on a Trainer built as the command line builds it
(channels_last by default), with the precision and the memory allocator varied.

Why the allocator matters: at batch 128 a 256 x 16 x 16 fp32 activation is exactly 32 MiB, which
is glibc's largest mmap threshold, so glibc returns every such tensor to the kernel when it is
freed and the next step page-faults all of it in again (``minor_faults_per_step``).  jemalloc
and tcmalloc keep the memory; so does glibc with mmap switched off (``mallopt``), which is what
the command line (``python -m convmixer.train``) does on a CPU (``convmixer.runtime.keep_freed_memory``):
the variants named "trainer default on CPU" are what a user of the command line gets, and this
benchmark makes the same call for them.  ``plain glibc (mallopt off)`` leaves that call out
(``--no-mallopt``) to show what it is worth, and ``official eager fp32 +
glibc mallopt`` gives the official step the same setting, separating the allocator from the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from convmixer.costs import training_flops_per_image
from convmixer.runtime import keep_freed_memory as glibc_keep_memory  # what the command line does on a CPU


def official_step_fn(dim, depth, kernel_size, patch_size, lr=1e-3):
    """The official definition, a plain eager fp32 AdamW step."""
    from convmixer.reference import official_convmixer

    torch.manual_seed(0)
    model = official_convmixer(dim, depth, kernel_size, patch_size, n_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.005)
    crit = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, torch.contiguous_format


def library_step_fn(dim, depth, kernel_size, patch_size, batch, precision="fp32", channels_last=True,
                    compile=False, lr=1e-3):
    """The library's Trainer.train_step (on a Trainer with a one-batch training subset)."""
    import atexit
    import shutil

    from convmixer.train import TrainConfig, Trainer

    out_dir = tempfile.mkdtemp(prefix="convmixer-bench-")  # the Trainer wants one; nothing is written to it
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    cfg = TrainConfig(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size, batch_size=batch,
                      train_subset=batch, test_subset=16, precision=precision, channels_last=channels_last,
                      compile=compile, device="cpu", out_dir=out_dir)
    trainer = Trainer(cfg, screen=False)

    def step(x, y):
        return trainer.train_step(x, y, lr)[0]

    return step, torch.channels_last if channels_last else torch.contiguous_format


def measure(step, memory_format, batch, steps, warmup, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), generator=g)
    for _ in range(warmup):
        float(step(x, y))
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        float(step(x, y))
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    times.sort()
    med = times[len(times) // 2]
    return {"images_per_second": batch / med, "step_seconds_median": med, "step_seconds_min": times[0],
            "cpu_seconds_per_step": cpu / steps, "minor_faults_per_step": faults / steps, "steps": steps}


def best_seconds(fn, device, repeats: int) -> float:
    """The shortest of ``repeats`` timings of ``fn()`` after one warm-up call (waiting for a GPU to finish)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device="cpu") -> float:
    """The best GFLOP/s of an n x n by n x n matrix product in ``dtype``: what this machine's BLAS reaches
    on the friendliest possible work, the yardstick for the model's FLOP rate (2 n^3 FLOPs a product)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, dtype=dtype, device=device)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b, out=out), device, repeats) / 1e9


def copy_gbytes_per_second(device="cpu", mib: int = 256, repeats: int = 10) -> float:
    """The best rate of a large tensor copy, counting the bytes read and the bytes written: the memory
    bandwidth yardstick, as the matrix product is the arithmetic one."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), device, repeats) / 1e9


def saved_bytes_per_step(shape: dict, impl: str = "library", precision: str = "fp32", device="cpu") -> int:
    """Bytes the autograd graph of one training step keeps for the backward pass (activations, and
    weights or their low-precision copies), counted once per storage.

    Each is written in the forward pass and read in the backward pass, so a step moves at least
    twice this many bytes through memory; the real step moves more (temporaries that are not
    saved, the gradients of the activations, the optimizer's state).
    """
    from convmixer.model import ConvMixer
    from convmixer.reference import official_convmixer

    device = torch.device(device)
    args = (shape["dim"], shape["depth"], shape["kernel_size"], shape["patch_size"])
    if impl == "official":
        model = official_convmixer(*args, n_classes=10).to(device)
        fmt = torch.contiguous_format
    else:
        model = ConvMixer(dim=args[0], depth=args[1], kernel_size=args[2], patch_size=args[3], n_classes=10)
        model = model.to(device).to(memory_format=torch.channels_last)
        fmt = torch.channels_last
    x = torch.randn(shape["batch"], 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.zeros(shape["batch"], dtype=torch.long, device=device)
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            nn.functional.cross_entropy(model(x), y)
    return sum(storages.values())


def model_gflops_per_image(shape: dict) -> float:
    """Training GFLOPs per image of a benchmark shape (:func:`convmixer.costs.training_flops_per_image`)."""
    return training_flops_per_image(shape["dim"], shape["depth"], shape["kernel_size"], shape["patch_size"]) / 1e9


def child(argv=None):
    p = argparse.ArgumentParser(description="time one step variant; prints RESULT <json>")
    p.add_argument("--impl", choices=("official", "library"), required=True)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--mallopt", action="store_true", help="glibc: no mmap, no trimming (see glibc_keep_memory)")
    p.add_argument("--no-mallopt", action="store_true",
                   help="library: leave out the command line's keep_freed_memory() call (plain glibc)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)
    if a.mallopt and not glibc_keep_memory():
        raise SystemExit("mallopt failed (not glibc?)")
    if a.impl != "official" and not a.no_mallopt and not glibc_keep_memory():  # as the command line does
        raise SystemExit("mallopt failed (not glibc?)")
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = (a.dim, a.depth, a.kernel_size, a.patch_size)
    if a.impl == "official":
        step, fmt = official_step_fn(*shape)
    else:
        step, fmt = library_step_fn(*shape, a.batch, precision=a.precision, channels_last=a.channels_last,
                                    compile=a.compile)
    r = measure(step, fmt, a.batch, a.steps, a.warmup + (2 if a.compile else 0))
    r["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(r), flush=True)


def variants(shape: dict, include_allocators=True, compile=False) -> list[dict]:
    """The variants to compare: (name, child arguments, allocator to preload)."""
    from .common import allocator_path

    base = [f"--dim={shape['dim']}", f"--depth={shape['depth']}", f"--kernel-size={shape['kernel_size']}",
            f"--patch-size={shape['patch_size']}", f"--batch={shape['batch']}"]
    default = "trainer default on CPU: glibc mallopt"
    out = [
        {"name": "official eager fp32", "args": base + ["--impl=official"], "allocator": "glibc"},
        {"name": f"library fp32 ({default})", "allocator": "glibc mallopt",
         "args": base + ["--impl=library", "--precision=fp32"]},
        {"name": f"library bf16 ({default})", "allocator": "glibc mallopt",
         "args": base + ["--impl=library", "--precision=bf16"]},
    ]
    if include_allocators:
        out.append({"name": "official eager fp32 + glibc mallopt", "allocator": "glibc mallopt",
                    "args": base + ["--impl=official", "--mallopt"]})
        for prec in ("fp32", "bf16"):
            out.append({"name": f"library {prec}, plain glibc (mallopt off)", "allocator": "glibc",
                        "args": base + ["--impl=library", f"--precision={prec}", "--no-mallopt"]})
        for alloc in ("jemalloc", "tcmalloc"):
            if allocator_path(alloc):
                for prec in ("fp32", "bf16"):
                    out.append({"name": f"library {prec} + {alloc}", "allocator": alloc,
                                "args": base + ["--impl=library", f"--precision={prec}"]})
            if alloc == "jemalloc" and allocator_path(alloc):  # keep freed pages instead of purging them
                out.append({"name": "library fp32 + jemalloc, no decay", "allocator": alloc,
                            "env": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
                            "args": base + ["--impl=library", "--precision=fp32"]})
    if compile:
        out.append({"name": "library bf16 + compile", "args": base + ["--impl=library", "--precision=bf16",
                                                                        "--compile"], "allocator": "glibc mallopt"})
    return out


def run_child(v: dict, steps: int, warmup: int) -> dict:
    from .common import REPO, allocator_path

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if v["allocator"] in ("jemalloc", "tcmalloc"):
        env["LD_PRELOAD"] = allocator_path(v["allocator"])
    env.update(v.get("env", {}))
    cmd = [sys.executable, "-m", "benchmarks.step", *v["args"], f"--steps={steps}", f"--warmup={warmup}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{v['name']} failed:\n{proc.stderr[-2000:]}")


def run(shape: dict, repeats=2, steps=3, warmup=1, include_allocators=True, compile=False, log=print) -> dict:
    from .common import median

    vs = variants(shape, include_allocators, compile)
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    copy = copy_gbytes_per_second()
    log(f"  matmul 2048^3: {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16; "
        f"copy {copy:.1f} GB/s")
    results = {v["name"]: [] for v in vs}
    for r in range(repeats):
        order = vs if r % 2 == 0 else vs[::-1]  # alternate the order too: no variant always runs first
        for v in order:
            res = run_child(v, steps, warmup)
            results[v["name"]].append(res)
            log(f"  round {r + 1}/{repeats}  {v['name']:<52} {res['images_per_second']:8.1f} img/s  "
                f"{res['minor_faults_per_step']:10.0f} faults/step")
    rows = []
    gflops = model_gflops_per_image(shape)
    saved = {}  # (impl, precision) -> bytes kept for the backward pass
    base = results[vs[0]["name"]]
    for v in vs:
        rs = results[v["name"]]
        ratios = [a["images_per_second"] / b["images_per_second"] for a, b in zip(rs, base)]
        cpu_ratios = [b["cpu_seconds_per_step"] / a["cpu_seconds_per_step"] for a, b in zip(rs, base)]
        impl = "official" if "--impl=official" in v["args"] else "library"
        precision = next((a.split("=", 1)[1] for a in v["args"] if a.startswith("--precision=")), "fp32")
        if (impl, precision) not in saved:
            saved[impl, precision] = saved_bytes_per_step(shape, impl, precision)
        step_seconds = median([x["step_seconds_median"] for x in rs])
        rows.append({"name": v["name"], "allocator": v["allocator"], "env": v.get("env", {}),
                     "saved_bytes_per_step": saved[impl, precision],
                     "min_traffic_gbytes_per_second": 2 * saved[impl, precision] / step_seconds / 1e9,
                     "args": [a for a in v["args"] if not a.startswith(("--dim", "--depth", "--kernel", "--patch",
                                                                         "--batch"))],
                     "images_per_second": [x["images_per_second"] for x in rs],
                     "images_per_second_median": median([x["images_per_second"] for x in rs]),
                     "cpu_seconds_per_step": [x["cpu_seconds_per_step"] for x in rs],
                     "cpu_seconds_per_step_median": median([x["cpu_seconds_per_step"] for x in rs]),
                     "cpu_ratio_to_official": cpu_ratios, "cpu_ratio_to_official_median": median(cpu_ratios),
                     "minor_faults_per_step_median": median([x["minor_faults_per_step"] for x in rs]),
                     "ratio_to_official": ratios, "ratio_to_official_median": median(ratios),
                     "model_gflops_per_second_median": gflops * median([x["images_per_second"] for x in rs])})
    later = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    copy = max(copy, copy_gbytes_per_second())
    return {"shape": shape, "repeats": repeats, "steps": steps, "warmup": warmup, "rows": rows,
            "model_gflops_per_image": gflops, "copy_gbytes_per_second": copy,
            "copy_note": "best of 10 copies of 256 MiB in this process, before and after the variants, bytes read "
                         "plus bytes written; min_traffic counts each saved tensor written once and read once",
            "matmul_gflops": {k: max(peak[k], later[k]) for k in peak},  # before and after the variants
            "matmul_note": "best of 10 products of 2048 x 2048 matrices in this process, before and after the "
                           "variants; the model's rate counts 6 FLOPs per multiply-accumulate of the forward pass"}


if __name__ == "__main__":
    child()
