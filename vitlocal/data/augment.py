"""Training augmentation as batched tensor operations on the training device (no torchvision).

DeiT's recipe (timm's ``create_transform`` + ``Mixup`` + ``RandomErasing``), in its order:

    random resized crop (area in [0.08, 1], aspect in [3/4, 4/3]) -> horizontal flip (p = 0.5)
    -> RandAugment ``rand-m9-mstd0.5-inc1`` (or colour jitter 0.4 when RandAugment is off: quirk, timm
       only applies colour jitter without an auto-augment policy) -> normalise -> random erasing
       (p = 0.25, per-pixel N(0, 1) noise) -> mixup (alpha 0.8) or cutmix (alpha 1.0), one switch per batch
    targets: y~ = lam * smooth(y) + (1 - lam) * smooth(y.flip(0)),  smooth(y) = (1 - eps) onehot(y) + eps / K

Every random choice is made per image (per batch for mixup/cutmix, as timm's ``mode="batch"``) from
an explicit ``torch.Generator`` (and a ``random.Random`` for the batch-level draws), so a run is
reproducible from its seed. Images stay uint8-valued floats in [0, 255] until `normalize`; the
RandAugment operations round and clip like PIL's 8-bit ones, so each matches ``PIL.ImageOps`` /
``ImageEnhance`` (tested). Geometric operations are one bilinear ``F.grid_sample`` (timm: bicubic).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augment",
    "crop_boxes",
    "resized_crop",
    "random_resized_crop",
    "hflip",
    "RANDAUGMENT_OPS",
    "ENHANCE_OPS",
    "enhance",
    "apply_op",
    "rand_augment",
    "color_jitter",
    "normalize",
    "random_erasing",
    "smooth_one_hot",
    "mixup_cutmix",
    "soft_cross_entropy",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Training augmentation settings; the defaults are DeiT's (timm 0.3.2 as used by its ``main.py``)."""

    crop_scale: tuple[float, float] | None = (0.08, 1.0)  # random resized crop area range; None: no crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    randaugment: tuple[int, float, float] | None = (2, 9.0, 0.5)  # rand-m9-mstd0.5-inc1: layers, m, std
    color_jitter: float = 0.4  # brightness / contrast / saturation strength; only without RandAugment
    mixup: float = 0.8  # Beta(alpha, alpha); 0: off
    cutmix: float = 1.0
    switch_prob: float = 0.5  # P(cutmix) when both are on
    erase: float = 0.25  # probability of random erasing per image
    smoothing: float = 0.1  # label smoothing eps


