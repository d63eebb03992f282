"""Synthetic images where locality decides: each class is a small shape, stamped at random positions.

The embedded default data set: generated from a seed (no download, the same pixels on every
machine), small enough for a CPU, and built so that *only local structure* carries the class:

    class c  <->  a k x k binary motif M_c (k ~ S/6; left-right symmetric, so a flip keeps the class;
                  the same number of "on" pixels for every class, so the amount of ink says nothing)
    image    =    grey noise N(128, 24^2) per pixel and channel
               +  `copies` stamps of M_c, each at a uniformly random pixel position (not aligned to any
                  patch grid, often straddling patch borders) in a random saturated colour

Mean colour, ink and position carry no label information: a model has to recognise a k x k shape
wherever it lands. A depthwise convolution on the token lattice (LocalViT) sees neighbouring patches
together from the first step; a plain ViT, which starts out close to a linear function of the mean
patch (DeiT's 0.02-std initialisation), has no global cue to start from and stays near chance for hundreds
of steps (measured on CPU: ``deit_nano`` at 10% after 375 steps of 64 images, ``localvit_nano`` at 81% after 125).
"""

from __future__ import annotations

import torch

from vitlocal.data.sources import ImageTensors

__all__ = ["motifs", "class_motifs", "synthetic_images"]

SPLIT_SEEDS = {"train": 1, "val": 2}


def motifs(count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random left-right symmetric ``k x k`` binary motifs ``(count, k, k)``, all with the same ink.

    The left ``k // 2`` columns get ``k`` on-cells (mirrored into the right half) and the centre column
    gets ``k // 2``, so every motif has ``2k + k // 2`` on-pixels. Motifs may repeat.
    """
    half = k // 2

    def exactly(on: int, cells: int) -> torch.Tensor:  # (count, cells) with exactly `on` random cells set
        return torch.rand(count, cells, generator=generator).argsort(1).argsort(1) < on

    left = exactly(k, k * half).view(count, k, half)
    centre = exactly(half, k).view(count, k, 1)
    return torch.cat([left, centre, left.flip(2)], dim=2)


def class_motifs(num_classes: int, k: int, seed: int) -> torch.Tensor:
    """``num_classes`` *distinct* motifs ``(num_classes, k, k)``, a function of ``seed`` only."""
    g = torch.Generator().manual_seed(seed)
    while True:
        drawn = motifs(num_classes, k, g)
        if len(torch.unique(drawn.flatten(1), dim=0)) == num_classes:
            return drawn


def _stamp(canvas: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> None:
    """Stamp one ``(n, k, k)`` motif per image into ``canvas`` ``(n, S, S, 3)`` at a random position and colour."""
    n, size, k = canvas.shape[0], canvas.shape[1], masks.shape[-1]
    top = torch.randint(0, size - k + 1, (n, 1, 1), generator=generator)
    left = torch.randint(0, size - k + 1, (n, 1, 1), generator=generator)
    rows = top + torch.arange(k).view(1, k, 1)  # (n, k, 1)
    cols = left + torch.arange(k).view(1, 1, k)  # (n, 1, k)
    batch = torch.arange(n).view(n, 1, 1)
    # a saturated colour: each channel dark or bright
    colour = torch.where(torch.rand(n, 3, generator=generator) < 0.5, 30.0, 225.0).view(n, 1, 1, 3)
    patch = canvas[batch, rows, cols]  # (n, k, k, 3)
    canvas[batch, rows, cols] = torch.where(masks[..., None], colour, patch)


def synthetic_images(
    n: int,
    img_size: int = 32,
    num_classes: int = 10,
    split: str = "train",
    seed: int = 0,
    copies: int = 3,
    motif_size: int | None = None,
) -> ImageTensors:
    """``n`` motif images of ``img_size`` px: ``images`` ``(n, 3, S, S)`` uint8, balanced ``labels`` ``(n,)``.

    The class motifs (side ``motif_size``, default about S / 6, odd, at least 5) depend on ``seed`` only;
    the images also on ``split`` ("train" or "val"), so the splits share classes but no images.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split={split!r} must be one of {list(SPLIT_SEEDS)}")
    if img_size < 16 or not 2 <= num_classes <= 100:
        raise ValueError(f"synthetic images need img_size >= 16 and 2..100 classes, got {img_size} and {num_classes}")
    k = motif_size or max(5, img_size // 6) | 1
    shapes = class_motifs(num_classes, k, seed)
    g = torch.Generator().manual_seed(seed * 1000 + SPLIT_SEEDS[split])
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    canvas = (128 + 24 * torch.randn(n, img_size, img_size, 3, generator=g)).clamp(0, 255)
    for _ in range(copies):
        _stamp(canvas, shapes[labels], g)
    images = canvas.round().to(torch.uint8).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, labels, [f"motif{c}" for c in range(num_classes)])
