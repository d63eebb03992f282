"""Swin Transformer, and Slide-Swin: Swin with slide attention in its first stages.

Papers: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021
(arXiv 2103.14030), official code microsoft/Swin-Transformer ``models/swin_transformer.py``; Pan et al.,
"Slide-Transformer: Hierarchical Vision Transformer with Local Self-Attention", CVPR 2023 (arXiv 2304.04237),
official code LeapLabTHU/Slide-Transformer ``slide_transformer/models/slide_swin.py`` (a copy of Swin's file with
slide attention added).

Architecture (Swin-T at 224 px; maps are ``(B, H, W, C)`` throughout, tokens ``(B, N, C)`` only inside attention):

    image (B, 3, 224, 224) -> 4x4 patch embedding -> LN -> (B, 56, 56, 96)
    4 stages of depth 2, 2, 6, 2 on maps 56, 28, 14, 7 of width 96, 192, 384, 768; a stage ends with
        PatchMerging (2x2 neighbours concatenated -> LN -> Linear(4C, 2C)), except the last
    block:  x = x + DropPath(Attn(LN(x)));  x = x + DropPath(MLP(LN(x)))
        Attn alternates W-MSA (attention inside 7x7 windows) and SW-MSA (windows shifted by 3, masked),
        both with a learned relative position bias: softmax(Q K^T / sqrt(d) + B) V
    LN -> average over the map -> Linear head

Slide-Swin replaces the attention of the first ``num_slide_stages = 2`` stages by `vitlocal.slide.SlideAttention`
over the whole map (every query attends to its 3x3 neighbourhood; no windows, no roll, no mask); stages 3-4 keep
Swin's 7x7 window attention, as the paper describes and its FLOPs confirm (the released yaml's ``WINDOW_SIZE: 56``
would make them global attention instead; see the note above the Slide-Swin builders).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from vitlocal.attention import Attention
from vitlocal.layers import DropPath, Mlp
from vitlocal.models.common import PatchEmbed, init_vit_weights
from vitlocal.models.official import Rule, register_converter, rename_keys
from vitlocal.models.registry import configure, register_model
from vitlocal.slide import SlideAttention

__all__ = [
    "SwinConfig",
    "relative_position_index",
    "shifted_window_mask",
    "WindowAttention",
    "SwinBlock",
    "PatchMerging",
    "SwinStage",
    "SwinTransformer",
    "swin_tiny",
    "slide_swin_tiny",
    "slide_swin_small",
    "slide_swin_base",
    "swin_nano",
    "slide_swin_nano",
]


@dataclass
class SwinConfig:
    """A Swin / Slide-Swin model (defaults: Swin-T, ``swin_tiny_patch4_window7_224``).

    ``window_size`` is the window of the window-attention stages; a stage whose map is no larger than it uses
    one window of the map's size and no shift (official behaviour). ``num_slide_stages`` first stages use slide
    attention with a ``slide_kernel_size`` neighbourhood instead (Slide-Swin: 2 and 3; plain Swin: 0).
    """

    num_classes: int = 1000
    img_size: int = 224
    drop_path_rate: float = 0.2
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_slide_stages: int = 0
    slide_kernel_size: int = 3


# ----------------------------------------------------------------------------------------------------------------------
# Window attention with a relative position bias (W-MSA and SW-MSA)
# ----------------------------------------------------------------------------------------------------------------------


def relative_position_index(window_size: int) -> torch.Tensor:
    """``(w*w, w*w)`` indices into the ``(2w-1)^2`` bias table: the row of the offset between tokens ``i`` and ``j``.

    Token ``i`` of a window sits at ``(y_i, x_i) = (i // w, i % w)``; the offset ``(y_i - y_j, x_i - x_j)`` lies in
    ``[-(w-1), w-1]^2`` and is numbered row-major: ``(y_i - y_j + w - 1) * (2w - 1) + (x_i - x_j + w - 1)``.
    """
    w = window_size
    y, x = torch.arange(w * w) // w, torch.arange(w * w) % w  # token i at (i // w, i % w)
    dy = rearrange(y, "i -> i 1") - rearrange(y, "j -> 1 j") + w - 1
    dx = rearrange(x, "i -> i 1") - rearrange(x, "j -> 1 j") + w - 1
    return dy * (2 * w - 1) + dx


def shifted_window_mask(map_size: int, window_size: int, shift_size: int) -> torch.Tensor:
    """The SW-MSA mask ``(num_windows, w*w, w*w)``: 0 where two tokens of a window may attend, -100 where not.

    After the map is rolled by ``-shift`` (towards the top-left), the last row and column of windows hold pixels
    from opposite borders of the image. Label the rolled map's three bands ``[0, H-w)``, ``[H-w, H-s)``,
    ``[H-s, H)`` per axis (9 regions); two tokens of a window may attend only if they share a region. Quirk: the
    official mask adds -100, not -inf (a masked pair keeps a weight of about e^-100).
    """
    bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = torch.zeros(map_size, map_size)
    for label, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        region[rows, cols] = label
    region = rearrange(region, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window_size, ww=window_size)
    different = rearrange(region, "win i -> win i 1") != rearrange(region, "win j -> win 1 j")
    return different.float() * -100.0


class WindowAttention(Attention):
    """W-MSA / SW-MSA ``(B, H, W, C) -> (B, H, W, C)``: multi-head attention inside each ``w x w`` window.

    Per window of ``N = w*w`` tokens: ``softmax(Q K^T / sqrt(d) + B + M) V`` with the relative position bias
    ``B[h, i, j] = table[index[i, j], h]`` and, when ``shift_size > 0``, the map rolled by ``-shift`` first
    (and back afterwards) and the `shifted_window_mask` ``M``. The per-window attention is `Attention` (q/k/v in
    the timm layout, as the official code) with ``B + M`` as its additive mask.

    Args:
        dim, num_heads, qkv_bias: as `Attention`.
        map_size: side of the square map this module runs on (the mask is built for it).
        window_size: side ``w`` of a window; must divide ``map_size``.
        shift_size: cyclic shift ``s`` of SW-MSA (``w // 2``), 0 for W-MSA; ``0 <= s < w``.
    """

    def __init__(
        self, dim: int, num_heads: int, map_size: int, window_size: int, shift_size: int = 0, qkv_bias: bool = True
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias)
        if window_size < 1 or map_size % window_size:
            raise ValueError(f"window_size={window_size} must divide the map size {map_size}")
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must lie in [0, window_size={window_size})")
        self.map_size, self.window_size, self.shift_size = map_size, window_size, shift_size
        # quirk: one learned bias per head and relative offset, (2w-1)^2 x heads, trunc-normal std 0.02, no weight decay
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # both are rebuilt from the configuration, so they stay out of the state dict (the official one saves them)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        mask = shifted_window_mask(map_size, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """The bias ``B`` of shape ``(heads, w*w, w*w)``: ``B[h, i, j] = table[index[i, j], h]``."""
        return rearrange(self.relative_position_bias_table[self.relative_position_index], "i j heads -> heads i j")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H, W, C)`` with ``H == W == map_size``; returns ``(B, H, W, C)``."""
        if x.ndim != 4 or x.shape[1:3] != (self.map_size, self.map_size):
            raise ValueError(
                f"x must be a (B, {self.map_size}, {self.map_size}, C) map for this WindowAttention, "
                f"got shape {tuple(x.shape)}"
            )
        b, s, w = x.shape[0], self.shift_size, self.window_size
        if s:  # SW-MSA: cyclic shift towards the top-left
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        # window partition, row-major over windows (official window_partition)
        windows = rearrange(x, "b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c", wh=w, ww=w)
        bias = self.relative_position_bias()  # (heads, N, N), broadcast over windows
        if self.attn_mask is not None:
            bias = repeat(bias + rearrange(self.attn_mask, "win i j -> win 1 i j"), "win h i j -> (b win) h i j", b=b)
        out = super().forward(windows, attn_mask=bias)  # softmax(Q K^T / sqrt(d) + B + M) V, then proj
        x = rearrange(out, "(b nh nw) (wh ww) c -> b (nh wh) (nw ww) c", b=b, nh=self.map_size // w, wh=w)
        if s:  # reverse cyclic shift
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay (official ``no_weight_decay_keywords``)."""
        return {"relative_position_bias_table"}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, shift={self.shift_size}"


# ----------------------------------------------------------------------------------------------------------------------
# Blocks, patch merging, stages
# ----------------------------------------------------------------------------------------------------------------------


class SwinBlock(nn.Module):
    """Pre-norm block on a ``(B, H, W, C)`` map: ``x + DropPath(attn(LN(x)))``, then ``x + DropPath(MLP(LN(x)))``.

    ``attn`` is any ``(B, H, W, C) -> (B, H, W, C)`` module: `WindowAttention` (Swin) or `SlideAttention`.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Downsampling ``(B, H, W, C) -> (B, H/2, W/2, 2C)``: each 2x2 neighbourhood concatenated, LN, ``Linear(4C, 2C)``.

    Quirk (matters for checkpoints): the official concat order is ``[x0, x1, x2, x3]`` with (row, column) offsets
    (0, 0), (1, 0), (0, 1), (1, 1), i.e. the COLUMN offset is the outer index: channels ``(dw dh c)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)  # quirk: no bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage: ``depth`` blocks on a fixed map, then `PatchMerging` (official ``BasicLayer``; its
    ``downsample`` sits at the END of a stage, so ``layers.0.downsample`` exists and the last stage has none)."""

    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


def _window_and_shift(map_size: int, window_size: int, block: int) -> tuple[int, int]:
    """Window and shift of block ``block`` of a stage: W-MSA on even blocks, SW-MSA (shift ``w // 2``) on odd ones.

    Quirk (official): when the map is no larger than the window, the window shrinks to the map and the shift is 0.
    """
    if map_size <= window_size:
        return map_size, 0
    return window_size, (window_size // 2 if block % 2 else 0)


def _img_size_problem(config: SwinConfig, img_size: int) -> str | None:
    """Why ``img_size`` does not fit ``config`` (``None`` if it fits)."""
    stages, p = len(config.depths), config.patch_size
    step = p * 2 ** (stages - 1)
    if img_size % step:
        return f"it must be a multiple of patch_size * 2^(stages-1) = {p} * {2 ** (stages - 1)} = {step}"
    for i in range(config.num_slide_stages, stages):
        side = img_size // p // 2**i
        window, _ = _window_and_shift(side, config.window_size, 0)
        if side % window:
            return (
                f"stage {i + 1}'s {side}x{side} map is not a multiple of window_size={config.window_size} "
                f"(a map no larger than the window is fine: the window shrinks to it)"
            )
    return None


def _check_img_size(config: SwinConfig) -> None:
    """Raise a ValueError naming nearby image sizes that work unless every stage's map fits its windows."""
    img_size = config.img_size
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < 1:
        raise ValueError(f"img_size must be a positive integer (square images), got {img_size!r}")
    problem = _img_size_problem(config, img_size)
    if problem is None:
        return
    step = config.patch_size * 2 ** (len(config.depths) - 1)
    start = img_size - img_size % step
    below = next((s for s in range(start, 0, -step) if _img_size_problem(config, s) is None), None)
    # multiples of step * window_size always fit, so this search ends
    above = next(s for s in range(start + step, 10**9, step) if _img_size_problem(config, s) is None)
    nearby = ", ".join(str(s) for s in (below, above) if s is not None)
    raise ValueError(
        f"img_size={img_size} does not fit this Swin model: {problem}. "
        f"Sizes that work nearby: {nearby} (or change window_size / patch_size)"
    )


class SwinTransformer(nn.Module):
    """Swin Transformer ``(B, 3, H, W) -> (B, num_classes)``, optionally with slide attention in its first stages.

    Module names follow the official code (``patch_embed``, ``layers.i.blocks.j.attn``, ``layers.i.downsample``,
    ``norm``, ``head``) except the patch-embedding LayerNorm, ``embed_norm`` (official ``patch_embed.norm``).
    """

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        c = config
        if len(c.depths) != len(c.num_heads) or not c.depths:
            raise ValueError(f"depths {c.depths} and num_heads {c.num_heads} must list the same (>0) number of stages")
        if not 0 <= c.num_slide_stages <= len(c.depths):
            raise ValueError(f"num_slide_stages={c.num_slide_stages} must lie in [0, {len(c.depths)}] (the stages)")
        if not 0.0 <= c.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must lie in [0, 1), got {c.drop_path_rate!r}")
        if not isinstance(c.window_size, int) or c.window_size < 1:
            raise ValueError(f"window_size must be a positive integer, got {c.window_size!r}")
        _check_img_size(c)
        self.config = c
        self.num_features = c.embed_dim * 2 ** (len(c.depths) - 1)

        # patch embedding: a 4x4 stride-4 conv, then LN (official patch_norm=True)
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.embed_norm = nn.LayerNorm(c.embed_dim)

        # stochastic depth grows linearly from 0 to drop_path_rate over all blocks (on the CPU: the model may be
        # built under a meta-device context, whose tensors have no values)
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(c.depths, c.num_heads, strict=True)):
            dim, side = c.embed_dim * 2**i, self.patch_embed.grid // 2**i
            first = sum(c.depths[:i])
            blocks = [
                SwinBlock(dim, self._attention(i, j, dim, heads, side), c.mlp_ratio, rates[first + j])
                for j in range(depth)
            ]
            self.layers.append(SwinStage(blocks, PatchMerging(dim) if i < len(c.depths) - 1 else None))

        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, c.num_classes) if c.num_classes > 0 else nn.Identity()
        # official init: Linear trunc-normal(0.02) with zero bias, LN 1/0; convs keep PyTorch's default
        self.apply(init_vit_weights)

    def _attention(self, stage: int, block: int, dim: int, heads: int, side: int) -> nn.Module:
        """Slide attention in the first ``num_slide_stages`` stages, window attention after them."""
        c = self.config
        if stage < c.num_slide_stages:
            # quirk (Slide-Swin): the whole map is ONE "window" (official window_size = map size, so the shift
            # is forced to 0): slide attention runs on the full map, with no roll and no mask
            return SlideAttention(dim, heads, kernel_size=c.slide_kernel_size, qkv_bias=c.qkv_bias)
        window, shift = _window_and_shift(side, c.window_size, block)
        return WindowAttention(dim, heads, side, window, shift, qkv_bias=c.qkv_bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_features)``: the pooled features before the head."""
        size = self.config.img_size
        if x.ndim != 4 or x.shape[1:] != (self.config.in_chans, size, size):
            raise ValueError(
                f"this model was built for (B, {self.config.in_chans}, {size}, {size}) images, got shape "
                f"{tuple(x.shape)}; build it for your size with create_model(name, img_size=...)"
            )
        x = rearrange(self.patch_embed(x), "b (h w) c -> b h w c", h=self.patch_embed.grid)
        x = self.embed_norm(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=(1, 2))  # final LN, then average pooling over the map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Full names of the relative position bias tables (Swin's and slide attention's rpb): no weight decay."""
        return {
            f"{prefix}.{name}"
            for prefix, module in self.named_modules()
            if isinstance(module, (WindowAttention, SlideAttention))
            for name in module.no_weight_decay()
        }


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: the official layout (microsoft/Swin-Transformer, LeapLabTHU/Slide-Transformer) and timm's
# ----------------------------------------------------------------------------------------------------------------------

