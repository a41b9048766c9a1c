"""Loading CIFAR-10: image-folder trees, the cache, and a clear message for every broken input.

Each test builds a tiny ImageFolder tree of real 32x32 PNG/JPEG files in ``tmp_path``; only the
last test reads the real data set (``cifar_root``).
"""
import errno
import io
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from convmixer import data
from convmixer.checkpoint import atomic_save
from convmixer.data import CLASSES, data_root, default_data_root, has_cifar10, install_archive, load_cifar10


def write_image(path: Path, seed: int, size=(32, 32), fmt=None) -> np.ndarray:
    """A random RGB image saved with PIL; returns its (H, W, 3) uint8 pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def make_tree(root: Path, split="train", per_class=2, suffix=".png") -> Path:
    """root/split/<class>/<i><suffix> for every CIFAR-10 class."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            write_image(root / split / name / f"{i:04d}{suffix}", seed=100 * c + i)
    return root / split


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: to assert that nothing was changed or added."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_cache(root: Path) -> bool:
    return not any(p.name.startswith(("cifar10-", ".cifar10-")) for p in root.iterdir())


# --- Reading a tree ----------------------------------------------------------------------------

def test_image_folder_tree_is_read_exactly_in_class_order(tmp_path):
    make_tree(tmp_path, per_class=2)
    x, y = load_cifar10("train", tmp_path, download=False, cache=False)
    assert x.dtype == torch.uint8 and x.shape == (20, 3, 32, 32)
    assert y.dtype == torch.int64 and y.tolist() == [c for c in range(10) for _ in range(2)]
    expected = np.array(Image.open(tmp_path / "train" / "bird" / "0001.png"))  # PNG is lossless
    assert torch.equal(x[5], torch.from_numpy(expected).permute(2, 0, 1))
    assert no_cache(tmp_path)


def test_grayscale_and_upper_case_suffixes_are_accepted(tmp_path):
    make_tree(tmp_path, per_class=1)
    Image.new("L", (32, 32), 7).save(tmp_path / "train" / "cat" / "0001.JPG", format="JPEG")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image suffix: ignored")
    x, y = load_cifar10("train", tmp_path, download=False, cache=False)
    assert x.shape == (11, 3, 32, 32) and y.tolist().count(CLASSES.index("cat")) == 2


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVMIXER_DATA", str(tmp_path))
    assert data_root() == tmp_path and data_root("elsewhere") == Path("elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("CONVMIXER_DATA", "")  # set but empty: the default, not the current folder
    assert data_root() == tmp_path / "home" / ".cache" / "convmixer" / "data"
    monkeypatch.delenv("CONVMIXER_DATA")
    assert data_root() == default_data_root() == tmp_path / "home" / ".cache" / "convmixer" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "convmixer" / "data"
    monkeypatch.chdir(tmp_path)  # the default does not depend on the working directory
    assert data_root() == tmp_path / "cache" / "convmixer" / "data"


# --- Broken data folders: the error names the folder or file and says what to do --------------

def test_missing_root_folder(tmp_path):
    root = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10("train", root, download=False)
    msg = str(e.value)
    assert f"the folder {root} does not exist" in msg
    assert "CONVMIXER_DATA" in msg and "Fix:" in msg
    assert not root.exists()  # nothing created


def test_empty_split_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train is empty; expected one folder per CIFAR-10 class") as e:
        load_cifar10("train", tmp_path, download=False)
    assert "extract the data set again" in str(e.value)
    assert no_cache(tmp_path)


def test_split_folder_of_loose_files(tmp_path):
    write_image(tmp_path / "train" / "0000.png", 0)
    with pytest.raises(FileNotFoundError, match="holds no class folders"):
        load_cifar10("train", tmp_path, download=False)


def test_missing_class_folder_is_named(tmp_path):
    split = make_tree(tmp_path, per_class=1)
    (split / "truck" / "0000.png").unlink()
    (split / "truck").rename(split / "Truck")  # a wrongly cased name counts as missing
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10("train", tmp_path, download=False)
    msg = str(e.value)
    assert "missing the class folder(s) truck" in msg and "Truck" in msg  # what is there
    assert "named exactly" in msg and "Fix:" in msg
    assert no_cache(tmp_path)


def test_class_folder_without_images_is_named(tmp_path):
    split = make_tree(tmp_path, per_class=1)
    (split / "frog" / "0000.png").unlink()
    (split / "frog" / "README.txt").write_text("images went missing")
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10("train", tmp_path, download=False)
    msg = str(e.value)
    assert str(split / "frog") in msg and "class 'frog'" in msg and "holds no images" in msg
    assert "Fix:" in msg
    assert no_cache(tmp_path)


@pytest.mark.parametrize("tolerant_pil", [False, True], ids=["strict-pil", "LOAD_TRUNCATED_IMAGES"])
@pytest.mark.parametrize("cut", [1, 20, 0.5], ids=["last-byte", "20-bytes", "half"])
def test_truncated_jpeg_is_named(tmp_path, monkeypatch, cut, tolerant_pil):
    """PIL decodes a cut JPEG silently when ImageFile.LOAD_TRUNCATED_IMAGES is on (some libraries
    switch it on globally); the loader must still report the file, and leave the flag as it was."""
    split = make_tree(tmp_path, per_class=1, suffix=".jpg")
    bad = split / "dog" / "0000.jpg"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:int(len(raw) * cut)] if isinstance(cut, float) else raw[:-cut])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant_pil)
    with pytest.raises(ValueError) as e:
        load_cifar10("train", tmp_path, download=False)
    msg = str(e.value)
    assert f"{bad} cannot be decoded: truncated or not an image" in msg
    assert "replace or delete" in msg and "nothing was cached" in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is tolerant_pil
    assert no_cache(tmp_path)


