"""CloFormer: local AttnConv heads and pooled global heads in one attention layer.

Paper: Q. Fan, H. Huang, J. Guan, R. He, "Rethinking Local Perception in Lightweight Vision Transformer"
(arXiv 2303.17803). Official code: https://github.com/qhfan/CloFormer (``classification/models/CloFormer.py``,
``blocks.py``, ``layers.py``, ``patch_embedding.py``, ``model_factory.py``, ``configs/*.yaml``).

Architecture (CloFormer-XXS at 224 px; every map is ``(B, C, H, W)``, every norm is ``GroupNorm(1, C)``):

    stem:    Conv3x3 s2 (C/2) -> BN -> ReLU -> Conv3x3 s2 (C) -> BN -> ReLU -> [Conv3x3 -> BN -> ReLU] x 2
             -> Conv1x1 -> GN                                      (B, 3, 224, 224) -> (B, 32, 56, 56)
    stage i = 1..4 (depths 2, 2, 6, 2; maps 56, 28, 14, 7), each block:
        x = x + DropPath(CloAttention(GN(x)))       local AttnConv heads (DW kernel 3/5/7/9) + global heads over
                                                    the map average-pooled by 8/4/2/1 (7 x 7 = 49 keys everywhere)
        x = shortcut(x) + DropPath(ConvFFN(GN(x)))  Conv1x1 (4C) -> GELU -> DWConv5x5 -> Conv1x1
        the LAST block of stages 1-3 downsamples: its ConvFFN's DW conv has stride 2 and outputs C_next, and its
        shortcut is Conv5x5 s2 -> BN -> Conv1x1 (C -> C_next); there is no separate patch-merging layer
    logits = Linear(AvgPool(GN(x)))

The mechanisms come from `vitlocal.attnconv` (`CloAttention`, `ConvFFN`, `group_norm`) and `vitlocal.layers`
(`DropPath`). Module names follow the official code (``patch_embed.conv1``, ``layers.0.blocks.1.norm1``,
``.downsample``, ``.mlp.fc1``, ``norm``, ``head``) except inside the attention (ours: ``attn.local.0.qkv``,
``attn.global_attn.kv``; official: ``attn.qkvs.0``, ``attn.global_kv``). The authors released no checkpoints,
so there is no converter and `load_official` refuses a CloFormer.

Ablations (official ``model_factory.py``): ``cloformer_global`` (every head global) and ``cloformer_no_global``
(every head local), both at XXS widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitlocal._checks import check_channels, check_positive, check_rank
from vitlocal.attnconv import CloAttention, ConvFFN, group_norm
from vitlocal.layers import DropPath
from vitlocal.models.registry import configure, register_model

__all__ = [
    "CloFormerConfig",
    "stage_maps",
    "global_keys",
    "ConvStem",
    "CloBlock",
    "CloStage",
    "CloFormer",
    "cloformer_xxs",
    "cloformer_xs",
    "cloformer_s",
    "cloformer_global",
    "cloformer_no_global",
    "cloformer_nano",
]

_STAGE_FIELDS = ("embed_dims", "depths", "num_heads", "group_splits", "kernel_sizes", "window_sizes")


@dataclass
class CloFormerConfig:
    """A CloFormer (defaults: CloFormer-XXS, official ``configs/cloformer_xxs.yaml``); tuples hold one entry per stage.

    ``group_splits[i]`` lists the heads of stage ``i``'s local groups and, LAST, its global heads; ``kernel_sizes[i]``
    holds one DW kernel per local group. ``window_sizes[i]`` is the global branch's pool window: with stem stride 4
    and a halving per stage, every stage's map (``ceil(img_size / 4)``, then halved rounding up) must be divisible
    by its window wherever the stage has global heads (`stage_maps` checks it). ``drop_rate`` is the official
    ``mlp_drop``: dropout in the ConvFFN and (quirk) after the attention's fusion FC as well.
    """

    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 4, 8, 16)
    group_splits: tuple[tuple[int, ...], ...] = ((3, 1), (2, 2), (4, 4), (4, 12))
    kernel_sizes: tuple[tuple[int, ...], ...] = ((3,), (5,), (7,), (9,))
    window_sizes: tuple[int, ...] = (8, 4, 2, 1)
    mlp_kernel_size: int = 5  # ConvFFN's DW kernel, and the downsampling shortcut's conv kernel
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # also the bias of the attention's fusion FC (the official code reuses the flag)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0


def _trace_maps(config: CloFormerConfig, side: int) -> tuple[list[int], str | None]:
    """Each stage's map side for an input side, and the first reason it does not fit (``None`` if it does)."""
    side = -(-side // 4)  # the stem's two 3x3 stride-2 convs (pad 1) each give ceil(side / 2)
    sides = []
    for i, (split, window) in enumerate(zip(config.group_splits, config.window_sizes, strict=True)):
        if split[-1] > 0 and side % window:
            problem = f"stage {i + 1}'s {side}x{side} map is not divisible by its pool window {window}"
            return sides, problem
        sides.append(side)
        side = -(-side // 2)  # the downsampling block's stride-2 convs (k 5, pad 2) give ceil(side / 2)
    return sides, None


def stage_maps(config: CloFormerConfig, img_size: int | None = None) -> list[int]:
    """The side of each stage's map for a square ``img_size`` image (default ``config.img_size``): 56, 28, 14, 7 at 224.

    Raises a ValueError naming nearby sizes that work when a stage with global heads has a map its pool window
    does not divide (at the default windows 8/4/2/1: ``ceil(img_size / 4)`` must be a multiple of 8, so multiples
    of 32 work).
    """
    for i, window in enumerate(config.window_sizes):
        check_positive(window, f"window_sizes[{i}]")
    size = config.img_size if img_size is None else img_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"img_size must be a positive integer (square images), got {size!r}")
    sides, problem = _trace_maps(config, size)
    if problem is None:
        return sides
    fits = [s for s in range(4, 4 * size + 256, 4) if _trace_maps(config, s)[1] is None]  # multiples of 4 that fit
    nearby = [s for s in fits if s < size][-1:] + [s for s in fits if s > size][:1]
    raise ValueError(
        f"img_size={size} does not fit this CloFormer: {problem} (window_sizes={config.window_sizes}); "
        f"sizes that work nearby: {', '.join(map(str, nearby))}, or override window_sizes"
    )


def global_keys(config: CloFormerConfig, img_size: int | None = None) -> list[int]:
    """Keys each stage's global heads attend to, ``(side / window)^2`` (0 for a stage without global heads).

    At 224 px with windows 8/4/2/1: 56/8 = 28/4 = 14/2 = 7/1 = 7, so 49 keys in every stage.
    """
    sides = stage_maps(config, img_size)
    return [
        (side // window) ** 2 if split[-1] > 0 else 0
        for side, window, split in zip(sides, config.window_sizes, config.group_splits, strict=True)
    ]


def _conv_bn_relu(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    """Conv3x3 (pad 1, with bias) -> BN -> ReLU (official ``BasicBlock``; SyncBN there, BN here)."""
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, stride, 1), nn.BatchNorm2d(out_chans), nn.ReLU())


class ConvStem(nn.Module):
    """The convolutional stem (official ``PatchEmbedding``): ``(B, in_chans, H, W) -> (B, C, ceil(H/4), ceil(W/4))``.

    Strides 2, 2, 1, 1: Conv3x3 s2 (C/2) -> BN -> ReLU -> Conv3x3 s2 (C) -> BN -> ReLU -> [Conv3x3 -> BN -> ReLU] x 2
    -> Conv1x1 -> GN(1, C). Every conv has a bias (quirk: even before BN, as in the official code).
    """

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_chans, dim // 2, stride=2)
        self.conv2 = _conv_bn_relu(dim // 2, dim, stride=2)
        self.conv3 = _conv_bn_relu(dim, dim, stride=1)
        self.conv4 = _conv_bn_relu(dim, dim, stride=1)
        self.conv5 = nn.Conv2d(dim, dim, 1)
        self.norm = group_norm(dim)  # official name ``layernorm``, but it is GroupNorm(1, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.norm(self.conv5(x))


class CloBlock(nn.Module):
    """One block (official ``EfficientBlock``): ``(B, C, H, W) -> (B, C_out, H / s, W / s)``; ``s = 2`` downsamples.

    ``x = x + DropPath(CloAttention(GN(x)))``, then ``x = shortcut(x) + DropPath(ConvFFN(GN(x)))``.
    """

    def __init__(
        self, stage: int, dim: int, out_dim: int, downsample: bool, config: CloFormerConfig, drop_path: float
    ) -> None:
        super().__init__()
        c = config
        self.norm1 = group_norm(dim)  # quirk: GroupNorm(1, C) everywhere, statistics over (C, H, W)
        self.attn = CloAttention(
            dim,
            c.num_heads[stage],
            list(c.group_splits[stage]),
            list(c.kernel_sizes[stage]),
            c.window_sizes[stage],
            attn_drop=c.attn_drop_rate,
            proj_drop=c.drop_rate,  # quirk: the official block passes mlp_drop as the attention's proj_drop
            qkv_bias=c.qkv_bias,
        )
        self.drop_path = DropPath(drop_path)  # one rate for both branches, as in the official block
        self.norm2 = group_norm(dim)
        k = c.mlp_kernel_size
        # quirk: no patch merging; the stage's last block downsamples in its shortcut and in its FFN's DW conv
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(dim, dim, k, 2, k // 2),  # full (not depthwise) k x k conv, stride 2
                nn.BatchNorm2d(dim),  # SyncBN in the official code (the trainer converts under DDP)
                nn.Conv2d(dim, out_dim, 1),
            )
            if downsample
            else nn.Identity()
        )
        self.mlp = ConvFFN(dim, int(dim * c.mlp_ratio), out_dim, k, stride=2 if downsample else 1, drop=c.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))  # x = x + DropPath(Attn(GN(x)))
        return self.downsample(x) + self.drop_path(self.mlp(self.norm2(x)))  # x = shortcut(x) + DropPath(FFN(GN(x)))


