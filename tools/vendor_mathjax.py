"""Copy the parts of MathJax 3 that the book's pages load into ``_assets/mathjax``.

The built site must not load anything from a CDN (readers offline, a browser test that
forbids any request beyond localhost), so MathJax is served from the book's own
``_static`` folder: ``_config.yml`` sets ``mathjax_path: mathjax/tex-chtml.js`` and lists
``_assets`` in ``html_static_path``.  The copied files are committed, so building the book
needs no npm; run this tool only to change the MathJax version::

    python tools/vendor_mathjax.py            # fetch with `npm pack`, copy the subset
    python tools/vendor_mathjax.py --check    # exit 1 if the vendored copy is incomplete

What is copied (about 2.5 MB of the package's 24 MB ``es5`` folder):

* ``tex-chtml.js``: TeX input, CommonHTML output, the menu (the single file pages load);
* ``output/chtml/fonts/woff-v2``: the fonts CommonHTML asks for next to the script;
* ``input/tex/extensions``: loaded on demand by ``autoload`` (``\\boldsymbol``, ``\\cancel``, ...);
* ``a11y`` without ``sre.js``: ``assistive-mml``, which the menu loads by default;
* ``ui``, and the package's ``LICENSE`` (Apache 2.0).

The speech-rule engine (``sre``, 4 MB) is left out: it loads only when a reader switches on
the accessibility explorer in MathJax's context menu.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "_assets" / "mathjax"
# Paths inside the package's es5/ folder (files, or folders copied whole).
KEEP = ["tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "a11y", "ui"]
DROP = ["a11y/sre.js"]
REQUIRED = ["tex-chtml.js", "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
            "input/tex/extensions/boldsymbol.js", "a11y/assistive-mml.js", "ui/menu.js",
            "LICENSE", "VERSION"]


def fetch(version: str, dest: Path) -> None:
    """Download mathjax@version with `npm pack` and copy the subset into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", f"mathjax@{version}", "--json",
                              "--pack-destination", tmp],
                             check=True, capture_output=True, text=True).stdout
        tarball = Path(tmp) / json.loads(out)[0]["filename"]
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        package = Path(tmp) / "package"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for rel in KEEP:
            src = package / "es5" / rel
            if src.is_dir():
                shutil.copytree(src, dest / rel)
            else:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        for rel in DROP:
            (dest / rel).unlink(missing_ok=True)
        shutil.copy2(package / "LICENSE", dest / "LICENSE")
        (dest / "VERSION").write_text(version + "\n")


def missing(dest: Path = DEST, version: str = VERSION) -> list[str]:
    """Required files absent from ``dest`` (empty when the vendored copy is usable)."""
    problems = [rel for rel in REQUIRED if not (dest / rel).is_file()]
    if not problems and (dest / "VERSION").read_text().strip() != version:
        problems.append(f"VERSION is not {version}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the vendored copy")
    parser.add_argument("--version", default=VERSION)
    args = parser.parse_args(argv)
    if not args.check:
        fetch(args.version, DEST)
    problems = missing(DEST, args.version)
    for p in problems:
        print(f"{DEST.relative_to(ROOT)}: missing {p}", file=sys.stderr)
    if not problems and not args.check:
        size = sum(f.stat().st_size for f in DEST.rglob("*") if f.is_file())
        print(f"MathJax {args.version} vendored into {DEST.relative_to(ROOT)} ({size / 1e6:.1f} MB)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