# official SlideAttention names -> vitlocal.slide.SlideAttention names (in the slide stages only)
_SLIDE_RENAMES = (("dep_conv", "shift.onehot"), ("dep_conv1", "shift.deform"), ("relative_position_bias_table", "rpb"))
# buffers the official modules save and ours rebuild from the configuration
_REBUILT = ("relative_position_index", "attn_mask")


def _renames(config: SwinConfig) -> list[Rule]:
    """The ``(official, ours)`` key renames: the patch-embedding LN, and slide attention in the slide stages."""
    slide = [
        (f"layers.{stage}.blocks.*.attn.{official}", f"layers.{stage}.blocks.*.attn.{ours}")
        for stage in range(config.num_slide_stages)
        for official, ours in _SLIDE_RENAMES
    ]
    return [("patch_embed.norm", "embed_norm"), *slide]


def _check_windows(state: dict[str, torch.Tensor], model: SwinTransformer) -> None:
    """Raise a ValueError naming the ``window_size`` to build ``model`` with when the checkpoint's relative position
    bias tables, ``((2w - 1)^2, heads)``, were trained with another window ``w`` than the model's.

    Quirk (Slide-Swin): the released ``cfgs/slide_swin_*.yaml`` set ``WINDOW_SIZE: 56``, so stage 3's window is its
    whole 14x14 map: 27^2 = 729 rows, where our default window 7 has 13^2 = 169 (see the note above the builders).
    """
    exact, at_least, first = set(), 0, None
    for name, module in model.named_modules():
        table = state.get(f"{name}.relative_position_bias_table") if isinstance(module, WindowAttention) else None
        if table is None or table.shape == module.relative_position_bias_table.shape:
            continue
        window = (math.isqrt(table.shape[0]) + 1) // 2
        if (2 * window - 1) ** 2 != table.shape[0]:
            continue  # not a window's table: load_official's shape check names it
        first = first or (name, table.shape[0], window, module)
        if window < module.map_size:
            exact.add(window)  # the checkpoint's window_size itself
        else:  # quirk: a window_size larger than the map shrinks to it, so the map alone is seen
            at_least = max(at_least, window)
    if first is None:
        return
    name, rows, window, module = first
    if exact:
        fix = " or ".join(f"window_size={w})" for w in sorted(exact))
    else:  # the same model for any window_size >= at_least; as large as the first map is the released Slide-Swin's
        fix = f"window_size={model.patch_embed.grid}); any window_size >= {at_least} builds the same model"
    raise ValueError(
        f"{name}.relative_position_bias_table of the checkpoint has {rows} rows = (2w-1)^2 for a {window}x{window} "
        f"window, this model's has {module.relative_position_bias_table.shape[0]} (window {module.window_size}): "
        f"the checkpoint was trained with another window_size; build the model with create_model(..., {fix}"
    )


