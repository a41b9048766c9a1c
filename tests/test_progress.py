"""Progress output: plain lines when piped, labml's live display in a terminal, one block in a notebook."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convmixer.checkpoint import atomic_save
from convmixer.track import Progress, display_mode, epoch_line

REPO = Path(__file__).resolve().parents[1]
ESCAPES = re.compile(r"\x1b|\r")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 64), ("test", 32)):
        atomic_save({"images": torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     "labels": torch.randint(0, 10, (n,), generator=g)}, root / f"cifar10-{split}-uint8.pt")
    return root


def test_piped_run_prints_plain_lines_only(data_root, tmp_path):
    """`python -m convmixer.train ... > train.log`: a start line, one line per epoch, nothing else."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home")}
    args = ["--preset", "tiny", "--dim", "8", "--depth", "1", "--train-subset", "0", "--test-subset", "0",
            "--batch-size", "16", "--epochs", "3", "--log-every", "1", "--threads", "1", "--device", "cpu",
            "--data-root", str(data_root), "--out-dir", str(tmp_path / "run")]
    with open(tmp_path / "train.log", "wb") as log:  # a file, as under nohup or a job scheduler
        proc = subprocess.run([sys.executable, "-m", "convmixer.train", *args], stdout=log,
                              stderr=subprocess.PIPE, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    out = (tmp_path / "train.log").read_text()
    assert not ESCAPES.search(out), repr(out[:300])
    lines = out.splitlines()
    assert len(lines) == 1 + 3, lines
    assert lines[0].startswith("ConvMixer-8/1 (k=3, p=4)") and "parameters, on " in lines[0]
    assert "fp32" in lines[0] and str(tmp_path / "run") in lines[0]
    for epoch, line in enumerate(lines[1:], 1):
        assert re.fullmatch(rf"epoch {epoch}/3: lr \d\.\d{{5}}, train loss [\d.]+ acc [\d.]+, test loss [\d.]+ "
                            r"acc [\d.]+, [\d,]+ img/s, elapsed \d+:\d\d:\d\d, left \d+:\d\d:\d\d", line), line
    assert (tmp_path / "run" / "logs").is_dir()  # labml still keeps its files in the run folder
    assert not ESCAPES.search(proc.stderr.decode())


def test_display_mode_follows_stdout():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert display_mode(io.StringIO()) == "plain"
    assert display_mode(Tty()) == "terminal"


def test_display_mode_in_a_kernel_is_notebook(monkeypatch):
    import IPython

    class Kernel:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    assert display_mode(io.StringIO()) == "notebook"


RECORD = dict(epoch=1, lr=0.01, train_loss=2.0, train_accuracy=0.2, test_loss=2.1, test_accuracy=0.25,
              images_per_second=1234.5)


def test_notebook_progress_is_one_block_updated_in_place(monkeypatch, tmp_path, capsys):
    """One display handle for the whole run; the step line is rewritten, each finished epoch stays."""
    import IPython.display

    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(repr(obj))

    def display(obj, display_id=None):
        assert display_id is True
        shown.append(repr(obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    with Progress("notebook", tmp_path / "logs", {"a": 1}) as p:
        p.start("ConvMixer-8/1 ...")
        for epoch in p.epochs(range(2)):
            for i, _ in p.steps(range(4)):
                if (i + 1) % 2 == 0:
                    p.step(epoch, 2, i + 1, 4, 2.0)
            p.epoch_done({**RECORD, "epoch": epoch + 1}, 2, epoch + 1)
    assert len(shown) == 1 and capsys.readouterr().out == ""
    final = updates[-1].splitlines()
    assert final[0] == "ConvMixer-8/1 ..." and len(final) == 3
    assert final[1].startswith("epoch 1/2: lr") and final[2].startswith("epoch 2/2: lr")
    assert all(not ESCAPES.search(u) for u in shown + updates)
    assert any("step 2/4" in u for u in updates)


def test_off_shows_nothing(tmp_path, capsys):
    with Progress("off", tmp_path / "logs") as p:
        p.start("start")
        for epoch in p.epochs(range(1)):
            for _ in p.steps(range(2)):
                p.step(epoch, 1, 1, 2, 1.0)
            p.epoch_done(RECORD, 1, 1)
    assert capsys.readouterr().out == ""


def test_epoch_line_reads_as_a_sentence():
    line = epoch_line(RECORD, 25, elapsed=65, left=3600 * 2 + 5)
    assert line == ("epoch 1/25: lr 0.01000, train loss 2.0000 acc 0.2000, test loss 2.1000 acc 0.2500, "
                    "1,234 img/s, elapsed 0:01:05, left 2:00:05")
