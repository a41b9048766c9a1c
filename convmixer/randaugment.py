"""RandAugment for whole batches: each image draws its own ops, the batch costs a few kernels.

The official script applies ``torchvision.transforms.RandAugment`` to one PIL
image at a time in DataLoader worker processes.  Here a float batch (N, 3, H, W)
in [0, 1] stays on its device: in each of the ``n`` rounds every image draws one
of the 14 ops (and a sign), and the round is computed for the whole batch at
once.  All five geometric ops become one inverse affine matrix per image
(the identity for images whose op is not geometric) and one ``grid_sample``;
the colour ops are computed for the whole batch and each image keeps its own
with ``torch.where``.  Nothing waits for the device (no ``.item()``, no boolean
indexing, no loop over images), and all randomness comes from one generator.
That is the GPU path.  On a CPU, where waiting costs nothing and arithmetic is
scarce, the batch is sorted by op instead and each op runs on its own images
only (:func:`apply_sorted`); the two paths give bit-identical results.

The ops, their magnitudes and their arithmetic follow torchvision's
``RandAugment`` (``num_magnitude_bins=31``, so m in 0..30; nearest
interpolation; fill 0) and its tensor functionals.  With magnitude v (negated
for a signed op with probability 1/2), an image x and its grey level
Y = 0.2989 R + 0.587 G + 0.114 B::

    Identity      x
    ShearX/Y      x_in = x_out + v * (y_out + H/2)    (resp. y_in = y_out + v * (x_out + W/2)),
                  v <= 0.3, pixel coordinates centred on the image, so rows are
                  sheared about the top-left corner as torchvision does
    TranslateX/Y  shift by int(v) pixels, |v| <= 150/331 of the width (resp. height)
    Rotate        by v degrees about the centre, |v| <= 30
    Brightness    (1 + v) x                           |v| <= 0.9, then clamp to [0, 1]
    Color         (1 + v) x - v Y                     blend with the grey image
    Contrast      (1 + v) x - v mean(Y)               blend with the mean grey level
    Sharpness     (1 + v) x - v blur(x)               blur: 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13,
                                                      border pixels kept
    Posterize     keep the top b bits of the 8-bit value, b = 8 ... 4
    Solarize      1 - x where 255 x >= t, t = 255 ... 0
    AutoContrast  stretch each channel from [min, max] to [0, 1]
    Equalize      map each channel's 8-bit values through its cumulative histogram

Computation is in float32 (the result has the input's dtype).  Posterize and
Equalize are defined on 8-bit values; they read round(255 x).  The other colour
ops act on the float values directly, as torchvision's float functionals do;
on uint8 images torchvision also truncates to 8 bits after each op, which
moves a pixel by less than 1/255.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
(IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS,
 COLOR, CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE) = range(len(OPS))
NUM_BINS = 31


def magnitudes(m: int, height: int, width: int) -> dict[str, float]:
    """The magnitude of each op at level m (0..30), as torchvision's ``_augmentation_space``.

    The same ``torch.linspace`` tables, so the float32 rounding of each value is
    torchvision's too.  Signs are applied later, per image.
    """
    return dict(_magnitudes(m, height, width))  # a copy: the cached table stays as it is


@functools.lru_cache(maxsize=None)
def _magnitudes(m: int, height: int, width: int) -> dict[str, float]:
    if not 0 <= m < NUM_BINS:
        raise ValueError(f"magnitude m must be in [0, {NUM_BINS - 1}], got {m}")

    def level(low: float, high: float) -> float:
        return float(torch.linspace(low, high, NUM_BINS)[m])

    return {
        "ShearX": level(0.0, 0.3), "ShearY": level(0.0, 0.3),
        "TranslateX": level(0.0, 150.0 / 331.0 * width),
        "TranslateY": level(0.0, 150.0 / 331.0 * height),
        "Rotate": level(0.0, 30.0),
        "Brightness": level(0.0, 0.9), "Color": level(0.0, 0.9),
        "Contrast": level(0.0, 0.9), "Sharpness": level(0.0, 0.9),
        "Posterize": 8 - round(m / ((NUM_BINS - 1) / 4)),
        "Solarize": level(255.0, 0.0),
    }


# ---- geometric ops: one inverse affine matrix per image, one grid_sample ----

def affine_matrices(op: torch.Tensor, sign: torch.Tensor, mag: dict[str, float],
                    height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) inverse affine maps, output -> input pixel, in centred pixel coordinates.

    These are the matrices torchvision's ``_get_inverse_affine_matrix`` builds for
    each geometric op of RandAugment; every other op gets the identity.
    """
    one, zero = torch.ones_like(sign), torch.zeros_like(sign)
    shear_x, shear_y = sign * mag["ShearX"], sign * mag["ShearY"]
    # int() of the signed magnitude truncates towards zero, so the sign factors out
    tx, ty = sign * int(mag["TranslateX"]), sign * int(mag["TranslateY"])
    angle = math.radians(mag["Rotate"])
    cos, sin = one * math.cos(angle), sign * math.sin(angle)
    rows = {  # (a, b, c, d, e, f): x_in = a x + b y + c, y_in = d x + e y + f
        SHEAR_X: (one, shear_x, shear_x * (height / 2), zero, one, zero),  # centre = top-left corner
        SHEAR_Y: (one, zero, zero, shear_y, one, shear_y * (width / 2)),
        TRANSLATE_X: (one, zero, -tx, zero, one, zero),
        TRANSLATE_Y: (one, zero, zero, zero, one, -ty),
        ROTATE: (cos, -sin, zero, sin, cos, zero),
    }
    theta = torch.stack((one, zero, zero, zero, one, zero), dim=-1)
    for k, entries in rows.items():
        theta = torch.where((op == k)[:, None], torch.stack(entries, dim=-1), theta)
    return theta.view(-1, 2, 3)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its own ``theta`` (nearest pixel, zeros outside).

    The sampling grid is the one torchvision's ``_gen_affine_grid`` builds (pixel
    centres, then theta divided by the half-size), so that the nearest-pixel choices
    agree with it even at half-pixel ties, which shears produce.  torchvision gets it
    as one batched matrix product, (H W, 3) by (3, 2) per image; we write out the
    same sums, x a + y b + c, in the same order: the same floats, without a few
    hundred tiny matrix products (4x faster on a CPU).
    """
    n, _, h, w = x.shape
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=x.device)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=x.device)
    gy, gx = (g.reshape(1, h * w) for g in torch.meshgrid(ys, xs, indexing="ij"))
    scaled = torch.stack((theta[:, 0] / (0.5 * w), theta[:, 1] / (0.5 * h)), dim=-1)  # (n, 3, 2)
    coords = [gx * scaled[:, 0, i, None] + gy * scaled[:, 1, i, None] + scaled[:, 2, i, None] for i in (0, 1)]
    grid = torch.stack(coords, dim=-1).view(n, h, w, 2)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


# ---- colour ops: x is float (N, 3, H, W) in [0, 1]; v, the signed magnitude, is (N, 1, 1, 1) ----

def _blend(x: torch.Tensor, other: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(1 + v) x - v other, clamped: torchvision's ``_blend`` with ratio 1 + v."""
    return ((1.0 + v) * x - v * other).clamp(0, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of each pixel, (N, 1, H, W), with torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def brightness(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((1.0 + v) * x).clamp(0, 1)  # a blend with black


def color(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _blend(x, grey(x), v)


def contrast(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True), v)


def sharpness(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x
    # kernel [1 1 1; 1 5 1; 1 1 1] / 13 = (3x3 box sum + 4 centre) / 13; the box sum as sums of
    # shifted views, rows then columns, because a depthwise conv2d is several times slower on the CPU
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]) / 13
    return _blend(x, blurred, v)


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero the low 8 - bits bits of each 8-bit value: v & ~(2^(8 - bits) - 1)."""
    step = 2 ** (8 - bits)
    return torch.floor(torch.round(x * 255) / step) * (step / 255)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (on the 0..255 scale)."""
    return torch.where(x >= threshold / 255, 1.0 - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, 1]; a constant channel is left as it is."""
    low = x.amin(dim=(2, 3), keepdim=True)
    scale = 1.0 / (x.amax(dim=(2, 3), keepdim=True) - low)
    flat = ~torch.isfinite(scale)
    low, scale = torch.where(flat, 0.0, low), torch.where(flat, 1.0, scale)
    return ((x - low) * scale).clamp(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image, as torchvision's ``_scale_channel``.

    With the 256-bin histogram h of the 8-bit values v and
    step = floor((#pixels - h[max v]) / 255), the new value of v is
    floor((sum_{u < v} h[u] + floor(step / 2)) / step), clamped to 255;
    a channel with step = 0 (almost constant) is left as it is.
    """
    n, c, h, w = x.shape
    v = torch.round(x * 255).clamp_(0, 255).view(n, c, h * w)
    index = v.long()
    # Counts and the table are whole numbers below 2^24, which float32 holds exactly, and for
    # such a, b the float quotient a / b floors to the integer quotient: the same table as
    # torchvision's integer arithmetic, at about half the cost on a CPU.
    hist = torch.zeros(n, c, 256, dtype=x.dtype, device=x.device).scatter_add_(2, index, torch.ones_like(v))
    step = torch.floor((h * w - hist.gather(2, v.amax(dim=2, keepdim=True).long())) / 255)
    lut = torch.floor((hist.cumsum(2) + torch.floor(step / 2)) / step.clamp(min=1))
    lut = F.pad(lut, (1, 0))[..., :-1].clamp_(0, 255)  # shift: v maps through the counts below v
    out = (lut.gather(2, index) / 255).view(n, c, h, w)
    return torch.where((step == 0).view(n, c, 1, 1), x, out)


# ---- one round for the whole batch ----

_BLENDS = {BRIGHTNESS: ("Brightness", brightness), COLOR: ("Color", color),
           CONTRAST: ("Contrast", contrast), SHARPNESS: ("Sharpness", sharpness)}


def _colour_op(k: int, x: torch.Tensor, sign: torch.Tensor, mag: dict) -> torch.Tensor:
    """Colour op ``k`` (BRIGHTNESS ... EQUALIZE) on the images ``x``, with their signs."""
    if k in _BLENDS:
        name, blend = _BLENDS[k]
        return blend(x, (sign * mag[name]).view(-1, 1, 1, 1))
    if k == POSTERIZE:
        return posterize(x, int(mag["Posterize"]))
    if k == SOLARIZE:
        return solarize(x, mag["Solarize"])
    if k == AUTOCONTRAST:
        return autocontrast(x)
    return equalize(x)


def apply_ops(x: torch.Tensor, op: torch.Tensor, sign: torch.Tensor, m: int,
              grouped: bool | None = None) -> torch.Tensor:
    """Apply op ``op[i]`` (an index into ``OPS``) with sign ``sign[i]`` (+1 or -1) to image i.

    x is float32 (N, 3, H, W) in [0, 1]; op is an integer (N,) tensor, sign a float
    (N,) tensor, both on x's device; m is the magnitude level, 0..30.  The sign
    only matters for the signed ops (shears, translations, rotation and the four
    blends).  This is one round of :func:`rand_augment`, with the draws given.

    Two ways to the same result.  On a GPU (``grouped=False``) every colour op runs on the
    whole batch and each image keeps its own with ``torch.where``: more arithmetic, but no
    host synchronisation, and the GPU has arithmetic to spare.  On a CPU (``grouped=True``,
    the default there) nothing can overlap with a synchronisation, so the batch is sorted by
    op and each op runs on its own images alone (:func:`apply_sorted`): 3x to 5x faster on
    two cores.
    """
    if grouped is None:
        grouped = x.device.type == "cpu"
    if grouped:
        order = torch.argsort(op, stable=True)
        xs = apply_sorted(x.index_select(0, order), op[order], sign[order], m)
        return xs.index_select(0, torch.argsort(order))  # the inverse permutation puts each image back
    _, _, h, w = x.shape
    mag = magnitudes(m, h, w)
    x = warp(x, affine_matrices(op, sign, mag, h, w))  # the identity for all but geometric ops
    for k in range(BRIGHTNESS, len(OPS)):  # an image's pixels change under its own op only
        x = torch.where((op == k).view(-1, 1, 1, 1), _colour_op(k, x, sign, mag), x)
    return x


def apply_sorted(xs: torch.Tensor, op: torch.Tensor, sign: torch.Tensor, m: int) -> torch.Tensor:
    """:func:`apply_ops` for a batch whose ``op`` is sorted in ascending order; works in place on ``xs``.

    Each op's images are then one contiguous slice, which the op reads and overwrites: no
    gather or scatter per op.  The five geometric ops are adjacent in ``OPS``, so one
    ``grid_sample`` serves them all.
    """
    _, _, h, w = xs.shape
    mag = magnitudes(m, h, w)
    ends = torch.bincount(op, minlength=len(OPS)).cumsum(0).tolist()  # the one host synchronisation
    starts = [0] + ends[:-1]
    a, b = starts[SHEAR_X], ends[ROTATE]
    if b > a:
        xs[a:b] = warp(xs[a:b], affine_matrices(op[a:b], sign[a:b], mag, h, w))
    for k in range(BRIGHTNESS, len(OPS)):
        a, b = starts[k], ends[k]
        if b > a:
            xs[a:b] = _colour_op(k, xs[a:b], sign[a:b], mag)
    return xs


def draw_ops(n_images: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of draws: an op index uniform over the 14 ops and a sign of +-1, per image."""
    op = torch.randint(len(OPS), (n_images,), device=device, generator=g)
    sign = torch.randint(2, (n_images,), device=device, generator=g).float() * 2 - 1
    return op, sign


def rand_augment(x: torch.Tensor, n: int, m: int, g: torch.Generator, grouped: bool | None = None) -> torch.Tensor:
    """RandAugment(num_ops=n, magnitude=m) with each image of the batch drawing its own ops.

    x: float (N, 3, H, W) in [0, 1] on any device; g: a generator on that device.
    Returns a tensor of the same shape and dtype, still in [0, 1].  ``grouped`` picks
    the path of :func:`apply_ops` (by default the sorted one on a CPU).  On that path
    the images stay sorted between rounds: round r + 1 sorts the batch as round r left
    it, so n rounds cost n + 1 reorderings of the batch instead of 2 n.
    """
    if n < 0 or not 0 <= m < NUM_BINS:
        raise ValueError(f"need n >= 0 and m in [0, {NUM_BINS - 1}], got n={n}, m={m}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch of RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
    if grouped is None:
        grouped = x.device.type == "cpu"
    y = x.float()
    if not grouped:
        for _ in range(n):
            op, sign = draw_ops(len(y), g, y.device)
            y = apply_ops(y, op, sign, m, grouped=False)
        return y.to(x.dtype)
    if n == 0:
        return y.to(x.dtype)
    image = torch.arange(len(y), device=y.device)  # y[j] holds image image[j]
    for _ in range(n):
        op, sign = draw_ops(len(y), g, y.device)  # image i's draws are op[i], sign[i]
        order = torch.argsort(op[image], stable=True)
        image = image[order]
        y = apply_sorted(y.index_select(0, order), op[image], sign[image], m)
    return y.index_select(0, torch.argsort(image)).to(x.dtype)
