"""ConvMixer: patch embedding, then depth x (spatial mixing, channel mixing).

The paper's notation, used throughout the library and the book::

    h  width (``dim``): channels of every token, constant through the network
    d  depth (``depth``): number of ConvMixer layers
    k  kernel size (``kernel_size``) of the depthwise (spatial-mixing) convolution
    p  patch size (``patch_size``): side of the square patches the image is cut into

For an input of C x H x W the network computes::

    z_0     = BN(sigma(Conv_{C->h}(x; kernel p, stride p)))            # h x H/p x W/p
    z'_l    = BN(sigma(DepthwiseConv_k(z_{l-1}))) + z_{l-1}             # spatial mixing
    z_l     = BN(sigma(PointwiseConv(z'_l)))                            # channel mixing
    logits  = Linear(GlobalAvgPool(z_d))

with sigma = GELU.  ``ConvMixer()`` at its defaults is exactly that network; the
``activation``, ``residual`` and ``norm`` arguments exist for the book's ablations
(``residual`` moves the skip connection: see :class:`ConvMixerLayer`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

# The choices a ConvMixer's configuration offers, defined here once; TrainConfig, the
# command line and the ablation read them from here; check_choice is the one validator.
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
# Where a layer's skip connection goes (formulas in ConvMixerLayer's docstring).
RESIDUALS = ("spatial", "channel", "two_skips", "whole_layer", "none")
NORMS = ("batch", "layer")


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming the option and its allowed values, unless ``value`` is
    one of ``choices``.

    One validator for every named choice (``activation``, ``residual``, ``norm``, ...),
    so a typo gets the same clear message from the model, its config and the trainer's.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the h channels of each token, for an (N, h, H, W) tensor.

    ``nn.LayerNorm`` normalises the *last* dimensions; a token's features are in
    dimension 1 here, so we normalise over that one only:
    y[n,:,i,j] = (x[n,:,i,j] - mean) / sqrt(var + eps) * gamma + beta.
    Unlike BatchNorm it uses no batch statistics, so train and eval agree.
    """

    def __init__(self, h: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.bias = nn.Parameter(torch.zeros(h))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def make_norm(kind: str, h: int) -> nn.Module:
    """The norm after every activation: BatchNorm (the paper's) or channel LayerNorm."""
    check_choice("norm", kind, NORMS)
    return nn.BatchNorm2d(h) if kind == "batch" else ChannelLayerNorm(h)


def make_activation(kind: str) -> nn.Module:
    """The activation sigma after every convolution: GELU (the paper's) or ReLU (the
    official ConvMixer-768/32's)."""
    check_choice("activation", kind, ACTIVATIONS)
    return ACTIVATIONS[kind]()


class PatchEmbedding(nn.Module):
    """Cut the image into p x p patches and map each one linearly to h features.

    A convolution with kernel = stride = p sees every patch exactly once, so
    Conv(x)[:, i, j] = W vec(patch_ij) + b: the same linear patch embedding ViT
    uses, followed here by the activation and a norm.  An H x W image becomes a
    grid of (H/p) x (W/p) tokens.
    """

    def __init__(self, h: int, p: int, in_channels: int = 3, activation: str = "gelu",
                 norm: str = "batch"):
        super().__init__()
        self.p = p
        self.proj = nn.Conv2d(in_channels, h, kernel_size=p, stride=p)
        self.act = make_activation(activation)
        self.norm = make_norm(norm, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.proj(x)))


