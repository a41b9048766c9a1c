"""Keep every chapter's repository address in step with ``_config.yml``.

``_config.yml`` ``repository.url`` / ``repository.branch`` is the one place the address
lives.  Each ``book/*.ipynb`` repeats it twice, because a notebook opened on Colab cannot
read the config:

(a) the Open-in-Colab badge in the first markdown cell, right below the title line::

        [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/book/<file>.ipynb)

(b) the clone address and branch in the setup cell (the first code cell, the same in
    every chapter: on Colab it clones the repository, for the library and for the saved
    results the chapters load, installs the library from the clone and works in its book/).
    The cell's one template is :data:`SETUP_TEMPLATE`; its ``{home}`` is the folder the clone
    goes into (``/content`` on Colab), a parameter so that ``tests/test_colab_setup.py`` can run
    the very same cell in a temporary folder with a stand-in ``google.colab``.

Usage::

    python tools/sync_repo_url.py           # rewrite the drifted notebooks in place
    python tools/sync_repo_url.py --check   # list drift, exit 1 if there is any (CI)

Only the ``source`` of those two cells changes: outputs, execution counts and metadata are
left as they are, and the file is written back in the JSON layout it was read in.  A first
code cell that starts with ``# Setup:`` is replaced by the standard one (:data:`SETUP_CELL`);
one that does not is reported for a person to fix.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB = "https://colab.research.google.com/github"
# A line that is an Open-in-Colab badge (any address, any alt text).
BADGE_LINE = re.compile(r"^\s*\[!\[[^\]]*\]\([^)]*colab[^)]*\)\]\([^)]*colab\.research\.google\.com[^)]*\)\s*$",
                        re.IGNORECASE)
REPO_ADDRESS = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+")
COLAB_HOME = "/content"
SETUP_TEMPLATE = '''\
# Setup: runs unchanged locally and on Colab. On Colab it clones the book's repository (the
# library, and the saved results the chapters load), installs the library with the book's helpers
# from the clone (Colab's own torch already satisfies the requirement and is left alone) and works
# in book/.
import os, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{home}/{name}"):
        !git clone -q --depth 1 --branch {branch} {url} {home}/{name}
        %pip install -q "{home}/{name}[book]"
    os.chdir("{home}/{name}/book")
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")'''
# The cell as the chapters hold it (fields url, branch and name still to fill).
SETUP_CELL = SETUP_TEMPLATE.replace("{home}", COLAB_HOME)


def setup_cell(url: str, branch: str, name: str, home: str = COLAB_HOME) -> str:
    """The setup cell for a repository at ``url`` (any address git clones), cloned into ``home/name``."""
    return SETUP_TEMPLATE.format(url=url, branch=branch, name=name, home=home)


class Repo:
    """The repository address from ``_config.yml``, and the forms the notebooks need."""

    def __init__(self, config: Path):
        cfg = yaml.safe_load(config.read_text(encoding="utf8")) or {}
        repo = cfg.get("repository") or {}
        url = str(repo.get("url", "")).strip().rstrip("/")
        url = url[:-4] if url.endswith(".git") else url
        m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
        if not m:
            raise SystemExit(f"{config}: repository.url must be https://github.com/<owner>/<repo>, got {url!r}")
        self.url, self.owner, self.name = url, m.group(1), m.group(2)
        self.branch = str(repo.get("branch") or "main")
        self.path_to_book = str(repo.get("path_to_book") or "").strip("/")
        self.book_root = config.parent

    def colab_url(self, notebook: Path) -> str:
        rel = notebook.resolve().relative_to(self.book_root.resolve()).as_posix()
        path = f"{self.path_to_book}/{rel}" if self.path_to_book else rel
        return f"{COLAB}/{self.owner}/{self.name}/blob/{self.branch}/{path}"

    def badge(self, notebook: Path) -> str:
        return f"[![Open In Colab]({BADGE_IMAGE})]({self.colab_url(notebook)})"

    def setup_cell(self, home: str = COLAB_HOME) -> str:
        return setup_cell(self.url, self.branch, self.name, home)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


def _with_badge(text: str, badge: str) -> str:
    """The markdown ``text`` with exactly one badge line, ``badge``, below the title."""
    lines = text.split("\n")
    badge_at = [i for i, line in enumerate(lines) if BADGE_LINE.match(line)]
    if badge_at:
        lines[badge_at[0]] = badge
        for i in reversed(badge_at[1:]):
            del lines[i]
        return "\n".join(lines)
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if title is None:  # no title line: the badge opens the cell
        return "\n".join([badge, ""] + lines)
    rest = lines[title + 1:]
    while rest and not rest[0].strip():
        rest.pop(0)
    return "\n".join(lines[: title + 1] + ["", badge] + ([""] + rest if rest else []))


def _dump_like(nb, original: str) -> str:
    """Serialise ``nb`` in the JSON layout ``original`` was written in (nbformat's by default)."""
    styles = [dict(indent=1, sort_keys=True), dict(indent=1, sort_keys=False),
              dict(indent=2, sort_keys=True), dict(indent=2, sort_keys=False)]
    old = json.loads(original)
    for style in styles:
        if json.dumps(old, ensure_ascii=False, **style) + "\n" == original:
            return json.dumps(nb, ensure_ascii=False, **style) + "\n"
    return json.dumps(nb, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def sync(notebook: Path, repo: Repo, write: bool) -> tuple[list[str], list[str]]:
    """Bring one notebook in line with ``repo``.

    Returns ``(drift, problems)``: what was (or, with ``write=False``, would be) rewritten,
    and what the tool cannot fix.
    """
    original = notebook.read_text(encoding="utf8")
    nb = json.loads(original)
    cells = nb.get("cells", [])
    drift, problems = [], []

    md = next((c for c in cells if c.get("cell_type") == "markdown"), None)
    if md is None:
        problems.append("no markdown cell to hold the Open-in-Colab badge")
    else:
        old = _source(md)
        new = _with_badge(old, repo.badge(notebook))
        if new != old:
            drift.append("Open-in-Colab badge " + ("missing" if not any(
                BADGE_LINE.match(line) for line in old.split("\n")) else "out of date"))
            _set_source(md, new)

    code = next((c for c in cells if c.get("cell_type") == "code"), None)
    if code is None or not _source(code).startswith("# Setup:"):
        problems.append("the first code cell is not the setup cell (it must start with '# Setup:')")
    elif _source(code).rstrip("\n") != repo.setup_cell():
        old = REPO_ADDRESS.search(_source(code))
        drift.append(f"setup cell out of date (it uses {old.group(0) if old else 'no address'}; "
                     f"standard: {repo.url}, branch {repo.branch})")
        _set_source(code, repo.setup_cell())

    if drift and write:
        notebook.write_text(_dump_like(nb, original), encoding="utf8")
    try:
        name = notebook.resolve().relative_to(repo.book_root.resolve()).as_posix()
    except ValueError:
        name = str(notebook)
    return [f"{name}: {d}" for d in drift], [f"{name}: {p}" for p in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing; exit 1 on drift")
    parser.add_argument("--root", type=Path, default=ROOT, help="book root holding _config.yml and book/")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb")
    args = parser.parse_args(argv)
    repo = Repo(args.root / "_config.yml")
    notebooks = args.notebooks or sorted((args.root / "book").glob("*.ipynb"))
    drift, problems = [], []
    for nb in notebooks:
        d, p = sync(nb, repo, write=not args.check)
        drift += d
        problems += p
    for line in drift:
        print(("drift: " if args.check else "fixed: ") + line, file=sys.stderr if args.check else sys.stdout)
    for line in problems:
        print("needs a person: " + line, file=sys.stderr)
    if args.check and drift:
        print(f"{len(drift)} drifted address(es): run `python tools/sync_repo_url.py` to rewrite them",
              file=sys.stderr)
    if not drift and not problems:
        print(f"{len(notebooks)} notebook(s) in step with {repo.url} (branch {repo.branch})")
    return 1 if problems or (args.check and drift) else 0


if __name__ == "__main__":
    sys.exit(main())
