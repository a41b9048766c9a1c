"""Fill book/explainer/ with what the in-browser explainer (chapter book/10_explainer) loads.

    python tools/explainer_assets.py            # what tools/build-book.sh runs before the build

Every site build goes through it: ``tools/build-book.sh`` runs it, and ``_config.yml`` loads this
file as a Sphinx extension too (``local_extensions``), so a plain ``jupyter-book build .`` (as
tests/test_site.py runs) fills the folder when Sphinx starts and copies it into the site when the
HTML is written.  Steps, each skipped when its result is current:

1. ``npm ci``: onnxruntime-web at the version package-lock.json pins, into node_modules/.
2. ``python -m convmixer.onnx book/results/convmixer-paper.pt book/explainer/model/convmixer-paper.onnx``
   and ``book/explainer/model/model.json``: the architecture, the normalisation, the class names
   and every layer's depthwise kernels (h x k x k numbers per layer), which the page draws.
3. Copy only the three files onnxruntime-web's WebAssembly backend loads with one thread into
   book/explainer/vendor/: its entry module ``ort.wasm.min.mjs`` and the pair it imports,
   ``ort-wasm-simd-threaded.mjs`` + ``.wasm`` (the same build serves one thread and many).  The
   source-map comment is dropped, so no browser asks for a map that is not there.

The folder is not called ``_static``: Jupyter Book would inject every .js file under such a folder
into every page.  Only the explainer chapter imports these files.  vendor/ and model/ are
git-ignored; explainer.js, worker.js, explainer.css and the sprite (tools/explainer_sprite.py) are
committed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "book" / "explainer"
CHECKPOINT = ROOT / "book" / "results" / "convmixer-paper.pt"
MODEL_DIR = FOLDER / "model"
VENDOR = FOLDER / "vendor"
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SITE_FOLDER = "book/explainer"  # where the folder lands in _build/html


def _log(message: str) -> None:
    print(f"[explainer assets] {message}", file=sys.stderr)


def npm_ci() -> None:
    """``npm ci`` unless node_modules already holds what package-lock.json pins."""
    lock = ROOT / "package-lock.json"
    stamp = ROOT / "node_modules" / ".explainer-lock.sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and all((ORT_DIST / f).exists() for f in ORT_FILES):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found: install Node.js and npm (Debian: apt-get install nodejs npm)")
    _log("npm ci")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(digest)


def _stale(target: Path, *sources: Path) -> bool:
    return not target.exists() or any(s.stat().st_mtime > target.stat().st_mtime for s in sources)


def export_model() -> None:
    """The ONNX file and model.json (architecture, normalisation, classes, depthwise kernels)."""
    onnx_path = MODEL_DIR / CHECKPOINT.with_suffix(".onnx").name
    info_path = MODEL_DIR / "model.json"
    code = ROOT / "convmixer" / "onnx.py"
    if not (_stale(onnx_path, CHECKPOINT, code) or _stale(info_path, CHECKPOINT, code, Path(__file__))):
        return
    sys.path.insert(0, str(ROOT))
    from convmixer.checkpoint import load_model
    from convmixer.data import CLASSES, MEAN, STD
    from convmixer.onnx import export_onnx, output_names

    _log(f"export {CHECKPOINT.name} -> {onnx_path.relative_to(ROOT)}")
    export_onnx(CHECKPOINT, onnx_path)
    model, ckpt = load_model(CHECKPOINT)
    cfg = ckpt["model_config"]
    kernels = [[[round(float(v), 5) for v in kernel.flatten()] for kernel in layer.spatial.conv.weight.detach()]
               for layer in model.layers]
    embed = model.patch_embed.proj.weight.detach()  # (h, 3, p, p)
    info = {
        "checkpoint": CHECKPOINT.name, "onnx": onnx_path.name, "classes": list(CLASSES),
        "mean": list(MEAN), "std": list(STD), "dim": cfg["dim"], "depth": cfg["depth"],
        "kernel_size": cfg["kernel_size"], "patch_size": cfg["patch_size"], "image_size": 32,
        "outputs": output_names(cfg["depth"]), "epochs": ckpt.get("epoch"),
        "test_accuracy": (ckpt.get("history") or [{}])[-1].get("test_accuracy"),
        "depthwise_kernels": kernels,  # [layer][channel] -> k*k numbers, row-major
        "patch_filters": [[round(float(v), 5) for v in f.flatten()] for f in embed],  # [channel] -> 3*p*p
    }
    info_path.write_text(json.dumps(info, separators=(",", ":")) + "\n")


def vendor_runtime() -> None:
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        data = (ORT_DIST / name).read_bytes()
        if name.endswith(".mjs"):
            data = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"//# sourceMappingURL="))
        target = VENDOR / name
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    for extra in set(p.name for p in VENDOR.iterdir()) - set(ORT_FILES):
        (VENDOR / extra).unlink()


def prepare() -> None:
    npm_ci()
    export_model()
    vendor_runtime()


def main() -> int:
    prepare()
    sizes = {p.relative_to(ROOT).as_posix(): p.stat().st_size for p in sorted(FOLDER.rglob("*")) if p.is_file()}
    total = sum(sizes.values())
    _log(f"book/explainer: {len(sizes)} files, {total / 1e6:.1f} MB")
    return 0


# ---------------------------------------------------------------- as a Sphinx extension
def _copy_into_site(app, exception) -> None:
    """After the HTML is written: book/explainer/ -> _build/html/book/explainer/ (the chapter's URLs)."""
    if exception is not None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / SITE_FOLDER
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(FOLDER, dest, ignore=shutil.ignore_patterns("__pycache__", ".*"))


def setup(app):
    app.connect("builder-inited", lambda app: prepare())
    app.connect("build-finished", _copy_into_site)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    raise SystemExit(main())