class SpatialMixing(nn.Module):
    """Depthwise k x k convolution: each channel mixes its own neighbourhood.

    ``groups=h`` gives every channel its own k x k filter, so the layer mixes
    information *across positions* but never across channels, with h k^2 + h
    parameters (a dense k x k convolution would need h^2 k^2 + h).  Padding
    (k - 1) / 2 keeps the token grid's size; it is symmetric only for odd k.
    """

    def __init__(self, h: int, k: int, activation: str = "gelu", norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(h, h, kernel_size=k, groups=h, padding=(k - 1) // 2)
        self.act = make_activation(activation)
        self.norm = make_norm(norm, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class ChannelMixing(nn.Module):
    """Pointwise (1 x 1) convolution: each token mixes its own h channels.

    A 1 x 1 convolution applies the same h x h matrix to every token,
    y[:, i, j] = W x[:, i, j] + b, i.e. one linear layer shared across positions
    (MLP-Mixer's channel MLP with one layer instead of two).
    """

    def __init__(self, h: int, activation: str = "gelu", norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(h, h, kernel_size=1)
        self.act = make_activation(activation)
        self.norm = make_norm(norm, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class ConvMixerLayer(nn.Module):
    """One ConvMixer layer: spatial mixing S, then channel mixing C.

    ``residual`` places the skip connection (z: the layer's input, out: its output)::

      "spatial"      z' = z + S(z);  out = C(z')       the paper's: a skip around S only
      "channel"      z' = S(z);      out = z' + C(z')  a skip around C only
      "two_skips"    z' = z + S(z);  out = z' + C(z')  a skip around each of S and C
      "whole_layer"  out = z + C(S(z))                 one skip around the whole layer
      "none"         out = C(S(z))                     no skip

    No placement adds parameters: a skip is a plain sum.
    """

    def __init__(self, h: int, k: int, activation: str = "gelu", norm: str = "batch",
                 residual: str = "spatial"):
        super().__init__()
        check_choice("residual", residual, RESIDUALS)
        self.residual = residual
        self.spatial = SpatialMixing(h, k, activation, norm)
        self.channel = ChannelMixing(h, activation, norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        S, C = self.spatial, self.channel
        if self.residual == "spatial":
            return C(z + S(z))
        if self.residual == "channel":
            z1 = S(z)
            return z1 + C(z1)
        if self.residual == "two_skips":
            z1 = z + S(z)
            return z1 + C(z1)
        if self.residual == "whole_layer":
            return z + C(S(z))
        return C(S(z))


def _field(default, help: str, **kw):
    """A setting, with the help text the command line shows for it."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class ConvMixerConfig:
    """Everything that fixes a ConvMixer's architecture, as plain data (in checkpoints).

    The one declaration of these settings: :class:`ConvMixer` takes them as keywords and
    :class:`convmixer.config.TrainConfig` inherits them, so the command line's ``--dim``
    ... ``--norm`` flags are these fields.
    """

    dim: int = _field(256, "width h")
    depth: int = _field(8, "depth d")
    kernel_size: int = _field(5, "depthwise kernel size k (odd)")
    patch_size: int = _field(2, "patch size p")
    n_classes: int = _field(10, "classes (10 for CIFAR-10; for --dataset imagefolder, "
                                "the folder's class count)")
    in_channels: int = _field(3, "image channels")
    activation: str = _field("gelu", "activation", choices=tuple(ACTIVATIONS))
    residual: str = _field("spatial", "residual placement", choices=RESIDUALS)
    norm: str = _field("batch", "normalization", choices=NORMS)

    def __post_init__(self):
        for name in ("dim", "depth", "kernel_size", "patch_size", "n_classes",
                     "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        k = self.kernel_size
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that 'same' padding is "
                             f"symmetric, got {k}; use {k - 1} or {k + 1}")
        for f in fields(ConvMixerConfig):
            if "choices" in f.metadata:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])

    def to_dict(self) -> dict:
        """The architecture fields only (also of a subclass such as ``TrainConfig``)."""
        return {f.name: getattr(self, f.name) for f in fields(ConvMixerConfig)}


class ConvMixer(nn.Module):
    """ConvMixer-h/d: patch embedding, d ConvMixer layers, average pool, linear head.

    >>> model = ConvMixer(dim=256, depth=8, kernel_size=5, patch_size=2)  # 256/8
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])

    The settings are :class:`ConvMixerConfig`'s fields, given by keyword (``dim``,
    ``depth``, ``kernel_size``, ``patch_size``, ``n_classes``, ``in_channels``,
    ``activation``, ``residual``, ``norm``); the config checks them.  Every layer is built
    on its own, so every layer gets its own random initial weights (copying one layer d
    times would start them all identical).
    """

    def __init__(self, **settings):
        super().__init__()
        self.config = c = ConvMixerConfig(**settings)
        h, k, p = c.dim, c.kernel_size, c.patch_size
        self.patch_embed = PatchEmbedding(h, p, c.in_channels, c.activation, c.norm)
        self.layers = nn.Sequential(*[
            ConvMixerLayer(h, k, c.activation, c.norm, c.residual) for _ in range(c.depth)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(h, c.n_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Reject inputs the network would mangle silently or fail on obscurely."""
        c, p, shape = self.config.in_channels, self.config.patch_size, tuple(x.shape)
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images shaped (N, {c}, H, W), "
                             f"got shape {shape}")
        if x.shape[1] != c:
            raise ValueError(f"expected {c} input channels (in_channels={c}), got "
                             f"{x.shape[1]} in shape {shape}; if the channels are last, "
                             f"permute with x.permute(0, 3, 1, 2)")
        if x.shape[2] < p or x.shape[3] < p:
            raise ValueError(f"the image ({x.shape[2]}x{x.shape[3]}) is smaller than one "
                             f"{p}x{p} patch (patch_size={p})")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The token grid after the last layer, (N, h, H/p, W/p)."""
        self.check_input(x)
        return self.layers(self.patch_embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def forward_intermediates(self, x: torch.Tensor):
        """``(logits, [z_0, z_1, ..., z_d])``: the output and every token grid on the way.

        z_0 is the patch embedding's output and z_l the output of layer l, each
        (N, h, H/p, W/p); ``logits`` equals ``self(x)`` and z_d ``self.features(x)``.
        Figures of the feature maps and the statistics at initialisation read the grids
        from here instead of walking the layers themselves (the name is timm's).  The
        grids keep their autograd history, so a caller can ``retain_grad()`` them to see
        the loss's gradient at every depth.
        """
        self.check_input(x)
        grids = [self.patch_embed(x)]
        for layer in self.layers:
            grids.append(layer(grids[-1]))
        return self.head(self.pool(grids[-1]).flatten(1)), grids


#: The paper's architectures, by timm's names.  ConvMixer-h/d; k and p as in the paper's
#: Table 1 and the official code (768/32 uses ReLU there); 256/8 is the official CIFAR-10
#: script's.  (Training recipes are another thing: ``convmixer.config.RECIPES``.)
ARCHITECTURES: dict[str, dict] = {
    "convmixer_256_8": dict(dim=256, depth=8, kernel_size=5, patch_size=2, n_classes=10),
    "convmixer_1536_20": dict(dim=1536, depth=20, kernel_size=9, patch_size=7,
                              n_classes=1000),
    "convmixer_768_32": dict(dim=768, depth=32, kernel_size=7, patch_size=7,
                             n_classes=1000, activation="relu"),
    "convmixer_1024_20_ks9_p14": dict(dim=1024, depth=20, kernel_size=9, patch_size=14,
                                      n_classes=1000),
}


def convmixer(name: str, **overrides) -> ConvMixer:
    """Build a named architecture, e.g. ``convmixer("convmixer_256_8")``; keyword
    overrides change single fields."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; "
                         f"choose one of {sorted(ARCHITECTURES)}")
    return ConvMixer(**{**ARCHITECTURES[name], **overrides})
