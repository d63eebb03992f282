"""Training recipes: each paper's optimisation and augmentation settings as one named, frozen preset.

    peak lr = base_lr x global batch / 512 (the DeiT rule every paper but CvT states this way; see `RECIPES`),
    linear warm-up from warmup_lr over warmup_epochs, cosine down to min_lr, AdamW with weight_decay,
    drop path, optional gradient clipping and EMA, and the `Augment` settings of the training images.

``vitlocal train --recipe NAME --set KEY=VALUE`` picks a preset and changes any field (`with_overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from vitlocal.data import Augment

__all__ = ["Recipe", "RECIPES", "default_recipe", "with_overrides", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """The optimisation and augmentation settings of one paper (defaults: DeiT's ``main.py``)."""

    base_lr: float = 5e-4  # peak LR per 512 images
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    scale_schedule_lr: bool = False  # Swin-style trainers scale warmup_lr and min_lr by batch / 512 too
    drop_path: float = 0.1
    clip_grad: float | None = None  # max global gradient norm
    ema_decay: float | None = None  # per optimizer step
    crop_pct: float = 0.875  # eval: resize to S / crop_pct, centre-crop S
    augment: Augment = field(default_factory=Augment)


_SWIN_STYLE = dict(warmup_epochs=20.0, warmup_lr=5e-7, min_lr=5e-6, scale_schedule_lr=True, clip_grad=5.0)
RECIPES: dict[str, Recipe] = {
    "deit": Recipe(ema_decay=0.99996),
    "localvit": Recipe(ema_decay=0.99996),  # DeiT's main.py, unchanged
    "crossvit": Recipe(warmup_epochs=30.0),  # the paper's 32-GPU run; no EMA
    # CvT scales a yaml LR by the number of GPUs; at its 256 images per GPU that is 5e-4 x B / 512.
    # drop path 0.1 acts on the last stage only (0 / 0 / 0.1)
    "cvt": Recipe(),
    "slide": Recipe(drop_path=0.2, **_SWIN_STYLE),  # main.py (no EMA); main_ema.py would add 0.9999
    "cloformer": Recipe(drop_path=0.0, **_SWIN_STYLE),  # XXS: 0; XS and S: 0.06
    # NOT from a paper: short runs of small models on synthetic data (the CPU main job)
    "light": Recipe(
        base_lr=1.6e-2,  # 2e-3 at batch 64
        warmup_epochs=0.5,
        drop_path=0.0,
        augment=Augment(crop_scale=None, randaugment=None, color_jitter=0.0, mixup=0.0, cutmix=0.0, erase=0.0),
    ),
    # NOT from a paper: small models on small real images for tens of epochs on a CPU (`vitlocal study`).
    # The papers' 300-epoch regularisation (RandAugment, mixup, cutmix, erasing, drop path, EMA) only slows
    # learning this short; a mild random-resized crop, flips and label smoothing remain.
    "small": Recipe(
        base_lr=8e-3,  # 2e-3 at batch 128
        warmup_epochs=1.0,
        drop_path=0.0,
        augment=Augment(crop_scale=(0.35, 1.0), randaugment=None, color_jitter=0.0, mixup=0.0, cutmix=0.0, erase=0.0),
    ),
}


def default_recipe(model: str) -> str:
    """The recipe a model's paper used, from its name (``swin_*`` trains like Slide-Swin); else DeiT's."""
    family = model.split("_")[0]
    return {"swin": "slide"}.get(family, family if family in RECIPES else "deit")


def with_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """``recipe`` with fields of it or of its `Augment` replaced; an unknown name is an error listing the valid ones."""
    top = {f.name for f in fields(Recipe)} - {"augment"}
    aug = {f.name for f in fields(Augment)}
    unknown = sorted(set(overrides) - top - aug)
    if unknown:
        raise ValueError(f"unknown recipe setting(s) {unknown}; valid: {sorted(top | aug)}")
    augment = replace(recipe.augment, **{k: v for k, v in overrides.items() if k in aug})
    return replace(recipe, augment=augment, **{k: v for k, v in overrides.items() if k in top})


def get_recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe called ``name`` with ``overrides`` applied; an unknown name is an error listing the recipes."""
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r} is unknown; recipes: {', '.join(RECIPES)}")
    return with_overrides(RECIPES[name], overrides or {})
