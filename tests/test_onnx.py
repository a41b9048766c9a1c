"""The ONNX export (convmixer.onnx): one self-contained file whose every output equals PyTorch's.

onnxruntime (the Python build of the runtime the book's browser explainer runs as WebAssembly)
reads the exported shipped checkpoint; its logits and its nine token grids (z0..z8) are compared
with ``ConvMixer.forward_intermediates`` on real CIFAR-10 test images, and (slow tier) its predicted
class with PyTorch's on the whole test set.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from convmixer.checkpoint import load_model  # noqa: E402
from convmixer.data import CLASSES, MEAN, STD, load_cifar10, normalize  # noqa: E402
from convmixer.onnx import export_onnx, main, output_names  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "book" / "results" / "convmixer-paper.pt"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED.name} not shipped")
    path = export_onnx(SHIPPED, tmp_path_factory.mktemp("onnx") / "convmixer-paper.onnx")
    model, _ = load_model(SHIPPED)
    return path, model


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_one_self_contained_file_with_named_outputs_and_metadata(exported):
    path, model = exported
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .onnx.data beside it
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == output_names(len(model.layers))
    assert [i.name for i in proto.graph.input] == ["image"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["normalization_mean"]) == list(MEAN)
    assert json.loads(meta["normalization_std"]) == list(STD)
    assert json.loads(meta["classes"]) == list(CLASSES)
    assert json.loads(meta["model_config"])["dim"] == model.config.dim
    assert meta["checkpoint"] == SHIPPED.name
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "BatchNormalization"} <= ops


def test_every_output_matches_pytorch_on_test_images(exported, cifar_root):
    path, model = exported
    images, _ = load_cifar10("test", root=cifar_root)
    x = normalize(images[:16])
    with torch.no_grad():
        logits, grids = model.forward_intermediates(x)
    session = _session(path)
    for batch in (slice(0, 1), slice(0, 16)):  # the batch dimension is dynamic
        outs = session.run(None, {"image": x[batch].numpy()})
        expected = [logits[batch], *grids]
        assert len(outs) == len(expected) == len(model.layers) + 2
        for name, got, want in zip(output_names(len(model.layers)), outs, expected):
            want = want[batch].numpy()
            assert got.shape == want.shape, name
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale, err_msg=name)
    only_logits = session.run(["logits"], {"image": x.numpy()})[0]
    np.testing.assert_allclose(only_logits, logits.numpy(), rtol=0, atol=1e-4)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint at") and "\n" not in err
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    assert main([str(junk), str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a ConvMixer checkpoint" in err and "\n" not in err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert main([str(tmp_path / "other.pt"), str(tmp_path / "out.onnx")]) == 2
    assert "is not a ConvMixer checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow
def test_predicted_class_matches_pytorch_on_the_whole_test_set(exported, cifar_root):
    path, model = exported
    images, labels = load_cifar10("test", root=cifar_root)
    session = _session(path)
    disagree, correct = 0, 0
    for start in range(0, len(images), 500):
        x = normalize(images[start:start + 500])
        with torch.no_grad():
            want = model(x).argmax(1).numpy()
        got = session.run(["logits"], {"image": x.numpy()})[0].argmax(1)
        disagree += int((got != want).sum())
        correct += int((got == labels[start:start + 500].numpy()).sum())
    assert disagree == 0, f"{disagree} of {len(images)} test images classified differently"
    assert correct / len(images) > 0.5
