"""Chapter 8's in-browser explainer, on the built site, in headless Chromium, against PyTorch.

The page runs the exported shipped checkpoint with onnxruntime-web (WebAssembly, one thread, in a
Web Worker).  Through its contract (``window.convmixerExplainer``, documented in
book/explainer/explainer.js) these tests check that:

* the built site carries the explainer's files under book/explainer/ (and only that page loads
  them), and stays under 45 MB;
* the logits of 20 sprite test images equal PyTorch's within 1e-4, and so do they with patches
  covered, and so does the occlusion map of one image;
* a reader's files: a text file and an empty file give a one-line message and the page keeps
  predicting; a 10,000 x 10,000 PNG is refused before it is decoded; a grayscale and a transparent
  PNG are converted (grey replicated, transparency on white) exactly as PyTorch's
  :func:`convmixer.book.live_explainer.to_model_input` converts them;
* no console error, and no request leaves the site.

The build and the browser are tests/test_site.py's fixtures (``site``, ``browser``).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_site  # noqa: E402
from test_site import browser, site  # noqa: E402,F401  (fixtures, used by name)

from convmixer.book.live_explainer import cover, occlusion_map, to_model_input  # noqa: E402
from convmixer.checkpoint import load_model  # noqa: E402
from convmixer.data import normalize  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = test_site.ROOT
PAGE = "book/10_explainer.html"
FOLDER = ROOT / "book" / "explainer"
STAMP = test_site.BUILD / ".explainer-sources.sha256"
SITE_LIMIT_MB = 45
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _rebuild_when_the_explainer_changed():
    """test_site's build stamp hashes book/*, not book/explainer/*: invalidate it when those changed."""
    h = hashlib.sha256()
    for f in sorted(p for p in FOLDER.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    digest = h.hexdigest()
    if not (STAMP.exists() and STAMP.read_text() == digest):
        test_site.STAMP.unlink(missing_ok=True)
    yield
    if test_site.STAMP.exists():
        STAMP.write_text(digest)


@pytest.fixture(scope="module")
def model():
    return load_model(ROOT / "book" / "results" / "convmixer-paper.pt")[0]


@pytest.fixture(scope="module")
def sprite():
    from PIL import Image

    meta = json.loads((FOLDER / "sprite.json").read_text())
    sheet = np.asarray(Image.open(FOLDER / "sprite.png").convert("RGB"))
    t = meta["tile"]
    images = torch.stack([torch.from_numpy(sheet[e["y"]:e["y"] + t, e["x"]:e["x"] + t].copy()).permute(2, 0, 1)
                          for e in meta["images"]])
    return meta, images


WAIT_READY = """
const done = arguments[arguments.length - 1];
(async () => {
  for (let i = 0; i < 1200 && !window.convmixerExplainer; i++) await new Promise(r => setTimeout(r, 50));
  const api = window.convmixerExplainer;
  await api.ready;
  for (let i = 0; i < 1200 && !(api.ui && api.ui.state.grids); i++) await new Promise(r => setTimeout(r, 50));
  return {modelName: api.modelName, images: api.sprite.images.length, timings: api.timings};
})().then(done, e => done({error: String(e)}));
"""

PREDICT = """
const [indices, covers, done] = arguments;
(async () => {
  const api = window.convmixerExplainer, out = [];
  for (const i of indices) out.push((await api.predict(api.spriteImage(i), {cover: covers})).logits);
  return out;
})().then(done, e => done({error: String(e)}));
"""


@pytest.fixture(scope="module")
def page(browser):
    driver, base = browser
    driver.get_log("browser"), driver.get_log("performance")
    driver.get(urljoin(base, PAGE))
    state = driver.execute_async_script(WAIT_READY)
    assert "error" not in state, state
    return driver, base, state


def _problems(driver, base) -> list[str]:
    console = [f"console error: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    foreign = sorted({u for u in test_site._requests(driver)
                      if urlparse(u).scheme in ("http", "https", "ws", "wss", "ftp") and not u.startswith(base)})
    entries = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    foreign += [u for u in entries if urlparse(u).scheme in ("http", "https") and not u.startswith(base)]
    return console + [f"request beyond the site: {u}" for u in foreign]