def test_truncated_png_is_named(tmp_path):
    split = make_tree(tmp_path, per_class=1)
    bad = split / "ship" / "0000.png"
    bad.write_bytes(bad.read_bytes()[:600])
    with pytest.raises(ValueError, match="cannot be decoded") as e:
        load_cifar10("train", tmp_path, download=False)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("content", [b"", b"GIF89a but not really", b"<html>404 Not Found</html>"],
                         ids=["empty", "garbage", "html"])
def test_non_image_with_image_suffix_is_named(tmp_path, content):
    split = make_tree(tmp_path, per_class=1)
    bad = split / "horse" / "0001.jpg"
    bad.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_cifar10("train", tmp_path, download=False)
    assert f"{bad} cannot be decoded: truncated or not an image" in str(e.value)
    assert no_cache(tmp_path)


def test_wrong_size_image_is_named(tmp_path):
    split = make_tree(tmp_path, per_class=1)
    bad = split / "deer" / "0000.png"
    write_image(bad, 0, size=(33, 32))
    with pytest.raises(ValueError) as e:
        load_cifar10("train", tmp_path, download=False)
    assert f"{bad} is 33x32 pixels, not 32x32 (resize it)" in str(e.value)


def test_every_bad_file_is_reported_at_once(tmp_path):
    """Decoding 60,000 files to find one bad file per run would be slow: list them all (up to a limit)."""
    split = make_tree(tmp_path, per_class=1)
    bad = [split / c / f"{i:04d}.png" for c in ("airplane", "cat") for i in range(1, 7)]
    for f in bad:
        f.write_bytes(b"not a png")
    with pytest.raises(ValueError) as e:
        load_cifar10("train", tmp_path, download=False)
    msg = str(e.value)
    assert msg.startswith(f"12 image file(s) under {split} cannot be used")
    assert all(str(f) in msg for f in bad[:data.MAX_LISTED]) and "and 2 more" in msg


# --- The cache ---------------------------------------------------------------------------------

