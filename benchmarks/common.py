"""What every result file records: the machine, the software, the date, and how busy the machine was."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from convmixer.runtime import cpu_name

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "book" / "results" / "perf"
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
ALLOCATORS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def allocator_path(name: str) -> str | None:
    """The shared library for ``name`` (jemalloc, tcmalloc) if installed, else None."""
    path = Path(LIB_DIR) / ALLOCATORS[name]
    return str(path) if path.exists() else None


def environment() -> dict:
    """Hardware, software and date; no paths of the machine."""
    import torchvision

    flags = cpu_flags()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_start": load_average(),
    }


def write_json(name: str, data: dict, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**data, "environment": {**data["environment"], "load_average_end": load_average()}}
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def command_line() -> str:
    return "python -m benchmarks.run " + " ".join(sys.argv[1:])