def test_site_carries_the_explainer_only_on_its_page(site):
    folder = site / "book" / "explainer"
    for name in ["explainer.js", "worker.js", "explainer.css", "sprite.png", "sprite.json", "model/model.json",
                 "model/convmixer-paper.onnx", "vendor/ort.wasm.min.mjs", "vendor/ort-wasm-simd-threaded.mjs",
                 "vendor/ort-wasm-simd-threaded.wasm"]:
        assert (folder / name).is_file(), name
    assert sorted(p.name for p in (folder / "vendor").iterdir()) == sorted(
        ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"])
    assert not list((site / "_static").rglob("ort*")), "onnxruntime files under _static would load on every page"
    from bs4 import BeautifulSoup

    def loads_explainer(page: Path) -> bool:  # a script or stylesheet that names the folder (text may mention it)
        soup = BeautifulSoup(page.read_text(encoding="utf8"), "html.parser")
        return any("explainer/" in (s.get("src") or s.get_text()) for s in soup.find_all("script")) or \
            any("explainer/" in (link.get("href") or "") for link in soup.find_all("link"))

    loaders = [p.relative_to(site).as_posix() for p in site.rglob("*.html")
               if "_sources" not in p.parts and "explainer" not in p.parts and loads_explainer(p)]
    assert loaders == [PAGE], loaders
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert total < SITE_LIMIT_MB * 1e6, f"the built site is {total / 1e6:.1f} MB (limit {SITE_LIMIT_MB} MB)"


def test_logits_match_pytorch(page, model, sprite):
    driver, base, state = page
    assert state["modelName"] == "convmixer-paper.pt" and state["images"] >= 100
    meta, images = sprite
    indices = list(range(0, 100, 5))  # 20 images, two per class
    got = driver.execute_async_script(PREDICT, indices, [])
    assert not isinstance(got, dict), got
    with torch.no_grad():
        want = model(normalize(images[indices]))
    np.testing.assert_allclose(np.array(got), want.numpy(), rtol=0, atol=TOL)
    assert _problems(driver, base) == []


def test_covering_patches_changes_logits_as_in_pytorch(page, model, sprite):
    driver, base, _ = page
    _, images = sprite
    patches = [[5, 5], [5, 6], [6, 5], [10, 12]]
    got = driver.execute_async_script(PREDICT, [3, 47], patches)
    assert not isinstance(got, dict), got
    with torch.no_grad():
        x = normalize(images[[3, 47]])
        want = model(cover(x, patches, 2))
        plain = model(x)
    np.testing.assert_allclose(np.array(got), want.numpy(), rtol=0, atol=TOL)
    assert np.abs(np.array(got) - plain.numpy()).max() > 10 * TOL  # covering did change them
    assert _problems(driver, base) == []


def test_occlusion_map_matches_pytorch(page, model, sprite):
    driver, base, _ = page
    _, images = sprite
    got = driver.execute_async_script("""
        const done = arguments[arguments.length - 1], api = window.convmixerExplainer;
        api.occlusion(api.spriteImage(12)).then(o => done({target: o.target, base: o.base, p: Array.from(o.probabilities), ms: o.ms}),
                                                e => done({error: String(e)}));""")
    assert "error" not in got, got
    want = occlusion_map(model, images[12])
    assert got["target"] == want["target"]
    np.testing.assert_allclose(np.array(got["p"]).reshape(16, 16), want["probabilities"].numpy(), rtol=0, atol=TOL)
    assert _problems(driver, base) == []


def _status(driver) -> str:
    return driver.execute_script("return document.querySelector('#convmixer-explainer [data-cxe-status]').textContent")


def _upload(driver, path: Path, expect: str, timeout: float = 60) -> str:
    driver.find_element("id", "cxe-file").send_keys(str(path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _status(driver)
        if expect in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"after uploading {path.name}: status {_status(driver)!r}, expected {expect!r}")


def test_bad_and_unusual_files(page, model, tmp_path):
    from PIL import Image

    driver, base, _ = page
    (tmp_path / "notes.txt").write_text("this is not an image\n")
    text = _upload(driver, tmp_path / "notes.txt", "not an image")
    assert "\n" not in text.strip()
    (tmp_path / "empty.png").write_bytes(b"")
    _upload(driver, tmp_path / "empty.png", "is empty")
    Image.new("1", (10_000, 10_000)).save(tmp_path / "huge.png")
    _upload(driver, tmp_path / "huge.png", "scale it down")
    # still predicting after the refusals
    assert not isinstance(driver.execute_async_script(PREDICT, [0], []), dict)

    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L")
    gray.save(tmp_path / "gray.png")
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((32, 32)) < 0.3, 0, 255)  # fully transparent or opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    for name in ("gray.png", "clear.png"):
        _upload(driver, tmp_path / name, f"“{name}” (32 × 32")
        deadline = time.monotonic() + 30
        while "the model says" not in _status(driver) and time.monotonic() < deadline:
            time.sleep(0.2)
        got = driver.execute_script("""
            const api = window.convmixerExplainer;
            return api.predict(api.ui.state.image).then(r => r.logits);""")
        with torch.no_grad():
            want = model(normalize(to_model_input((tmp_path / name).read_bytes())[None]))[0]
        np.testing.assert_allclose(np.array(got), want.numpy(), rtol=0, atol=TOL, err_msg=name)
    assert _problems(driver, base) == []


def test_reader_clicks_cover_and_occlusion_button(page):
    """Like a reader: click a sprite tile, cover a patch on the big image, run the occlusion map."""
    driver, base, _ = page
    gallery = driver.find_element("css selector", "canvas.cxe-gallery")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", gallery)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element_with_offset(gallery, 0, 0).click().perform()  # near the centre tile
    deadline = time.monotonic() + 30
    while "Test image" not in _status(driver) and time.monotonic() < deadline:
        time.sleep(0.2)
    view = driver.find_element("css selector", "canvas.cxe-view")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", view)
    ActionChains(driver).move_to_element_with_offset(view, 10, 10).click().perform()
    deadline = time.monotonic() + 30
    while "1 patch covered" not in _status(driver) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "1 patch covered" in _status(driver)
    driver.find_element("xpath", "//button[text()='Occlusion map']").click()
    deadline = time.monotonic() + 120
    note = ""
    while time.monotonic() < deadline:
        note = driver.execute_script("return [...document.querySelectorAll('.cxe-note')].map(e => e.textContent).join(' ')")
        if "forward passes" in note:
            break
        time.sleep(0.5)
    assert "forward passes" in note, note
    test_site._screenshot(driver, test_site.SCREENSHOTS / "10_explainer-live.png")
    assert _problems(driver, base) == []