def export_official_swin(state: dict[str, torch.Tensor], model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Our Swin / Slide-Swin state dict -> official: the renames undone, and the saved buffers put back.

    Every window attention's ``relative_position_index`` ``(w*w, w*w)``, and each shifted block's ``attn_mask``
    ``(num_windows, w*w, w*w)`` (official: on the block, not its attention), come from the model's own buffers.
    """
    official = rename_keys(state, _renames(model.config), inverse=True)
    for name, module in model.named_modules():
        if isinstance(module, WindowAttention):
            official[f"{name}.relative_position_index"] = module.relative_position_index
            if module.attn_mask is not None:
                official[f"{name.removesuffix('.attn')}.attn_mask"] = module.attn_mask
    return official


@register_converter(SwinTransformer, inverse=export_official_swin, source="microsoft/Swin-Transformer, Slide-Swin")
def convert_official_swin(state: dict[str, torch.Tensor], model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Official Swin / Slide-Swin state dict -> ours.

    Drops the saved buffers (``relative_position_index``, ``attn_mask``: rebuilt from the config), renames
    ``patch_embed.norm`` to ``embed_norm``, and, in slide stages, ``dep_conv``/``dep_conv1``/
    ``relative_position_bias_table`` to ``shift.onehot``/``shift.deform``/``rpb``. Tensor layouts are identical
    (PatchMerging's concat order is the official one). A bias table of another window is an error naming the
    ``window_size`` override that fits it (`_check_windows`).
    """
    saved = {key: value for key, value in state.items() if not key.endswith(_REBUILT)}
    ours = rename_keys(saved, _renames(model.config))
    _check_windows(ours, model)
    return ours


def _timm_moves(config: SwinConfig) -> list[Rule]:
    """The ``(timm, official)`` key renames of timm's Swin since timm 0.9 (commit acfd85ad; timm <= 0.6.13 saved the
    official layout, which `convert_official_swin` reads).

    Quirk (timm): each PatchMerging runs at the START of the next stage (timm ``layers.{i+1}.downsample``, official
    ``layers.{i}.downsample``), and the head is wrapped in a ClassifierHead (``head.fc``). The tensors are the
    official ones: timm's PatchMerging permutes to the official concat order.
    """
    moves = [(f"layers.{i + 1}.downsample", f"layers.{i}.downsample") for i in range(len(config.depths) - 1)]
    return [("head.fc", "head"), *moves]


def _is_timm_swin(keys: Collection[str]) -> bool:
    """timm's layout: a ``head.fc`` (timm's own test), or patch merging in some stage but none in stage 0."""
    merged = {key.split(".")[1] for key in keys if re.match(r"layers\.\d+\.downsample\.", key)}
    return any(key.startswith("head.fc.") for key in keys) or (bool(merged) and "0" not in merged)


def export_timm_swin(state: dict[str, torch.Tensor], model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Our Swin state dict -> timm's ``swin_*``: official names, moved (`_timm_moves`); no buffers (timm >= 0.9.6
    rebuilds ``relative_position_index`` and ``attn_mask`` and does not save them)."""
    official = rename_keys(state, _renames(model.config), inverse=True)
    return rename_keys(official, _timm_moves(model.config), inverse=True)


@register_converter(
    SwinTransformer,
    inverse=export_timm_swin,
    layout="timm",
    source="timm >= 0.9 swin_*: patch merging at the start of the next stage, head.fc",
    detect=_is_timm_swin,
)
def convert_timm_swin(state: dict[str, torch.Tensor], model: SwinTransformer) -> dict[str, torch.Tensor]:
    """timm's Swin state dict -> ours: `_timm_moves` back to the official names, then `convert_official_swin`
    (which also drops the ``relative_position_index`` / ``attn_mask`` buffers that timm 0.9.0 - 0.9.5 saved)."""
    return convert_official_swin(rename_keys(state, _timm_moves(model.config)), model)


# ----------------------------------------------------------------------------------------------------------------------
# Registered variants
# ----------------------------------------------------------------------------------------------------------------------

# Slide-Swin (official cfgs/slide_swin_*.yaml): ka 3, slide attention in stages 1-2.
# Deviation, on purpose: those yaml files set WINDOW_SIZE 56, and since the official block shrinks a window larger
# than its map to the map, stages 3-4 of the released code attend over their WHOLE 14x14 / 7x7 map without shift.
# The paper keeps Swin's 7x7 W-MSA/SW-MSA there, and its FLOPs (4.6 / 8.9 / 15.5 G) match window 7 (4.69 / 8.94 /
# 15.70 G measured), not window 56 (4.83 / 9.34 / 16.23 G). We default to 7; pass window_size=56 for the
# released-code behaviour, which the released checkpoints need (their stage-3 bias tables are 27^2 x heads;
# load_official names the override). Parameters: 28.35 / 49.75 / 87.95M with window 56, 28.31 / 49.63 / 87.79M with 7.
_SLIDE = {"num_slide_stages": 2, "slide_kernel_size": 3}


@register_model
def swin_tiny(**overrides) -> nn.Module:
    """Swin-T (official ``swin_tiny_patch4_window7_224``): 28.3M parameters, 4.5 GMACs at 224."""
    return SwinTransformer(configure(SwinConfig(), overrides))


@register_model
def slide_swin_tiny(**overrides) -> nn.Module:
    """Slide-Swin-T: Swin-T with slide attention (ka 3) in stages 1-2; drop-path 0.2."""
    return SwinTransformer(configure(SwinConfig(**_SLIDE), overrides))


@register_model
def slide_swin_small(**overrides) -> nn.Module:
    """Slide-Swin-S: depths 2, 2, 18, 2; drop-path 0.3."""
    return SwinTransformer(configure(SwinConfig(depths=(2, 2, 18, 2), drop_path_rate=0.3, **_SLIDE), overrides))


@register_model
def slide_swin_base(**overrides) -> nn.Module:
    """Slide-Swin-B: width 128, depths 2, 2, 18, 2, heads 4, 8, 16, 32; drop-path 0.5."""
    config = SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_SLIDE)
    return SwinTransformer(configure(config, overrides))


# CPU presets: NOT from the papers. 64 px, 4 stages on 16 -> 8 -> 4 -> 2 maps, width 32, window 4 (stages 1-2
# alternate W-MSA / SW-MSA; stages 3-4 are a single window), so smoke runs and notebooks train in seconds.
_NANO = {"img_size": 64, "embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": 4}


@register_model
def swin_nano(**overrides) -> nn.Module:
    """A tiny Swin for CPU smoke runs (NOT from the papers): 64 px, width 32, depths 2, 2, 2, 2, window 4."""
    return SwinTransformer(configure(SwinConfig(drop_path_rate=0.1, **_NANO), overrides))


@register_model
def slide_swin_nano(**overrides) -> nn.Module:
    """A tiny Slide-Swin for CPU smoke runs (NOT from the papers): `swin_nano` with slide attention in stages 1-2."""
    return SwinTransformer(configure(SwinConfig(drop_path_rate=0.1, **_NANO, **_SLIDE), overrides))
