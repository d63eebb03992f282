"""Pieces every model family shares: patch embedding, official initialisation, position-embedding
resizing, image-size checks and the weight-decay parameter groups the training engine uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal.lattice import img2seq

__all__ = ["PatchEmbed", "init_vit_weights", "resize_pos_embed", "check_img_size", "param_groups"]


class PatchEmbed(nn.Module):
    """ViT patch embedding ``(B, 3, H, W) -> (B, (H/p)(W/p), C)``: a ``p x p`` conv with stride ``p``."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        check_img_size(img_size, patch_size, "img_size", "patch_size")
        self.grid = img_size // patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return img2seq(self.proj(x))  # b c h w -> b (h w) c


def init_vit_weights(module: nn.Module) -> None:
    """The DeiT/timm initialisation: Linear ``trunc_normal(std=0.02)`` with zero bias; LayerNorm 1 and 0.

    Apply with ``model.apply(init_vit_weights)``; convolutions keep PyTorch's default init, as in DeiT.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resize a learned ``(1, P + h*w, C)`` position embedding to ``new_grid`` (bicubic, as timm/DeiT).

    The ``P`` prefix (class / distillation) entries are kept; the grid part must be square.
    """
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = round(grid.shape[1] ** 0.5)
    if side * side != grid.shape[1]:
        raise ValueError(f"pos_embed holds {grid.shape[1]} grid entries, which is not a square grid")
    if (side, side) == tuple(new_grid):
        return pos_embed
    grid = rearrange(grid, "1 (h w) c -> 1 c h w", h=side)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return torch.cat([prefix, rearrange(grid, "1 c h w -> 1 (h w) c")], dim=1)


def check_img_size(img_size: int, multiple: int, name: str = "img_size", why: str = "patch_size") -> None:
    """Raise unless ``img_size`` is a positive multiple of ``multiple``, naming nearby sizes that work."""
    if not isinstance(img_size, int) or img_size < multiple or img_size % multiple:
        lower = max(multiple, (img_size // multiple) * multiple) if isinstance(img_size, int) else multiple
        raise ValueError(
            f"{name}={img_size!r} must be a multiple of {multiple} ({why}); "
            f"sizes that work nearby: {lower}, {lower + multiple}"
        )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases, norms (1-D parameters) and on the names the
    model lists in ``no_weight_decay()`` (position embeddings, class tokens, relative position biases).

    Frozen parameters (Slide's one-hot kernels) are left out.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_skipped = param.ndim <= 1 or name in skip or any(name.endswith("." + s) for s in skip)
        (no_decay if is_skipped else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
