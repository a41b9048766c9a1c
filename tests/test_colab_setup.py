"""The chapters' Colab setup cell, run outside Colab, and every chapter holding that same cell.

The cell has one template (``tools/sync_repo_url.py``: ``SETUP_TEMPLATE``) whose clone folder is a
parameter.  Here it runs once, through IPython (``!git clone``, ``%pip install``), in a fresh
temporary folder with:

* a stand-in ``google.colab`` module, imported first as Colab's kernel does;
* a ``file://`` clone (so ``--depth 1`` applies) of a local repository holding this working tree's
  library and committed results;
* a throwaway virtual environment that sees this environment's packages as its system site
  packages (torch among them, as Colab's torch), with pip offline (``PIP_NO_INDEX``), so any
  attempt to download or reinstall torch fails the test.

Then the library must import from the clone's installation, torch from where it was, and the
chapter's result files must be where the chapters look for them.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh venv and pip: the README's test command runs it

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import sync_repo_url  # noqa: E402

NAME = "convmixer-book"
RUNNER = r'''
import json, os, sys
import google.colab  # Colab imports it before any cell runs
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
result = shell.run_cell(open(sys.argv[1]).read())
result.raise_error()
import convmixer, torch
from convmixer.checkpoint import load_model
model, ckpt = load_model("results/convmixer-cpu.pt")  # as chapters 6 and 7 load the shipped run
print(json.dumps({"convmixer": convmixer.__file__, "torch": torch.__file__, "cwd": os.getcwd(),
                  "device": str(shell.user_ns["device"]), "exit_code": shell.user_ns.get("_exit_code"),
                  "reference_epochs": len(ckpt["history"])}))
'''


def tracked(*paths):
    out = subprocess.run(["git", "ls-files", "-z", *paths], cwd=REPO, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split("\0") if p]


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A git repository with this working tree's library, packaging files and committed results."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    origin = tmp_path_factory.mktemp("origin") / NAME
    files = tracked("pyproject.toml", "README.md", "LICENSE", "convmixer", "book/results")
    for rel in files + [str(p.relative_to(REPO)) for p in (REPO / "convmixer").glob("*.py")]:
        if (REPO / rel).is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, origin / rel)
    git("init", "-q", "-b", "main", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "snapshot", cwd=origin)
    return origin


def throwaway_venv(folder: Path) -> Path:
    """A venv whose system site is this environment's: its python sees torch, pip, IPython... as Colab's
    does, while what pip installs goes into the venv.  Returns its python."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: this environment's packages are visible, its .pth hooks (an editable install of
    # this checkout among them) are not, as on Colab, where the library is not installed at all.
    Path(site, "runner_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_setup_cell_clones_installs_and_finds_the_results(origin, tmp_path):
    stub = tmp_path / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text('"""Stand-in for Colab\'s module: its presence is what the cell checks."""\n')
    python = throwaway_venv(tmp_path / "venv")
    home = tmp_path / "content"
    home.mkdir()
    cell = sync_repo_url.setup_cell(f"file://{origin}", "main", NAME, home=str(home))
    (tmp_path / "cell.ipy").write_text(cell)
    (tmp_path / "runner.py").write_text(RUNNER)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(tmp_path / "stub"), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_BUILD_ISOLATION="0", HOME=str(tmp_path / "home"), PATH=f"{python.parent}:{env['PATH']}")
    run = subprocess.run([str(python), str(tmp_path / "runner.py"), str(tmp_path / "cell.ipy")], cwd=fresh,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    clone = home / NAME
    # a shallow clone of the file:// repository, and the kernel now works in its book/
    assert (clone / ".git" / "shallow").is_file() and got["exit_code"] in (None, 0)
    assert Path(got["cwd"]) == clone / "book"
    # the library was installed from the clone into the venv: not this checkout, not an editable link
    installed = Path(got["convmixer"])
    assert installed.is_relative_to(tmp_path / "venv"), installed
    assert installed.parent.joinpath("train.py").read_bytes() == (clone / "convmixer" / "train.py").read_bytes()
    # torch is the one that was there (Colab's); pip installed no copy of it
    assert not Path(got["torch"]).is_relative_to(tmp_path), got["torch"]
    venv_site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert not any(p.name.lower().startswith(("torch", "nvidia")) for p in venv_site.iterdir())
    # every result file the repository ships is where the chapters look (book/results), and loads
    for rel in tracked("book/results"):
        assert (clone / rel).is_file(), rel
    assert got["reference_epochs"] >= 1 and got["device"] == "cpu"
    # a second run of the cell (a restarted Colab runtime) neither clones nor installs again
    again = subprocess.run([str(python), str(tmp_path / "runner.py"), str(tmp_path / "cell.ipy")], cwd=fresh,
                           env={**env, "PIP_NO_INDEX": "1", "GIT_DIR": "/nonexistent"},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]


def test_every_chapter_starts_with_the_same_setup_cell():
    """The first code cell of every chapter is the template's cell (fix: python tools/sync_repo_url.py)."""
    repo = sync_repo_url.Repo(REPO / "_config.yml")
    expected = repo.setup_cell()
    chapters = sorted((REPO / "book").glob("*.ipynb"))
    assert chapters
    differ = []
    for nb in chapters:
        cells = json.loads(nb.read_text(encoding="utf8"))["cells"]
        code = next(c for c in cells if c["cell_type"] == "code")
        source = "".join(code["source"]) if isinstance(code["source"], list) else code["source"]
        if source.rstrip("\n") != expected:
            differ.append(nb.name)
    assert not differ, f"not the standard setup cell: {differ}; run python tools/sync_repo_url.py"


def test_template_has_the_clone_folder_as_a_parameter():
    cell = sync_repo_url.setup_cell("https://github.com/o/r", "dev", "r", home="/somewhere")
    assert "/content" not in cell and "/somewhere/r/book" in cell
    assert "--depth 1 --branch dev https://github.com/o/r /somewhere/r" in cell
    assert sync_repo_url.setup_cell("https://github.com/o/r", "dev", "r").count("/content/r") == 4  # isdir, clone, pip, chdir