class CloStage(nn.Module):
    """One stage (official ``CloLayer``): ``depth`` blocks, the last of which downsamples to ``out_dim`` unless the
    stage is the last one. ``(B, C, H, W) -> (B, C_next, ceil(H/2), ceil(W/2))`` (last stage: unchanged)."""

    def __init__(self, stage: int, config: CloFormerConfig, drop_path: list[float]) -> None:
        super().__init__()
        dims, depth = config.embed_dims, config.depths[stage]
        dim, last_stage = dims[stage], stage == len(dims) - 1
        self.blocks = nn.ModuleList(
            CloBlock(stage, dim, dims[stage + 1], True, config, rate)  # the last block of stages 1-3 downsamples
            if j == depth - 1 and not last_stage
            else CloBlock(stage, dim, dim, False, config, rate)
            for j, rate in enumerate(drop_path)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class CloFormer(nn.Module):
    """CloFormer ``(B, in_chans, H, W) -> (B, num_classes)`` (official class name and layout).

    Quirk (official init): there is none. Every layer keeps PyTorch's default initialisation (Kaiming-uniform
    convs and head, BN and GN 1/0), unlike the trunc-normal(0.02) of the ViT families.
    """

    def __init__(self, config: CloFormerConfig) -> None:
        super().__init__()
        c = config
        lengths = {name: len(getattr(c, name)) for name in _STAGE_FIELDS}
        if len(set(lengths.values())) != 1 or not c.depths:
            raise ValueError(f"the per-stage fields must list the same (>0) number of stages, got lengths {lengths}")
        if not isinstance(c.num_classes, int) or c.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no head), got {c.num_classes!r}")
        if any(not isinstance(d, int) or d < 1 for d in c.depths):
            raise ValueError(
                f"depths must be positive integers (a stage needs at least its downsampling block), got {c.depths}"
            )
        self.maps = stage_maps(c)  # raises for an image size the pool windows do not fit
        self.config = c
        self.patch_embed = ConvStem(c.in_chans, c.embed_dims[0])
        # stochastic depth rises linearly over all blocks of all stages
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()
        starts = [sum(c.depths[:i]) for i in range(len(c.depths))]
        self.layers = nn.ModuleList(
            CloStage(i, c, rates[start : start + depth])
            for i, (start, depth) in enumerate(zip(starts, c.depths, strict=True))
        )
        self.norm = group_norm(c.embed_dims[-1])
        self.head = nn.Linear(c.embed_dims[-1], c.num_classes) if c.num_classes > 0 else nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """None by name: the official trainer skips only 1-D parameters and biases (norms, BN, biases), which
        `vitlocal.models.common.param_groups` skips as well."""
        return set()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, C_last)``: the last map, group-normalised and average-pooled."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.config.in_chans, "x")
        for side in sorted(set(x.shape[-2:])):
            if side != self.config.img_size:
                stage_maps(self.config, side)  # a clear error for a size the pool windows do not fit
        x = self.patch_embed(x)  # (B, C_1, H/4, W/4)
        for stage in self.layers:
            x = stage(x)  # (B, C_{i+1}, H_i/2, W_i/2); the last stage keeps its map
        return self.norm(x).mean(dim=(-2, -1))  # GN(1, C) -> AdaptiveAvgPool(1) -> flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _cloformer(overrides: dict, **preset: object) -> CloFormer:
    return CloFormer(configure(CloFormerConfig(**preset), overrides))


