"""The website: the book builds with no warning, is self-contained, and works in a browser.

Three layers, cheapest first:

1. Source checks (no build): chapters' Colab badges and setup cells match ``_config.yml``
   (``tools/sync_repo_url.py --check``), MathJax is vendored, the bibliography has its entries.
2. The build: ``jupyter-book build . -W -n --keep-going --all`` (every warning fails it), then
   static checks of the HTML: every page the toc names exists, no page loads anything from
   another host, no ipywidgets control is left on a page, chapters are numbered once, every
   local link resolves, every chapter has its Colab launch button and badge.
3. Headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) opens
   every page from a local server with every other host unresolvable, and checks: no console
   error, no request beyond 127.0.0.1, every image loaded, math rendered by MathJax without
   errors, sidebar and prev/next links resolve.  A full-page screenshot of each page goes to
   ``_build/screenshots/<page>.png``.  Skipped when chromium is missing, unless ``$CI`` is set.

The build is reused between runs outside CI while no source changed (a hash of the sources is
kept next to it); CI always builds.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

pytestmark = pytest.mark.slow  # the built site in headless Chromium: the README's test command runs it

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
STAMP = BUILD / ".site-sources.sha256"
IN_CI = bool(os.environ.get("CI"))
BUILD_TIMEOUT_S = 180  # the requirement: the whole book builds in under three minutes

BIB_KEYS = {
    "trockman2022patches", "dosovitskiy2021vit", "tolstikhin2021mlpmixer", "howard2017mobilenets",
    "chollet2017xception", "he2016resnet", "ioffe2015batchnorm", "ba2016layernorm",
    "smith2019superconvergence", "loshchilov2019adamw", "cubuk2020randaugment",
    "zhong2020randomerasing", "szegedy2016labelsmoothing", "krizhevsky2009cifar",
    "jordan2024airbench", "wightman2019timm", "paszke2019pytorch", "micikevicius2018mixed",
}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


# ----------------------------------------------------------------------------- helpers

def _run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


@functools.lru_cache(1)
def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))


@functools.lru_cache(1)
def toc_docs() -> list[str]:
    """Docnames in the toc's order (root first), e.g. ``book/01_patch_embedding``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf8"))
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", d) for d in docs]


def chapter_docs() -> list[str]:
    return [d for d in toc_docs() if (ROOT / f"{d}.ipynb").exists()]


