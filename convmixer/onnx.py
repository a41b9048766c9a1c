"""A trained ConvMixer as one ONNX file, so it runs where PyTorch does not: in a web browser.

ONNX is a file format for a computation graph plus its weights, read by runtimes that know
nothing of PyTorch; onnxruntime-web runs it in a browser tab on WebAssembly.  A ConvMixer
in eval mode is a short chain of standard operators,

.. math::

    z_0 = \\mathrm{BN}(\\mathrm{GELU}(\\mathrm{Conv}_{p \\times p,\\ \\mathrm{stride}\\ p}(\\hat x))),\\qquad
    z_l = \\mathrm{BN}(\\mathrm{GELU}(\\mathrm{Conv}_{1 \\times 1}(z_{l-1}
          + \\mathrm{BN}(\\mathrm{GELU}(\\mathrm{DWConv}_{k \\times k}(z_{l-1})))))),

    \\mathrm{logits} = W \\,\\mathrm{mean}_{i,j}\\, z_d[:, i, j] + b,

where the depthwise convolution is a ``Conv`` with ``group = h`` and a batch norm in eval
mode is a fixed affine map per channel, :math:`\\gamma (z - \\mu) / \\sqrt{\\sigma^2 + \\epsilon}
+ \\beta` (``BatchNormalization``).  Every operator exists in ONNX opset 17, so the export is
exact up to float32 rounding: the tests compare every output with PyTorch's.

What the file holds:

* one input ``image``: ``(N, 3, H, W)`` float32, **already normalised** with the training
  statistics, :math:`\\hat x_c = (x_c / 255 - \\mathrm{MEAN}_c) / \\mathrm{STD}_c` with
  ``convmixer.data.MEAN`` and ``convmixer.data.STD`` (the same :func:`convmixer.data.normalize`
  the model was trained with).  The batch dimension is dynamic; H and W are the checkpoint's
  training size (32 for CIFAR-10).  Covering a patch with the training mean is writing zeros there.
* named outputs ``logits`` ``(N, classes)``, ``z0`` (the patch embedding, ``(N, h, H/p, W/p)``) and
  ``z1`` ... ``zd`` (layer l's output), the same tensors as
  :meth:`convmixer.model.ConvMixer.forward_intermediates`.  A runtime that asks only for
  ``logits`` skips nothing (the layers are a chain) but copies one small tensor instead of nine.
* metadata (``metadata_props``, read with ``onnx.load(path).metadata_props`` or
  ``InferenceSession.get_modelmeta().custom_metadata_map``): ``normalization_mean``,
  ``normalization_std``, ``input_range`` (how pixels map to the input), ``classes``,
  ``model_config`` (JSON) and ``checkpoint`` (the source file's name).

The weights are stored inside the file (about 2.4 MB for ConvMixer-256/8), never in a separate
``.onnx.data`` file, so one URL serves the whole model.  The export uses PyTorch's TorchScript-based
exporter (``dynamo=False``): the graph has no control flow and the exporter is fast and
deterministic.

Command line::

    python -m convmixer.onnx book/results/convmixer-paper.pt convmixer-paper.onnx
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_model
from .data import CLASSES, MEAN, STD

OPSET = 17
INPUT_NAME = "image"


def output_names(depth: int) -> list[str]:
    """``["logits", "z0", "z1", ..., "z{depth}"]``: the exported graph's outputs, in order."""
    return ["logits"] + [f"z{i}" for i in range(depth + 1)]


class Intermediates(nn.Module):
    """``x -> (logits, z_0, ..., z_d)`` of a ConvMixer, as a flat tuple (what an exporter can name)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        grids = [self.model.patch_embed(x)]  # forward_intermediates minus its shape checks
        for layer in self.model.layers:
            grids.append(layer(grids[-1]))
        return (self.model.head(self.model.pool(grids[-1]).flatten(1)), *grids)


def metadata(ckpt: dict, checkpoint_name: str) -> dict[str, str]:
    """The key/value strings stored in the ONNX file beside the graph."""
    n_classes = ckpt["model_config"].get("n_classes", 10)
    classes = list(CLASSES) if n_classes == len(CLASSES) else [str(i) for i in range(n_classes)]
    return {
        "normalization_mean": json.dumps(list(MEAN)),
        "normalization_std": json.dumps(list(STD)),
        "input_range": "image = (pixel / 255 - normalization_mean[c]) / normalization_std[c], channels RGB, NCHW",
        "classes": json.dumps(classes),
        "model_config": json.dumps(ckpt["model_config"], sort_keys=True),
        "checkpoint": checkpoint_name,
    }


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, image_size: int = 32) -> Path:
    """Write the checkpoint's model to ``out`` as one self-contained ONNX file; return its path.

    Raises ``FileNotFoundError`` or :class:`convmixer.checkpoint.CheckpointError` (one-line
    messages) for a missing path or a file that is not a ConvMixer checkpoint.  ``out`` is
    written atomically (a temporary file renamed over it).
    """
    import onnx  # optional dependency: pip install "convmixer[onnx]"

    checkpoint, out = Path(checkpoint), Path(out)
    model, ckpt = load_model(checkpoint)
    depth = len(model.layers)
    names = output_names(depth)
    example = torch.zeros(2, model.config.in_channels, image_size, image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(Intermediates(model).eval(), (example,), str(raw), dynamo=False,
                              opset_version=OPSET, input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]},
                              do_constant_folding=True)
        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        for key, value in metadata(ckpt, checkpoint.name).items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = (f"ConvMixer-{model.config.dim}/{depth} (k={model.config.kernel_size}, "
                            f"p={model.config.patch_size}) from {checkpoint.name}")
        onnx.checker.check_model(proto)
        staged = Path(tmp) / "model.onnx"
        onnx.save(proto, str(staged))  # < 2 GB: weights inline, no .onnx.data
        os.replace(staged, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convmixer.onnx", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by convmixer.train, e.g. book/results/convmixer-paper.pt")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--image-size", type=int, default=32, help="input height and width (default 32, CIFAR-10)")
    args = parser.parse_args(argv)
    try:
        path = export_onnx(args.checkpoint, args.out, args.image_size)
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"error: {e}; install the exporter with: pip install 'convmixer[onnx]'", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