@register_model
def cloformer_xxs(**overrides: object) -> nn.Module:
    """CloFormer-XXS (``cloformer_xxs.yaml``): widths 32/64/128/256, heads 4/4/8/16, splits [3,1] [2,2] [4,4] [4,12],
    drop-path 0; 4.2M params, 0.6 GFLOPs, 77.0%."""
    return _cloformer(overrides)


@register_model
def cloformer_xs(**overrides: object) -> nn.Module:
    """CloFormer-XS (``cloformer_xs.yaml``): widths 48/96/160/352, heads 3/6/10/22, splits [2,1] [3,3] [5,5] [7,15],
    drop-path 0.06; 7.2M params, 1.1 GFLOPs, 79.8%."""
    return _cloformer(
        overrides,
        embed_dims=(48, 96, 160, 352),
        num_heads=(3, 6, 10, 22),
        group_splits=((2, 1), (3, 3), (5, 5), (7, 15)),
        drop_path_rate=0.06,
    )


@register_model
def cloformer_s(**overrides: object) -> nn.Module:
    """CloFormer-S (``cloformer_s.yaml``): widths 64/128/224/448, heads 4/8/14/28, splits [3,1] [4,4] [7,7] [7,21],
    drop-path 0.06; 12.3M params, 2.0 GFLOPs, 81.6%."""
    return _cloformer(
        overrides,
        embed_dims=(64, 128, 224, 448),
        num_heads=(4, 8, 14, 28),
        group_splits=((3, 1), (4, 4), (7, 7), (7, 21)),
        drop_path_rate=0.06,
    )