def _sources_digest() -> str:
    """Hash of everything the built site depends on."""
    files = [ROOT / "_config.yml", ROOT / "_toc.yml"]
    for folder, pattern in [("book", "*"), ("convmixer", "*.py"), ("_assets", "**/*"), ("tools", "*.py")]:
        files += sorted(p for p in (ROOT / folder).glob(pattern) if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else [shutil.which("jupyter-book") or "jupyter-book"]


@functools.lru_cache(1)
def _soups() -> dict:
    from bs4 import BeautifulSoup

    return {p.relative_to(HTML).as_posix(): BeautifulSoup(p.read_text(encoding="utf8"), "html.parser")
            for p in sorted(HTML.rglob("*.html")) if "_static" not in p.parts and "_sources" not in p.parts}


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    return not parsed.scheme and not parsed.netloc or parsed.scheme in ("data", "blob")


# ----------------------------------------------------------------------------- 1. sources

def test_chapters_in_step_with_repository_url():
    """Badges and setup cells carry _config.yml's repository address (run the tool to fix)."""
    result = _run_tool("tools/sync_repo_url.py", "--check")
    assert result.returncode == 0, result.stderr + result.stdout


def test_sync_tool_fixes_only_sources(tmp_path):
    """The tool inserts a missing badge below the title and rewrites an old address in place,
    leaving outputs, execution counts and the JSON layout alone."""
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    setup = _run_tool("-c", "import sys; sys.path.insert(0, 'tools'); import sync_repo_url as s; "
                      "print(s.SETUP_CELL.format(url='https://github.com/someone/else', branch='dev', name='else'))").stdout.rstrip("\n")
    nb = {"cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Patch embedding\n", "\n", "Text."]},
        {"cell_type": "code", "execution_count": 7, "id": "b", "metadata": {"tags": ["x"]},
         "outputs": [{"name": "stdout", "output_type": "stream", "text": ["hello\n"]}],
         "source": setup.splitlines(keepends=True)}],
        "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "book" / "01_x.ipynb"
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    check = _run_tool("tools/sync_repo_url.py", "--root", str(tmp_path), "--check")
    assert check.returncode == 1 and "badge missing" in check.stderr and "someone/else" in check.stderr
    assert _run_tool("tools/sync_repo_url.py", "--root", str(tmp_path)).returncode == 0
    assert _run_tool("tools/sync_repo_url.py", "--root", str(tmp_path), "--check").returncode == 0
    fixed = json.loads(path.read_text())
    url, branch = config()["repository"]["url"], config()["repository"]["branch"]
    owner_repo = url.removeprefix("https://github.com/")
    md = "".join(fixed["cells"][0]["source"]).split("\n")
    assert md[0] == "# Patch embedding" and md[1] == ""
    assert md[2] == (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                     f"(https://colab.research.google.com/github/{owner_repo}/blob/{branch}/book/01_x.ipynb)")
    assert md[3:] == ["", "Text."]
    setup = "".join(fixed["cells"][1]["source"])
    assert f"--branch {branch} {url} /content/" in setup and "someone/else" not in setup
    for key in ("outputs", "execution_count", "metadata"):
        assert fixed["cells"][1][key] == nb["cells"][1][key]
    assert fixed["metadata"] == nb["metadata"]
    assert path.read_text() == json.dumps(fixed, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_every_chapter_is_in_the_toc():
    """only_build_toc_files drops a notebook the toc does not name, silently: name them all."""
    listed = set(toc_docs())
    missing = [p.relative_to(ROOT).with_suffix("").as_posix() for p in sorted((ROOT / "book").glob("*.ipynb"))
               if p.relative_to(ROOT).with_suffix("").as_posix() not in listed]
    assert not missing, f"add to _toc.yml: {missing}"


def test_mathjax_is_vendored():
    result = _run_tool("tools/vendor_mathjax.py", "--check")
    assert result.returncode == 0, result.stderr


def test_bibliography_has_the_books_references():
    from pybtex.database import parse_file

    bib = parse_file(str(ROOT / "book" / "references.bib"))
    assert BIB_KEYS <= set(bib.entries), sorted(BIB_KEYS - set(bib.entries))
    for key, entry in bib.entries.items():
        assert entry.fields.get("title") and entry.fields.get("year") and entry.persons.get("author"), key
    assert bib.entries["trockman2022patches"].fields["journal"] == "Transactions on Machine Learning Research"
    assert "2201.09792" in bib.entries["trockman2022patches"].fields["eprint"]
    assert bib.entries["jordan2024airbench"].fields["eprint"] == "2404.00498"


def test_saved_notebooks_hold_no_widget_state():
    """Explorers display only in a live frontend (convmixer.widgets.show_explorer), so a
    batch-executed chapter saves no widget; tools/book_site.py is only the safety net."""
    offenders = []
    for doc in chapter_docs():
        nb = json.loads((ROOT / f"{doc}.ipynb").read_text(encoding="utf8"))
        if nb.get("metadata", {}).get("widgets"):
            offenders.append(f"{doc}: metadata.widgets")
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                if any(m in out.get("data", {}) for m in WIDGET_MIMES):
                    offenders.append(f"{doc}: cell {i} has a widget output")
    assert not offenders, offenders


def test_chapter_prose_holds_no_control_characters():
    """A tab or form feed in a markdown cell is almost always a backslash lost to a string escape:
    ``"\\times"`` written without the doubled backslash becomes a tab and "imes" in the page."""
    offenders = []
    for doc in chapter_docs():
        nb = json.loads((ROOT / f"{doc}.ipynb").read_text(encoding="utf8"))
        for i, cell in enumerate(nb["cells"]):
            text = "".join(cell["source"])
            bad = re.search(r"[\x00-\x09\x0b-\x1f]", text)  # every control character but the newline
            if cell["cell_type"] == "markdown" and bad:
                offenders.append(f"{doc}, cell {i}: {text[max(0, bad.start() - 20):bad.end() + 10]!r}")
    assert not offenders, offenders


# ----------------------------------------------------------------------------- 2. the build

@pytest.fixture(scope="module")
def site() -> Path:
    """``_build/html``, built by this test run (always in CI) or reused while sources are unchanged."""
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".site-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, also across xdist workers
        digest = _sources_digest()
        fresh = (not IN_CI and STAMP.exists() and STAMP.read_text() == digest
                 and (HTML / "index.html").exists())
        if not fresh:
            STAMP.unlink(missing_ok=True)
            cmd = [*_jupyter_book(), "build", ".", "-W", "-n", "--keep-going", "--all"]
            start = time.monotonic()
            try:
                result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`{' '.join(cmd[1:])}` took over {BUILD_TIMEOUT_S} s")
            took = time.monotonic() - start
            log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
            (BUILD / "site-build.log").write_text(log)
            problems = [line for line in log.splitlines() if re.search(r"WARNING|ERROR|CRITICAL", line)]
            assert result.returncode == 0 and not problems, (
                f"jupyter-book build failed (exit {result.returncode}) after {took:.0f} s; "
                f"log in _build/site-build.log:\n" + "\n".join(problems or log.splitlines()[-30:]))
            STAMP.write_text(digest)
    _soups.cache_clear()
    return HTML


def test_every_toc_page_is_built(site):
    missing = [d for d in toc_docs() if not (site / f"{d}.html").exists()]
    assert not missing, missing
    assert 'url=book/intro.html' in (site / "index.html").read_text()


def test_no_page_loads_anything_from_another_host(site):
    offenders = []
    attrs = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data"}
    for page, soup in _soups().items():
        for tag, attr in attrs.items():
            for el in soup.find_all(tag):
                if el.get(attr) and not _is_local(el[attr]):
                    offenders.append(f"{page}: <{tag} {attr}={el[attr]}>")
        for el in soup.find_all("link"):
            rel = set(el.get("rel") or [])
            if rel & {"stylesheet", "preload", "icon", "modulepreload", "prefetch"} and not _is_local(el.get("href", "")):
                offenders.append(f"{page}: <link rel={sorted(rel)} href={el.get('href')}>")
        for el in soup.find_all("script", src=False):
            for host in re.findall(r"https?://([\w.-]+)", el.get_text()):
                offenders.append(f"{page}: inline script names {host}")
        for el in soup.find_all("style"):
            for url in re.findall(r"url\(['\"]?(https?://[^)'\"]+)", el.get_text()):
                offenders.append(f"{page}: style loads {url}")
    assert not offenders, "\n".join(offenders)


def test_no_widget_is_left_on_a_page(site):
    offenders = []
    for page, soup in _soups().items():
        for mime in WIDGET_MIMES:
            if soup.find("script", attrs={"type": mime}):
                offenders.append(f"{page}: <script type={mime}>")
        if soup.select(".jupyter-widgets, .widget-area, [class*='widget-interact'], .lm-Widget"):
            offenders.append(f"{page}: ipywidgets element")
    assert not offenders, offenders


def test_math_is_served_locally(site):
    mathjax = config()["sphinx"]["config"]["mathjax_path"]
    assert (site / "_static" / mathjax).exists()
    for page, soup in _soups().items():
        if soup.select("span.math, div.math"):
            srcs = [s["src"] for s in soup.find_all("script", src=True)]
            assert any(mathjax in s for s in srcs), f"{page} has math but does not load {mathjax}"


def _title(soup):
    """The page's h1 in the article (the theme repeats it, print-only, in its header)."""
    return soup.select_one("article.bd-article h1")


def test_chapters_are_numbered_once(site):
    """The toc numbers the chapters; a title that carries its own number would read '3. 3. ...'."""
    numbered = [d for d in toc_docs() if re.match(r"book/\d\d_", d) and not d.startswith("book/00_")]
    for n, doc in enumerate(numbered, start=1):   # book/00_...: the opening page, before the numbered part
        h1 = _title(_soups()[f"{doc}.html"])
        number = h1.find(class_="section-number")
        assert number is not None and number.get_text().strip() == f"{n}.", (doc, h1.get_text())
        title = "".join(t for t in h1.find_all(string=True, recursive=True)
                        if not t.find_parent(class_=["section-number", "headerlink"])).strip()
        assert not re.match(r"^(Chapter\s+)?\d+\s*[.:)]", title), \
            f"{doc}: the title repeats the toc's number: {title!r} (drop the number from the notebook's '# ' line)"


def test_chapters_launch_on_colab(site):
    """A Colab launch button in the header and an Open-in-Colab badge (local image) in the text."""
    repo = config()["repository"]
    owner_repo = repo["url"].removeprefix("https://github.com/").rstrip("/")
    for doc in chapter_docs():
        soup = _soups()[f"{doc}.html"]
        colab = f"https://colab.research.google.com/github/{owner_repo}/blob/{repo['branch']}/{doc}.ipynb"
        assert soup.select_one(f'a.dropdown-item[href="{colab}"][title="Launch on Colab"]'), \
            f"{doc}: no launch button to {colab}"
        badges = [a for a in soup.select("article.bd-article a[href]") if a["href"] == colab and a.find("img")]
        assert badges, f"{doc}: no Open-in-Colab badge in the page"
        assert all(_is_local(a.find("img")["src"]) for a in badges)


def _local_target(page: str, href: str) -> Path | None:
    """The file a relative link on ``page`` points to, or None for external/anchor-only links."""
    parsed = urlparse(href)
    if parsed.scheme or parsed.netloc or not parsed.path:
        return None
    target = (HTML / page).parent / unquote(parsed.path)
    return target / "index.html" if target.is_dir() else target


def test_every_local_link_resolves(site):
    broken = []
    for page, soup in _soups().items():
        for a in soup.find_all("a", href=True):
            target = _local_target(page, a["href"])
            if target is not None and not target.exists():
                broken.append(f"{page}: {a['href']}")
    assert not broken, "\n".join(sorted(set(broken)))


def test_sidebar_lists_every_page(site):
    intro = _soups()[f"{toc_docs()[0]}.html"]
    nav = intro.select_one("nav.bd-docs-nav")
    linked = {urlparse(a["href"]).path for a in nav.find_all("a", href=True)}
    root_dir = Path(toc_docs()[0]).parent
    expected = {os.path.relpath(f"{d}.html", root_dir) for d in toc_docs()}
    assert expected <= linked | {os.path.basename(f"{toc_docs()[0]}.html")}, sorted(expected - linked)


# ----------------------------------------------------------------------------- 3. the browser

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _need(what: str, why: str):
    if IN_CI:
        pytest.fail(f"{what} is required in CI: {why}")
    pytest.skip(f"{what} not available ({why}); CI installs it")


@pytest.fixture(scope="module")
def browser(site):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _need("chromium", "apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium", "pip install selenium")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    profile = tempfile.mkdtemp(prefix="site-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
                "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
                "--window-size=1280,1000", f"--user-data-dir={profile}",
                # Nothing but this machine can be reached: every other name fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(110)  # below the WebDriver client's 120 s read timeout, so a slow page fails cleanly
    try:
        with _serve(site) as base:
            yield driver, base
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# The page check runs in the page as a promise that records its progress in ``window.__siteCheck``;
# Python polls it with short calls. A page that is slow to settle on a busy machine (MathJax typesets a
# long chapter on the main thread) then gets the time it needs, up to PAGE_DEADLINE_S, and one that
# never settles is reported by the phase it was stuck in, never by a bare WebDriver "script timeout".
PAGE_DEADLINE_S = 240
IMAGE_WAIT_MS = 20000  # an image still loading after this is reported as broken

START_PAGE_CHECK = """
const check = window.__siteCheck = {phase: 'start', phases: {}, done: false};
const imageWait = arguments[0];
let t = performance.now();
const enter = (name) => { check.phases[check.phase] = Math.round(performance.now() - t); t = performance.now(); check.phase = name; };
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
(async () => {
  // Start from a parsed, loaded document (a busy machine can hand the check a page still loading).
  enter('load');
  while (document.readyState !== 'complete' || !document.body) await sleep(50);
  enter('scroll');
  // Let lazy images load: walk to the bottom and back. documentElement always exists, body may not.
  const root = document.scrollingElement || document.documentElement;
  for (let y = 0; y < root.scrollHeight; y += window.innerHeight) { window.scrollTo(0, y); await sleep(20); }
  window.scrollTo(0, 0);
  // An image still loading (a lazy one the walk passed too fast) is asked to load now; the wait is capped,
  // so a stuck image is reported as broken below.
  enter('images');
  await Promise.all([...document.images].map(img => img.complete ? null : new Promise(r => {
    img.onload = img.onerror = r; img.loading = 'eager'; setTimeout(r, imageWait); })));
  const hasMath = document.querySelectorAll('span.math, div.math').length;
  let mathjax = null;
  if (hasMath) {
    enter('mathjax start');
    for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) await new Promise(r => setTimeout(r, 50));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      enter('typeset');
      await MathJax.startup.promise;
      mathjax = MathJax.version;
    }
  }
  enter('fonts');
  if (document.fonts) await document.fonts.ready;
  enter('done');
  Object.assign(check, {
    done: true,
    hasMath,
    mathjax,
    rendered: document.querySelectorAll('mjx-container').length,
    unrendered: [...document.querySelectorAll('span.math, div.math')].filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80)).slice(0, 5),
    mathErrors: [...new Set([...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent))].slice(0, 5),
    brokenImages: [...document.images].filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.currentSrc || img.src),
    shrunk: [...document.querySelectorAll('article img')].filter(img => img.naturalWidth > 2.5 * img.getBoundingClientRect().width && img.getBoundingClientRect().width > 0).map(img => `${img.src.split('/').pop()}: ${img.naturalWidth} px shown at ${Math.round(img.getBoundingClientRect().width)} px`),
    images: document.images.length,
    nav: [...document.querySelectorAll('nav.bd-docs-nav a[href], .prev-next-area a[href]')].map(a => a.href),
  });
})().catch(e => { check.error = `${e} (readyState ${document.readyState}, at ${location.href})`; });
"""

POLL_PAGE_CHECK = "return window.__siteCheck || null;"


def _check_page(driver, url: str) -> dict:
    """Load ``url``, run the page check and wait for it, polling; raise AssertionError naming the
    phase the check was stuck in if it has not finished after PAGE_DEADLINE_S seconds."""
    from selenium.common.exceptions import TimeoutException

    driver.get(url)
    driver.execute_script(START_PAGE_CHECK, IMAGE_WAIT_MS)
    deadline = time.monotonic() + PAGE_DEADLINE_S
    state = None
    while time.monotonic() < deadline:
        try:
            state = driver.execute_script(POLL_PAGE_CHECK)
            if state is None:  # a new document replaced the one the check started in: check that one
                driver.execute_script(START_PAGE_CHECK, IMAGE_WAIT_MS)
        except TimeoutException:  # the page's main thread was busy for longer than a WebDriver call waits
            continue
        if state and (state.get("done") or state.get("error")):
            break
        time.sleep(0.5)
    assert state and not state.get("error"), f"{url}: the page check failed in the page: {state}"
    assert state.get("done"), (f"{url}: the page had not settled after {PAGE_DEADLINE_S} s, "
                               f"stuck in phase {state.get('phase') if state else 'start'!r} "
                               f"(ms per finished phase: {state.get('phases') if state else {}})")
    return state


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _screenshot(driver, path: Path, width: int = 1280, max_height: int = 16000) -> None:
    """A full-page PNG: the viewport is stretched to the page's height (at most ``max_height``,
    Chromium's texture limit) for the capture, then restored."""
    import base64

    height = driver.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
    height = max(1, min(int(height), max_height))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(0.3)  # relayout at the new size
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("doc", toc_docs())
def test_page_in_browser(browser, doc):
    driver, base = browser
    driver.get_log("browser"), driver.get_log("performance")  # drop what earlier pages left
    url = urljoin(base, f"{doc}.html")
    state = _check_page(driver, url)
    print(f"{doc}: ms per phase {state['phases']}")
    time.sleep(0.2)  # late console messages (e.g. a font that failed)
    _screenshot(driver, SCREENSHOTS / f"{Path(doc).name}.png")
    console = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    # Network requests only (the browser's own chrome:// pages are not the site's).
    foreign = sorted({u for u in _requests(driver)
                      if urlparse(u).scheme in ("http", "https", "ws", "wss", "ftp") and not u.startswith(base)})
    problems = []
    problems += [f"console error: {e['message']}" for e in console]
    problems += [f"request beyond localhost: {u}" for u in foreign]
    problems += [f"image did not load: {u}" for u in state["brokenImages"]]
    # Figures sized for reading: in a 1280 px window the text column is about 680 px wide; a
    # figure more than 2.5 times wider shrinks its labels below legibility (save it smaller).
    problems += [f"figure shrunk too far to read: {m}" for m in state["shrunk"]]
    if state["hasMath"]:
        if not state["mathjax"]:
            problems.append("page has math but MathJax did not start")
        elif state["rendered"] == 0:
            problems.append(f"{state['hasMath']} math elements, no mjx-container rendered")
        problems += [f"math left as TeX source: {m}" for m in state["unrendered"]]
        problems += [f"MathJax error: {m}" for m in state["mathErrors"]]
    for href in state["nav"]:
        if href.startswith(base):
            path = unquote(urlparse(href).path).lstrip("/")
            target = HTML / path
            if not (target.is_file() or (target / "index.html").is_file()):
                problems.append(f"navigation link to a missing page: {href}")
        else:
            problems.append(f"navigation link leaves the site: {href}")
    assert not problems, f"{doc}:\n" + "\n".join(problems)


_NOTES_AND_CODE = """
const pairs = [];
for (const note of document.querySelectorAll('.note-beside')) {
  let code = note.nextElementSibling;
  while (code && !code.matches('div.cell.tag_beside')) code = code.nextElementSibling;
  if (!code) continue;
  const n = note.getBoundingClientRect(), c = code.getBoundingClientRect();
  const pre = code.querySelector('.output pre, .cell_output pre');
  pairs.push({note: [n.left, n.right, n.top, n.bottom], code: [c.left, c.right, c.top, c.bottom],
              overflow: pre ? pre.scrollWidth - pre.clientWidth : null});
}
return pairs;
"""


@pytest.mark.parametrize("width, height, beside", [(1600, 1000, True), (390, 844, False)])
def test_opening_page_puts_notes_beside_their_code_on_a_wide_screen(browser, width, height, beside):
    """As on labml's pages: on a desktop screen each note sits left of the code it explains, and the
    code fits its column without scrolling sideways; on a phone the note comes first, above its code."""
    driver, base = browser
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": not beside})
    try:
        _check_page(driver, urljoin(base, "book/00_the_model_on_one_page.html"))
        pairs = driver.execute_script(_NOTES_AND_CODE)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert len(pairs) == 5, pairs            # patch embedding, spatial, channel, layer, network
    for p in pairs:
        (nl, nr, nt, nb), (cl, cr, ct, cb) = p["note"], p["code"]
        if beside:
            assert nr <= cl + 1 and nt < cb and ct < nb, p     # side by side, overlapping rows
            assert p["overflow"] is not None and p["overflow"] <= 0, p   # no sideways scrolling
        else:
            assert nb <= ct + 1 and abs(nl - cl) < 40, p        # stacked, same column


# ----------------------------------------------------------------------------- 4. what a reader does

def _notebook(doc: str) -> dict:
    return json.loads((ROOT / f"{doc}.ipynb").read_text(encoding="utf8"))


def _listing_outputs(doc: str) -> int:
    """Outputs of ``convmixer.book.listing.show_source`` in a chapter (a fenced python block as Markdown)."""
    return sum("```python" in "".join(out.get("data", {}).get("text/markdown", ""))
               for cell in _notebook(doc)["cells"] for out in cell.get("outputs", []))


def _solutions(doc: str) -> int:
    return sum("".join(cell["source"]).count("<details>") for cell in _notebook(doc)["cells"]
               if cell["cell_type"] == "markdown")


# Text that means a directive or role was not parsed: it reached the reader as source.
RAW_MYST = re.compile(r"```|^:::|\{(?:literalinclude|code-cell|note|warning|admonition|figure|image|math|eval-rst|"
                      r"cite(?::[pt])?|ref|doc|numref|eq|download)\}|</?details>|</?summary>", re.M)


def test_source_listings_and_solutions_render(site):
    """Library source shown by ``show_source`` is a highlighted Python block, ``<details>`` solutions are
    real folded elements, and no page shows MyST source as text."""
    problems = []
    for doc in toc_docs():
        soup = _soups()[f"{doc}.html"]
        article = soup.select_one("article.bd-article")
        if (ROOT / f"{doc}.ipynb").exists():
            listings = _listing_outputs(doc)
            highlighted = [div for div in article.select(".cell_output div.highlight-python div.highlight")
                           if div.find("span", class_=True)]
            if len(highlighted) < listings:
                problems.append(f"{doc}: {listings} source listings, {len(highlighted)} highlighted in the page")
            solutions = _solutions(doc)
            folded = [d for d in article.find_all("details") if d.find("summary")]
            if len(folded) < solutions:
                problems.append(f"{doc}: {solutions} <details> blocks, {len(folded)} rendered with a summary")
        for node in article.find_all(string=True):
            if node.find_parent(["pre", "code", "script", "style", "mjx-container"]) or \
                    node.find_parent(class_=["math", "highlight", "output"]):
                continue
            match = RAW_MYST.search(str(node))
            if match:
                problems.append(f"{doc}: raw markup {match.group(0)!r} in {str(node).strip()[:80]!r}")
    assert not problems, "\n".join(problems)


def test_chapters_have_interactive_figures(site):
    """At least six controls across the chapters drive figures with no kernel (convmixer.book.explorers)."""
    controls = {}
    for doc in chapter_docs():
        article = _soups()[f"{doc}.html"].select_one("article.bd-article")
        for root in article.select("div.cmx-explorer"):
            assert root.find("script") is not None, f"{doc}: explorer {root.get('id')} without its script"
            for control in root.select("[data-control]"):
                label = root.find("label", attrs={"for": control.get("id")})
                assert label is not None and label.get_text(strip=True), f"{doc}: control {control.get('id')} has no label"
                controls[control["id"]] = doc
    assert len(controls) >= 6, f"{len(controls)} explorer controls in the chapters: {controls}"


MOVE_CONTROLS = """
const done = arguments[arguments.length - 1];
done([...document.querySelectorAll('.cmx-explorer')].map(root => ({
  id: root.id,
  controls: [...root.querySelectorAll('[data-control]')].map(c => ({id: c.id, type: c.type, value: c.value, max: c.max})),
})));
"""

EXPLORER_STATE = """
const root = document.getElementById(arguments[0]), control = document.getElementById(arguments[1]);
const shown = [...root.querySelectorAll('.cmx-frame')].filter(f => !f.hidden);
const out = root.querySelector(`output[for="${control.id}"]`);
const label = control.type === 'range' ? control.getAttribute('data-labels').split('|')[+control.value] : null;
return {
  shown: shown.map(f => f.getAttribute('data-key')),
  html: shown.length ? shown[0].innerHTML : '',
  height: shown.length ? shown[0].getBoundingClientRect().height : 0,
  value: control.value, label, output: out ? out.textContent : null, aria: control.getAttribute('aria-valuetext'),
};
"""


@pytest.mark.parametrize("doc", [d for d in toc_docs() if (ROOT / f"{d}.ipynb").exists()])
def test_every_control_moves_its_figure(browser, doc):
    """Like a reader: every slider is moved with the arrow keys and every menu is changed; the figure it
    drives changes, the value shown beside a slider follows, and nothing is logged as an error.  Then
    in dark mode the figures' text takes the theme's text colour."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, base = browser
    driver.get_log("browser")
    driver.get(urljoin(base, f"{doc}.html"))
    explorers = driver.execute_async_script(MOVE_CONTROLS)
    problems = []
    for ex in explorers:
        for c in ex["controls"]:
            before = driver.execute_script(EXPLORER_STATE, ex["id"], c["id"])
            element = driver.find_element("id", c["id"])
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            if c["type"] == "range":
                element.send_keys(Keys.ARROW_LEFT if c["value"] == c["max"] else Keys.ARROW_RIGHT)
            else:
                element.send_keys(Keys.ARROW_DOWN)
                if driver.execute_script("return arguments[0].value", element) == c["value"]:
                    select = Select(element)                   # the last option: go up instead
                    select.select_by_index(len(select.options) - 2)
            after = driver.execute_script(EXPLORER_STATE, ex["id"], c["id"])
            where = f"{ex['id']} / {c['id']}"
            if after["value"] == before["value"]:
                problems.append(f"{where}: the control did not move")
            if len(before["shown"]) != 1 or len(after["shown"]) != 1:
                problems.append(f"{where}: {len(before['shown'])} frames shown before, {len(after['shown'])} after")
            elif after["shown"] == before["shown"] or after["html"] == before["html"]:
                problems.append(f"{where}: the figure did not change ({before['shown']} -> {after['shown']})")
            if after["height"] <= 0:
                problems.append(f"{where}: the new frame is not displayed")
            if c["type"] == "range" and not (after["output"] == after["label"] == after["aria"] != before["output"]):
                problems.append(f"{where}: value label {before['output']!r} -> {after['output']!r}, "
                                f"expected {after['label']!r} (aria-valuetext {after['aria']!r})")
    # Folded solutions open on a click.
    for summary in driver.find_elements("css selector", "article details > summary"):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
        summary.click()
        opened = driver.execute_script(
            "const d = arguments[0].parentElement; return d.open && [...d.children].some("
            "e => e.tagName !== 'SUMMARY' && e.getBoundingClientRect().height > 0)", summary)
        if not opened:
            problems.append(f"a <details> did not open: {summary.text[:40]!r}")
    # Dark mode: the figures' text and the controls' labels take the colour of the output they sit in
    # (the theme gives notebook outputs their own background and text colour in dark mode).
    if explorers:
        colours = driver.execute_script("""
            document.documentElement.dataset.theme = 'dark';
            return [...document.querySelectorAll('.cmx-explorer')].map(root => [getComputedStyle(root).color,
                ...[...root.querySelectorAll('.cmx-frame:not([hidden]) svg > text:not([class*="c-mu"]):not([class*="c-w"]), label')]
                   .map(t => t.tagName === 'LABEL' ? getComputedStyle(t).color : getComputedStyle(t).fill)]);""")
        for ex, (root_colour, *texts) in zip(explorers, colours):
            if any(c != root_colour for c in texts):
                problems.append(f"dark mode: {ex['id']} text and labels {sorted(set(texts))} against its output's "
                                f"text colour {root_colour}")
        for i, ex in enumerate(explorers):
            element = driver.find_element("id", ex["id"])
            driver.execute_script("arguments[0].scrollIntoView()", element)
            (SCREENSHOTS / f"{Path(doc).name}-explorer-{i + 1}-dark.png").write_bytes(element.screenshot_as_png)
        driver.execute_script("document.documentElement.dataset.theme = 'light'")
    problems += [f"console error: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, f"{doc}:\n" + "\n".join(problems)