# ---------------------------------------------------------------- random resized crop and flip
def crop_boxes(
    height: int,
    width: int,
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` random-resized-crop boxes ``(n, 4)`` as (top, left, h, w), torchvision's algorithm vectorised.

    Ten tries per image draw an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``;
    the first box that fits is used, else a centre crop clamped to ``ratio``.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    tries = 10
    area = height * width * torch.empty(n, tries, device=device).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    w = torch.sqrt(area * torch.exp(log_r)).round()
    h = torch.sqrt(area / torch.exp(log_r)).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(1, keepdim=True)  # index of the first fitting try (0 if none fits)
    h, w, any_fit = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], fits.any(1)
    # fallback: the whole image, cut to the nearest allowed aspect ratio
    in_ratio = width / height
    fh, fw = float(height), float(width)
    if in_ratio < ratio[0]:
        fh = float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw = float(round(height * ratio[1]))
    h = torch.where(any_fit, h, fh)
    w = torch.where(any_fit, w, fw)
    u = torch.rand(n, 2, device=device, generator=generator)
    top = torch.where(any_fit, (u[:, 0] * (height - h + 1)).floor(), (height - h) // 2)
    left = torch.where(any_fit, (u[:, 1] * (width - w + 1)).floor(), (width - w) // 2)
    return torch.stack([top, left, h, w], 1).long()


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` ``(B, 4)`` (top, left, h, w) out of ``x`` ``(B, C, H, W)`` and resize to ``size``, bilinear.

    Equals ``F.interpolate(x[b, :, top:top+h, left:left+w], size, mode="bilinear")`` for every image
    (one ``grid_sample`` for the batch): output pixel i samples source row ``top + (i + 0.5) h / size - 0.5``,
    clamped to the box as ``interpolate`` clamps to the cropped image.
    """
    _, _, height, width = x.shape
    top, left, h, w = boxes.to(x.device, x.dtype).unbind(1)
    steps = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) / size  # (size,) in (0, 1)

    def axis(start: torch.Tensor, extent: torch.Tensor, full: int) -> torch.Tensor:
        src = start[:, None] + (steps[None] * extent[:, None] - 0.5).clamp(min=0)  # pixel index
        src = torch.minimum(src, (start + extent - 1)[:, None])
        return (2 * src + 1) / full - 1  # align_corners=False coordinates, (B, size)

    ys, xs = axis(top, h, height), axis(left, w, width)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # (B, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random resized crop per image: ``(B, C, H, W) -> (B, C, size, size)``."""
    return resized_crop(x, crop_boxes(x.shape[-2], x.shape[-1], x.shape[0], scale, ratio, generator), size)


def hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of ``x`` ``(B, C, H, W)`` left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------- RandAugment (timm rand-m9-mstd0.5-inc1)
# quirk: timm's "increasing" op list (``_RAND_INCREASING_TRANSFORMS``): 15 ops, stronger as m grows
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, made once: a copy from host memory to a GPU waits for the GPU to
    finish its queued work, which once per op and step would keep the host from running ahead."""
    return torch.tensor(values, device=device, dtype=dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's 8-bit luma ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    weights = _constant((19595.0, 38470.0, 7471.0), x.device, x.dtype).view(1, 3, 1, 1)
    return torch.floor(((x * weights).sum(1, keepdim=True) + 32768) / 65536)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, x, factor)``: ``degenerate + factor (x - degenerate)``, clipped and truncated."""
    return torch.floor((degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 255))


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize`` per image and channel (histogram equalisation with PIL's rounding)."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    last = hist.gather(1, flat.amax(1, keepdim=True))  # count of the brightest value present
    step = torch.div(h * w - last, 255, rounding_mode="floor")  # (b c, 1)
    before = hist.cumsum(1) - hist  # pixels darker than each value
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1), rounding_mode="floor")
    lut = torch.where(step > 0, lut.clamp(max=255), torch.arange(256, device=x.device, dtype=torch.float))
    return lut.gather(1, flat).to(x.dtype).view(b, c, h, w)


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.transform(AFFINE, (a, b, c, d, e, f))`` per image: output pixel centre (x, y) reads the input
    at ``(a x + b y + c, d x + e y + f)``; ``matrix`` ``(B, 2, 3)``; outside pixels get ``fill``."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype) + 0.5,
        torch.arange(w, device=x.device, dtype=x.dtype) + 0.5,
        indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3)  # (1, HW, 3) pixel centres
    source = points @ matrix.transpose(1, 2)  # (B, HW, 2) in pixels
    grid = (2 * source / _constant((w, h), x.device, x.dtype) - 1).view(-1, h, w, 2)
    fill = fill.view(1, -1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _geometric(name: str, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The 2 x 3 PIL affine matrices ``(B, 2, 3)`` of the geometric ops for the signed values ``(B,)``."""
    b, (h, w) = x.shape[0], x.shape[-2:]
    m = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    m[:, 0, 0] = m[:, 1, 1] = 1
    if name == "ShearX":
        m[:, 0, 1] = value  # x_in = x + v y: shear about the top-left corner, as PIL
    elif name == "ShearY":
        m[:, 1, 0] = value
    elif name == "TranslateX":
        m[:, 0, 2] = value * w  # quirk: timm's TranslateXRel, a fraction of the width
    elif name == "TranslateY":
        m[:, 1, 2] = value * h
    else:  # Rotate by `value` degrees counter-clockwise about the centre, as PIL's Image.rotate
        a = -torch.deg2rad(value)
        cos, sin, cx, cy = torch.cos(a), torch.sin(a), w / 2, h / 2
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
        m[:, 0, 2] = cx - cos * cx - sin * cy
        m[:, 1, 2] = cy + sin * cx - cos * cy
    return m


ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")


def enhance(name: str, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.<name>(image).enhance(factor)`` per image: blend ``x`` ``(B, 3, H, W)`` in [0, 255]
    with a degenerate image by ``factor`` ``(B,)`` (1: unchanged, 0: the degenerate image)."""
    if name == "Color":  # saturation: blend with the grey image
        degenerate = _gray(x).expand_as(x)
    elif name == "Contrast":  # blend with the mean grey level, rounded
        degenerate = torch.floor(_gray(x).mean((1, 2, 3), keepdim=True) + 0.5).expand_as(x)
    elif name == "Brightness":  # blend with black
        degenerate = torch.zeros_like(x)
    elif name == "Sharpness":  # blend with ImageFilter.SMOOTH: 3 x 3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
        kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
        kernel[1, 1] = 5
        kernel = (kernel / 13).expand(3, 1, 3, 3)
        degenerate = x.clone()  # PIL keeps the border pixels
        degenerate[..., 1:-1, 1:-1] = torch.floor(F.conv2d(x, kernel, groups=3) + 0.5).clamp(0, 255)
    else:
        raise ValueError(f"unknown enhancement {name!r}; use one of {ENHANCE_OPS}")
    return _blend(degenerate, x, factor)


def apply_op(name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """One RandAugment op on ``x`` ``(B, 3, H, W)`` in [0, 255] with per-image ``level`` = m / 10 in [0, 1] and
    ``sign`` in {-1, 1} ``(B,)``; ``fill`` ``(3,)`` colours pixels that geometric ops bring in."""
    v = level.view(-1, 1, 1, 1)
    if name == "AutoContrast":  # PIL: per channel, stretch [lo, hi] to [0, 255], int() truncates
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        scale = 255 / (hi - lo).clamp(min=1)
        return torch.where(hi > lo, torch.floor(x * scale - lo * scale).clamp(0, 255), x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return 255 - x
    if name == "Posterize":  # quirk (inc1): keep 4 - int(4 m / 10) bits
        drop = 2.0 ** (4 + torch.floor(4 * v))
        return torch.floor(x / drop) * drop
    if name == "Solarize":  # invert pixels >= 256 - int(256 m / 10)
        return torch.where(x >= 256 - torch.floor(256 * v), 255 - x, x)
    if name == "SolarizeAdd":  # add int(110 m / 10) to pixels below 128
        return torch.where(x < 128, (x + torch.floor(110 * v)).clamp(max=255), x)
    if name in ENHANCE_OPS:  # quirk (inc1): factor 1 +- 0.9 m / 10
        return enhance(name, x, 1 + sign * level * 0.9)
    if name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        value = sign * level * {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3}.get(name, 0.45)
        return _affine(x, _geometric(name, x, value), fill).round().clamp(0, 255)
    raise ValueError(f"unknown RandAugment op {name!r}; ops: {RANDAUGMENT_OPS}")


def rand_augment(
    x: torch.Tensor,
    layers: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    generator: torch.Generator | None = None,
    fill: tuple[float, ...] = tuple(round(255 * m) for m in IMAGENET_MEAN),
) -> torch.Tensor:
    """timm's RandAugment on ``x`` ``(B, 3, H, W)`` in [0, 255]: ``layers`` times per image, pick one of the 15
    ops uniformly, apply it with probability 0.5 at magnitude ``m ~ N(magnitude, magnitude_std)`` clipped
    to [0, 10], with a random sign for the signed ops. Fill colour: the ImageNet mean (timm's ``img_mean``).

    Branch-free: every op runs on the whole batch and ``torch.where`` keeps it for the images that drew it, so a
    batch on a GPU never waits for the host (no data-dependent indexing, no synchronisation).
    """
    b, device = x.shape[0], x.device
    fill_t = _constant(tuple(fill), device, x.dtype)
    for _ in range(layers):
        op = torch.randint(len(RANDAUGMENT_OPS), (b,), device=device, generator=generator)
        apply = torch.rand(b, device=device, generator=generator) < 0.5
        level = (magnitude + magnitude_std * torch.randn(b, device=device, generator=generator)).clamp(0, 10) / 10
        sign = torch.where(torch.rand(b, device=device, generator=generator) > 0.5, -1.0, 1.0)
        for k, name in enumerate(RANDAUGMENT_OPS):
            chosen = (apply & (op == k)).view(-1, 1, 1, 1)
            x = torch.where(chosen, apply_op(name, x, level, sign, fill_t), x)
    return x


def color_jitter(x: torch.Tensor, strength: float = 0.4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation, each scaled by a factor in [1 - s, 1 + s] per image.

    torchvision's ``ColorJitter(s, s, s)`` applies the three in a random order per image; here the order is fixed.
    """
    for name in ("Brightness", "Contrast", "Color"):
        factor = 1 + strength * (2 * torch.rand(x.shape[0], device=x.device, generator=generator) - 1)
        x = enhance(name, x, factor)
    return x


# ---------------------------------------------------------------- normalise, erase, mix
def normalize(x: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
    """``(x / 255 - mean) / std`` per channel: ``(B, 3, H, W)`` in [0, 255] -> float."""
    mean_t = _constant(tuple(mean), x.device, torch.get_default_dtype()).view(1, -1, 1, 1)
    std_t = _constant(tuple(std), x.device, torch.get_default_dtype()).view(1, -1, 1, 1)
    return (x.float() / 255 - mean_t) / std_t


def random_erasing(x: torch.Tensor, p: float = 0.25, generator: torch.Generator | None = None) -> torch.Tensor:
    """timm's ``RandomErasing(p, mode="pixel", max_count=1)`` on normalised ``x`` ``(B, C, H, W)``.

    With probability ``p`` per image, a box of area fraction in [0.02, 1/3] and log-uniform aspect in
    [0.3, 1/0.3] (ten tries to fit) is replaced by per-pixel N(0, 1) noise.
    """
    b, _, h, w = x.shape
    device = x.device
    area = h * w * torch.empty(b, 10, device=device).uniform_(0.02, 1 / 3, generator=generator)
    log_r = torch.empty(b, 10, device=device).uniform_(math.log(0.3), math.log(1 / 0.3), generator=generator)
    eh, ew = torch.sqrt(area * torch.exp(log_r)).round(), torch.sqrt(area / torch.exp(log_r)).round()
    fits = (eh < h) & (ew < w)
    first = fits.float().argmax(1, keepdim=True)
    eh, ew = eh.gather(1, first), ew.gather(1, first)  # (b, 1)
    u = torch.rand(b, 2, device=device, generator=generator)
    top, left = (u[:, :1] * (h - eh + 1)).floor(), (u[:, 1:] * (w - ew + 1)).floor()
    do = (torch.rand(b, 1, device=device, generator=generator) < p) & fits.any(1, keepdim=True)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = (
        (rows >= top[:, :, None])
        & (rows < (top + eh)[:, :, None])
        & (cols >= left[:, :, None])
        & (cols < (left + ew)[:, :, None])
    )
    mask = (inside & do[:, :, None])[:, None]  # (b, 1, h, w)
    noise = torch.randn(x.shape, device=device, generator=generator, dtype=x.dtype)
    return torch.where(mask, noise, x)


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``(B,)`` labels -> ``(B, K)`` targets ``(1 - eps) onehot(y) + eps / K``."""
    return F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes


def mixup_cutmix(
    x: torch.Tensor,
    targets: torch.Tensor,
    mixup: float,
    cutmix: float,
    switch_prob: float,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """timm's ``Mixup(mode="batch")``: one draw for the whole batch, the batch mixed with its reverse.

    mixup:  ``x~ = lam x + (1 - lam) x.flip(0)``, ``lam ~ Beta(mixup, mixup)``
    cutmix: a box of area ``(1 - lam) H W`` (random centre, clipped at the border) pasted from ``x.flip(0)``;
            lam is then corrected to the box's true area.
    ``targets`` ``(B, K)`` mix with the same ``lam``. Returns ``(x~, targets~, lam)``.
    """
    if mixup <= 0 and cutmix <= 0:
        return x, targets, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < switch_prob)
    alpha = cutmix if use_cutmix else mixup
    lam = rng.betavariate(alpha, alpha)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = rng.randrange(h), rng.randrange(w)
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x.flip(0)
    return x, lam * targets + (1 - lam) * targets.flip(0), lam


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k log softmax(logits)_k``; ``(B, K), (B, K) -> ()``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
