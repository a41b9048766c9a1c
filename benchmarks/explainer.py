"""How fast the in-browser explainer (chapter book/10_explainer) is, beside PyTorch on the same CPU.

    python -m benchmarks.explainer            # needs the built site: bash tools/build-book.sh

Serves ``_build/html`` on loopback, opens the chapter in headless Chromium (Debian's chromium and
chromedriver, as tests/test_site.py) and reads through the page's contract
(``window.convmixerExplainer``):

* time to first prediction: from the start of navigation to the end of the first ``predict``
  (the page loads the 2.4 MB model and the 15 MB WebAssembly runtime, compiles it, and runs once);
* per-image latency: the median of ``--repeats`` one-image ``predict`` calls (logits only), as the
  page sees it (normalisation, the worker round trip, the run);
* the full occlusion map: 256 covered copies of one image, logits only, in batches of 32;

and, for the same image in the same process, PyTorch on the CPU: one image's forward pass (median)
and the 256-image occlusion batch, with one thread (onnxruntime-web runs on one) and with all.
Budgets: first prediction within 3 s, one image within 50 ms, the occlusion map within 10 s.
Writes book/results/perf/explainer.json, with the machine and its load average before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, environment, write_json
from convmixer.book.live_explainer import cover
from convmixer.checkpoint import load_model
from convmixer.data import normalize

PAGE = "book/10_explainer.html"
BUDGETS_MS = {"first_prediction": 3000, "per_image": 50, "occlusion_map": 10000}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="explainer-bench-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=1280,1000", f"--user-data-dir={profile}",
                "--disable-background-networking", "--disable-component-update"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(110)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


MEASURE = """
const [repeats, image, done] = arguments;
(async () => {
  for (let i = 0; i < 1200 && !window.convmixerExplainer; i++) await new Promise(r => setTimeout(r, 20));
  const api = window.convmixerExplainer;
  await api.ready;
  // the page predicts its first image itself; wait for that (its first prediction)
  for (let i = 0; i < 1200 && api.timings.firstPrediction === undefined; i++) await new Promise(r => setTimeout(r, 20));
  const img = api.spriteImage(image), times = [];
  await api.predict(img);
  for (let i = 0; i < repeats; i++) { const t = performance.now(); await api.predict(img); times.push(performance.now() - t); }
  const occ = await api.occlusion(img);
  return {ready: api.timings.ready, first: api.timings.firstPrediction, times, occlusion: occ.ms,
          userAgent: navigator.userAgent, threads: navigator.hardwareConcurrency};
})().then(done, e => done({error: String(e)}));
"""


def browser_times(site: Path, repeats: int, image: int) -> dict:
    with serve(site) as base, chromium() as driver:
        driver.get(base + PAGE)
        result = driver.execute_async_script(MEASURE, repeats, image)
    if "error" in result:
        raise SystemExit(f"the page failed: {result['error']}")
    return result


def pytorch_times(image_uint8: torch.Tensor, repeats: int) -> dict:
    model, _ = load_model(REPO / "book" / "results" / "convmixer-paper.pt")
    x = normalize(image_uint8[None])
    batch = torch.cat([cover(x, [(r, c)], 2) for r in range(16) for c in range(16)])
    out = {}
    for label, threads in (("one_thread", 1), ("all_threads", torch.get_num_threads())):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(x)
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    model(x)
                    times.append(1000 * (time.perf_counter() - t))
                t = time.perf_counter()
                for start in range(0, len(batch), 32):
                    model(batch[start:start + 32])
                occ = 1000 * (time.perf_counter() - t)
        finally:
            torch.set_num_threads(previous)
        out[label] = {"threads": threads, "per_image_ms": round(statistics.median(times), 2), "occlusion_map_ms": round(occ, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=REPO / "_build" / "html")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image", type=int, default=0, help="sprite image (0..99) to time")
    args = parser.parse_args(argv)
    if not (args.site / PAGE).exists():
        raise SystemExit(f"{args.site / PAGE} not found: build the book first (bash tools/build-book.sh)")
    env = environment()
    chromium_version = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                                      text=True).stdout.strip()
    page = browser_times(args.site, args.repeats, args.image)
    from PIL import Image
    import numpy as np

    meta = json.loads((REPO / "book" / "explainer" / "sprite.json").read_text())
    e, t = meta["images"][args.image], meta["tile"]
    sheet = np.asarray(Image.open(REPO / "book" / "explainer" / "sprite.png").convert("RGB"))
    image = torch.from_numpy(sheet[e["y"]:e["y"] + t, e["x"]:e["x"] + t].copy()).permute(2, 0, 1)
    torch_ms = pytorch_times(image, args.repeats)
    browser = {
        "runtime": "onnxruntime-web " + json.loads((REPO / "package.json").read_text())["dependencies"]["onnxruntime-web"]
                   + ", WebAssembly backend, 1 thread, in a Web Worker",
        "browser": chromium_version + " (headless)",
        "time_to_ready_ms": round(page["ready"], 1),
        "time_to_first_prediction_ms": round(page["first"], 1),
        "per_image_ms": round(statistics.median(page["times"]), 2),
        "per_image_ms_min": round(min(page["times"]), 2),
        "occlusion_map_ms": round(page["occlusion"], 1),
    }
    measured = {"first_prediction": browser["time_to_first_prediction_ms"], "per_image": browser["per_image_ms"],
                "occlusion_map": browser["occlusion_map_ms"]}
    data = {
        "benchmark": "explainer",
        "command": "python -m benchmarks.explainer " + " ".join(argv or []),
        "environment": env,
        "image": {"sprite_index": args.image, "test_index": e["index"], "class": e["class"]},
        "repeats": args.repeats,
        "occlusion_positions": 256, "occlusion_batch": 32,
        "browser": browser,
        "pytorch_cpu": torch_ms,
        "budgets_ms": BUDGETS_MS,
        "within_budget": {k: measured[k] <= v for k, v in BUDGETS_MS.items()},
    }
    path = write_json("explainer", data)
    print(json.dumps({k: data[k] for k in ("browser", "pytorch_cpu", "within_budget")}, indent=1))
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