def test_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    make_tree(tmp_path, per_class=1)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    x, y = load_cifar10("train", tmp_path, download=False)
    cache = tmp_path / "cifar10-train-uint8.pt"
    [(src, dst)] = renames
    assert dst == cache and src.parent == tmp_path and src.name.endswith(".tmp")  # temp file, then rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-train-uint8.pt", "train"]  # no temp left
    blob = torch.load(cache, weights_only=True)
    assert torch.equal(blob["images"], x) and torch.equal(blob["labels"], y)

    def no_decoding(folder):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "_read_image_folder", no_decoding)
    before = cache.stat().st_mtime_ns
    x2, y2 = load_cifar10("train", tmp_path, download=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert cache.stat().st_mtime_ns == before and len(renames) == 1  # read, not rewritten


def marker_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))
    return pickle.dumps({"images": Evil(), "labels": Evil()}, protocol=2)


def wrong_shape_cache() -> bytes:
    buf = io.BytesIO()
    torch.save({"images": torch.zeros(3, 32, 32, 3, dtype=torch.uint8), "labels": torch.zeros(3, dtype=torch.int64)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["random-bytes", "empty", "truncated", "wrong-shape", "pickled-code"])
def test_unreadable_cache_is_rebuilt_with_a_warning(tmp_path, kind):
    make_tree(tmp_path, per_class=1)
    cache = tmp_path / "cifar10-train-uint8.pt"
    expected = load_cifar10("train", tmp_path, download=False)
    marker = tmp_path / "code-was-run"
    cache.write_bytes({
        "random-bytes": os.urandom(4096),
        "empty": b"",
        "truncated": cache.read_bytes()[:5000],  # e.g. a copy that was interrupted
        "wrong-shape": wrong_shape_cache(),
        "pickled-code": marker_pickle(marker),
    }[kind])
    with pytest.warns(UserWarning, match=rf"the data cache .*cifar10-train-uint8.pt cannot be used .*rebuilding it from {tmp_path / 'train'}"):
        x, y = load_cifar10("train", tmp_path, download=False)
    assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
    assert not marker.exists()  # weights_only refused the pickled call
    blob = torch.load(cache, weights_only=True)  # rebuilt: valid again
    assert torch.equal(blob["images"], x)


def test_unreadable_cache_without_a_source_is_a_clear_error(tmp_path):
    cache = tmp_path / "cifar10-test-uint8.pt"
    cache.write_bytes(b"\x00" * 100)
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10("test", tmp_path, download=False)
    msg = str(e.value)
    assert f"{cache} (unreadable:" in msg and "Fix:" in msg
    assert cache.read_bytes() == b"\x00" * 100  # not deleted: the user decides


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only; as root (where permissions do not stop writes) also refuse new files there."""
    made = []

    def make(folder: Path):
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
                made.append(p)
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield make
    for p in made:
        p.chmod(0o755)


def test_read_only_data_folder_still_works(tmp_path, read_only):
    make_tree(tmp_path, per_class=1)
    before = snapshot(tmp_path)
    read_only(tmp_path)
    for _ in range(2):  # and again: still no cache, still the same data
        with pytest.warns(UserWarning, match="cannot write the data cache .* will be decoded again next time"):
            x, y = load_cifar10("train", tmp_path, download=False)
        assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    assert snapshot(tmp_path) == before


def test_read_only_folder_with_an_unreadable_cache_still_works(tmp_path, read_only):
    make_tree(tmp_path, per_class=1)
    (tmp_path / "cifar10-train-uint8.pt").write_bytes(b"garbage")
    before = snapshot(tmp_path)
    read_only(tmp_path)
    with pytest.warns(UserWarning) as record:
        x, _ = load_cifar10("train", tmp_path, download=False)
    messages = " | ".join(str(w.message) for w in record)
    assert "rebuilding it" in messages and "cannot write the data cache" in messages
    assert x.shape == (10, 3, 32, 32)
    assert snapshot(tmp_path) == before


def test_read_only_folder_with_a_good_cache_reads_it(tmp_path, read_only, recwarn):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 3, 9, 3])
    atomic_save({"images": images, "labels": labels}, tmp_path / "cifar10-test-uint8.pt")
    read_only(tmp_path)
    x, y = load_cifar10("test", tmp_path, download=False)
    assert torch.equal(x, images) and torch.equal(y, labels) and not recwarn.list


# --- The command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    ("truncated", "cannot be decoded: truncated or not an image"),
    ("missing-class", "is missing the class folder(s) cat"),
], ids=["truncated-file", "missing-class"])
def test_training_on_a_broken_folder_fails_in_one_line(tmp_path, capsys, damage, message):
    from convmixer.train import main

    for split in ("train", "test"):
        make_tree(tmp_path / "data", split, per_class=1, suffix=".jpg")
    bad = tmp_path / "data" / "train" / "cat" / "0000.jpg"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-10])
    else:
        shutil.rmtree(bad.parent)
    before = snapshot(tmp_path / "data")
    rc = main(["--preset", "tiny", "--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "run"),
               "--batch-size", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err and "Fix:" in err
    if damage == "truncated":
        assert str(bad) in err
    assert snapshot(tmp_path / "data") == before and not (tmp_path / "run" / "last.pt").exists()


# --- The real data set -----------------------------------------------------------------------------

def test_real_test_split_loads_from_its_cache(cifar_root):
    x, y = load_cifar10("test", cifar_root, download=False)
    assert x.dtype == torch.uint8 and x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10


# --- One home for the data, whatever the working directory ------------------------------------------

def jpeg_archive(path: Path, per_class=1) -> Path:
    """A small cifar10-jpeg.tar.gz in the layout of ../shared/data's (train/ and test/ at the top)."""
    import tarfile

    tree = path.parent / "tree"
    for split in ("train", "test"):
        make_tree(tree, split, per_class=per_class, suffix=".jpg")
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=split)
    return path