@register_model
def cloformer_global(**overrides: object) -> nn.Module:
    """Ablation (official ``cloformer_global``, ``cloformer_global.yaml``): CloFormer-XXS with every head global
    (pooled attention only, no AttnConv), splits [4] [4] [8] [16]."""
    return _cloformer(overrides, group_splits=((4,), (4,), (8,), (16,)), kernel_sizes=((), (), (), ()))


@register_model
def cloformer_no_global(**overrides: object) -> nn.Module:
    """Ablation (official ``cloformer_no_global``): CloFormer-XXS with every head local (AttnConv only), splits
    [4,0] [4,0] [8,0] [16,0]. With no pooled branch, any image size works. Drop-path 0 as XXS (the official
    factory function would use the class default 0.1; no yaml is released for it)."""
    return _cloformer(overrides, group_splits=((4, 0), (4, 0), (8, 0), (16, 0)))


@register_model
def cloformer_nano(**overrides: object) -> nn.Module:
    """A CloFormer for 32 px CIFAR-sized images that trains on a CPU. NOT from the papers: the first three stages of
    CloFormer-XXS (widths 32/64/128, heads 4/4/8, splits [3,1] [2,2] [4,4], AttnConv kernels 3/5/7), depths 2/2/2,
    on maps 8/4/2 with pool windows 2/1/1 (16, 16 and 4 global keys), 10 classes. Three stages, because a fourth
    would put the last shortcut's BatchNorm on a 1x1 map, which cannot train at batch size 1."""
    return _cloformer(
        overrides,
        num_classes=10,
        img_size=32,
        embed_dims=(32, 64, 128),
        depths=(2, 2, 2),
        num_heads=(4, 4, 8),
        group_splits=((3, 1), (2, 2), (4, 4)),
        kernel_sizes=((3,), (5,), (7,)),
        window_sizes=(2, 1, 1),
    )