def home_env(tmp_path: Path) -> dict:
    """An environment whose home is ``tmp_path/home``, with no CONVMIXER_DATA and no network."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONVMIXER_DATA", "XDG_CACHE_HOME")}
    repo = Path(__file__).resolve().parents[1]
    return {**env, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(repo),
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # a download would fail


def test_archive_fills_the_default_folder_once(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVMIXER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = jpeg_archive(tmp_path / "src" / "cifar10-jpeg.tar.gz")
    root = install_archive(archive)
    assert root == tmp_path / "cache" / "convmixer" / "data" and has_cifar10()
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]  # no leftovers of the extraction
    x, y = load_cifar10("test", download=False)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    stamp = (root / "train").stat().st_mtime_ns
    install_archive(archive)  # already there: nothing is extracted again
    assert (root / "train").stat().st_mtime_ns == stamp


def test_setup_command_and_a_run_elsewhere_find_the_data_without_a_download(tmp_path):
    """What tools/env.sh runs, then a chapter-like training run started from an unrelated folder."""
    import subprocess
    import sys

    archive = jpeg_archive(tmp_path / "src" / "cifar10-jpeg.tar.gz", per_class=7)
    env = home_env(tmp_path)
    fill = subprocess.run([sys.executable, "-m", "convmixer.data", "--from", str(archive)], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert fill.returncode == 0, fill.stderr
    home_data = tmp_path / "home" / ".cache" / "convmixer" / "data"
    assert f"extracted to {home_data}" in fill.stdout
    elsewhere = tmp_path / "book"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-m", "convmixer.train", "--preset", "tiny", "--dim", "8", "--depth", "1",
                          "--train-subset", "0", "--test-subset", "0", "--batch-size", "35", "--epochs", "1",
                          "--threads", "1", "--out-dir", "run"],
                         env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "run" / "last.pt").is_file() and not (elsewhere / "data").exists()
    assert (home_data / "cifar10-train-uint8.pt").is_file()  # cached beside the extracted tree
    assert not any(p.suffix == ".gz" for p in home_data.iterdir())  # nothing was downloaded
