"""CrossViT: two transformer branches at two patch sizes that talk through cross-attention.

Paper: C.-F. Chen, Q. Fan, R. Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", ICCV 2021 (arXiv 2103.14899); official code https://github.com/IBM/CrossViT,
``models/crossvit.py`` (timm's ``crossvit_*_240`` is a faithful port of it).

Architecture (CrossViT-S at 240 px; branch 0 = S, branch 1 = L, as in the code):

    S-branch: the 240 image -> 12 x 12 patches -> 20 x 20 = 400 tokens, narrow (C_S = 192)
    L-branch: the image resized bicubically to 224 -> 16 x 16 patches -> 14 x 14 = 196 tokens, wide (C_L = 384)
    x_i = [cls_i | PatchEmbed_i(image_i)] + E_pos,i                      (B, 1 + N_i, C_i), own CLS and pos-embed
    K = 3 multi-scale blocks, each (depth [M, N, L] = [1, 4, 0]):
        x_S = M ViT blocks (x_S),   x_L = N ViT blocks (x_L)             the branches run independently
        [x_S, x_L] = Fusion([x_S, x_L])                                  cross-attention: each CLS queries the
                                                                         other branch's patch tokens
    logits = mean(head_S(LN_S(x_S)[:, 0]), head_L(LN_L(x_L)[:, 0]))      two heads, averaged

The ViT blocks are DeiT's pre-norm `vitlocal.models.vit.Block`; the fusion is `vitlocal.fusion`
(``fusion="cross_attention"``, the paper's design, or any of the paper's Table 4 ablations: ``"none"``,
``"all_attention"``, ``"class_token"``, ``"pairwise"``). The dagger models (CrossViT-9/15/18 dagger) replace each
linear patch embedding by a 3-conv stem (`ConvPatchEmbed`).

Names: Ti/S/B follow the width; in 9/15/18 the number is K x N (the L-branch's total depth).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitlocal._checks import check_channels, check_divides, check_positive, check_rank
from vitlocal.fusion import FUSION_SCHEMES, LN_EPS, Fusion, make_fusion
from vitlocal.lattice import img2seq
from vitlocal.models.common import PatchEmbed, check_img_size, init_vit_weights, resize_pos_embed
from vitlocal.models.official import Rule, register_converter, rename_keys
from vitlocal.models.registry import configure, register_model
from vitlocal.models.vit import Block

__all__ = [
    "CrossViTConfig",
    "ConvPatchEmbed",
    "MultiScaleBlock",
    "CrossViT",
    "branch_img_sizes",
    "convert_official_crossvit",
    "export_official_crossvit",
    "convert_timm_crossvit",
    "export_timm_crossvit",
    "crossvit_tiny",
    "crossvit_small",
    "crossvit_base",
    "crossvit_9",
    "crossvit_15",
    "crossvit_18",
    "crossvit_9_dagger",
    "crossvit_15_dagger",
    "crossvit_18_dagger",
    "crossvit_nano",
]


@dataclass
class CrossViTConfig:
    """A CrossViT model (defaults: CrossViT-Ti, official ``crossvit_tiny_224`` = timm ``crossvit_tiny_240``).

    Pairs are ``(S-branch, L-branch)``. ``depth`` holds one ``(M, N, L)`` per multi-scale block: ``M`` S-branch
    blocks, ``N`` L-branch blocks, and ``L`` cross-attention layers per branch (quirk: the released ``L = 0``
    means exactly one). ``img_scale`` sizes each branch's input: branch ``i`` sees ``int(img_size *
    img_scale[i])`` pixels (timm's rounding), so with the default scale the sizes that work are multiples of 120.
    The paper's 384 px fine-tuned dagger models (official ``crossvit_{15,18}_dagger_384``) are ``img_size=408,
    img_scale=(1.0, 384 / 408)``. ``drop_path_rate`` defaults to the official ``main.py``'s 0.1.
    """

    num_classes: int = 1000
    img_size: int = 240
    # quirk: the L-branch sees the 240 image bicubically resized to 224 (official code: img_size=[240, 224])
    img_scale: tuple[float, float] = (1.0, 224 / 240)
    patch_size: tuple[int, int] = (12, 16)
    in_chans: int = 3
    embed_dim: tuple[int, int] = (96, 192)
    depth: tuple[tuple[int, int, int], ...] = ((1, 4, 0),) * 3
    num_heads: tuple[int, int] = (3, 3)
    # quirk: the official config has a third entry (r_fusion), which nothing uses: the fusion has no MLP
    mlp_ratio: tuple[float, float] = (4.0, 4.0)
    qkv_bias: bool = True
    multi_conv: bool = False  # the dagger models' 3-conv stem instead of the linear patch embedding
    fusion: str = "cross_attention"  # one of vitlocal.fusion.FUSION_SCHEMES (paper Table 4)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1


def branch_img_sizes(img_size: int, img_scale: tuple[float, float]) -> tuple[int, int]:
    """The input size of each branch, ``int(img_size * scale)`` as timm computes it: ``(240, 224)`` at 240."""
    return tuple(int(img_size * scale) for scale in img_scale)


# The dagger stems as (kernel, stride, padding) per conv; widths C/4 -> C/2 -> C, ReLU between, no norm.
STEMS = {
    12: ((7, 4, 3), (3, 3, 0), (3, 1, 1)),  # 240 -> 60 -> 20 -> 20
    16: ((7, 4, 3), (3, 2, 1), (3, 2, 1)),  # 224 -> 56 -> 28 -> 14
}


class ConvPatchEmbed(nn.Module):
    """The dagger models' conv stem (official ``PatchEmbed(multi_conv=True)``): ``(B, 3, H, W) -> (B, N, C)``.

    ``Conv -> ReLU -> Conv -> ReLU -> Conv`` with widths ``C/4 -> C/2 -> C`` and total stride ``p``
    (see `STEMS`), giving the same ``(H/p) x (W/p)`` grid as the linear patch embedding.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if patch_size not in STEMS:
            raise ValueError(
                f"patch_size={patch_size} has no conv stem (multi_conv=True); the official stems exist for patch "
                f"sizes {sorted(STEMS)}"
            )
        check_img_size(img_size, patch_size, "branch input size", f"patch_size={patch_size}")
        self.grid = img_size // patch_size
        widths = (in_chans, embed_dim // 4, embed_dim // 2, embed_dim)
        layers: list[nn.Module] = []
        for k, (kernel, stride, padding) in enumerate(STEMS[patch_size]):
            layers += [nn.ReLU()] if k else []
            layers.append(nn.Conv2d(widths[k], widths[k + 1], kernel, stride, padding))
        self.proj = nn.Sequential(*layers)  # official keys proj.0, proj.2, proj.4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return img2seq(self.proj(x))  # b c h w -> b (h w) c


class MultiScaleBlock(nn.Module):
    """One multi-scale block: ``[x_S, x_L] -> [x_S, x_L]``, shapes ``[(B, 1 + N_S, C_S), (B, 1 + N_L, C_L)]``.

    Branch ``i`` runs ``depth[i]`` pre-norm ViT blocks on its own tokens, then ``fusion`` exchanges
    information between the branches.

    Quirk (stochastic depth): ``drop_path`` is this block's slice of the model's linear schedule, of length
    ``max(M, N) + L``. Block ``k`` of EITHER branch takes ``drop_path[k]`` (so the short S-branch reuses the first
    entries) and the fusion takes the last entry (with ``L = 0``: the same as the L-branch's last block).
    """

    def __init__(self, c: CrossViTConfig, depth: tuple[int, int, int], drop_path: list[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    Block(c.embed_dim[i], c.num_heads[i], c.mlp_ratio[i], c.qkv_bias, c.drop_rate, c.attn_drop_rate, dp)
                    for dp in drop_path[: depth[i]]
                )
            )
            for i in range(2)
        )
        self.fusion = _make_fusion(c, fusion_depth=depth[2], drop_path=drop_path[-1])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [blocks(x) for blocks, x in zip(self.blocks, xs, strict=True)]  # each branch on its own
        return self.fusion(xs)  # then they exchange information


def _make_fusion(c: CrossViTConfig, fusion_depth: int, drop_path: float) -> Fusion:
    """The fusion ``c.fusion`` with the keyword arguments its scheme takes (only the attention schemes take any)."""
    attention = dict(qkv_bias=c.qkv_bias, attn_drop=c.attn_drop_rate, proj_drop=c.drop_rate, drop_path=drop_path)
    kwargs = {"cross_attention": {**attention, "depth": fusion_depth}, "all_attention": attention}
    return make_fusion(c.fusion, c.embed_dim, c.num_heads, **kwargs.get(c.fusion, {}))


class CrossViT(nn.Module):
    """CrossViT: ``(B, in_chans, img_size, img_size) -> (B, num_classes)``, the mean of the two branch heads.

    Official key names throughout: ``patch_embed.i``, ``cls_token.i``, ``pos_embed.i``, ``blocks.k.blocks.i.j``,
    ``norm.i``, ``head.i``; only the fusion's layers are named after `vitlocal.fusion` (``blocks.k.fusion.{f,
    blocks,g}``), which `convert_official_crossvit` maps from the official ``projs`` / ``fusion`` /
    ``revert_projs`` (and `export_official_crossvit` back).
    """

    def __init__(self, config: CrossViTConfig) -> None:
        super().__init__()
        c = config
        _check_config(c)
        self.config = c
        self.branch_img_sizes = branch_img_sizes(c.img_size, c.img_scale)
        embed = ConvPatchEmbed if c.multi_conv else PatchEmbed
        self.patch_embed = nn.ModuleList(
            embed(self.branch_img_sizes[i], c.patch_size[i], c.in_chans, c.embed_dim[i]) for i in range(2)
        )
        # each branch has its own class token and learned position embedding over its 1 + N_i tokens
        self.cls_token = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, d)) for d in c.embed_dim)
        self.pos_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1 + pe.grid**2, d)) for pe, d in zip(self.patch_embed, c.embed_dim, strict=True)
        )
        self.pos_drop = nn.Dropout(c.drop_rate)

        # quirk: the drop-path rate rises linearly over sum(max(M, N) + L) steps (the official sum(N + L) for the
        # released M <= N); each multi-scale block takes the next max(M, N) + L of them
        steps = [max(m, n) + fusion_depth for m, n, fusion_depth in c.depth]
        dpr = torch.linspace(0, c.drop_path_rate, sum(steps), device="cpu").tolist()
        starts = [sum(steps[:k]) for k in range(len(steps))]
        self.blocks = nn.ModuleList(
            MultiScaleBlock(c, depth, dpr[start : start + n])
            for depth, start, n in zip(c.depth, starts, steps, strict=True)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(d, eps=LN_EPS) for d in c.embed_dim)
        self.head = nn.ModuleList(nn.Linear(d, c.num_classes) for d in c.embed_dim)  # quirk: one head per branch

        # official init: pos_embed and cls_token trunc-normal 0.02; Linear trunc-normal 0.02 with zero bias,
        # LN 1/0 (timm ``_init_weights``); convs (patch embeddings, dagger stems) keep PyTorch's default
        for token in (*self.pos_embed, *self.cls_token):
            nn.init.trunc_normal_(token, std=0.02)
        self.apply(init_vit_weights)

    def no_weight_decay(self) -> set[str]:
        """The class tokens and position embeddings of both branches.

        Quirk: the official ``no_weight_decay`` returns ``{'cls_token', 'pos_embed'}``, which timm 0.4.12's
        exact-name match never finds among the ParameterList names ``cls_token.0`` ...; we follow the intent (and
        timm's port, which names them ``cls_token_0`` ...), not that accident.
        """
        return {f"{name}.{i}" for name in ("cls_token", "pos_embed") for i in range(2)}

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_chans, H, W)`` images -> ``[(B, 1 + N_S, C_S), (B, 1 + N_L, C_L)]`` normalised tokens."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.config.in_chans, "x")
        size = self.config.img_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"x is {tuple(x.shape[-2:])} pixels but the model was built for img_size={size} (branch inputs "
                f"{self.branch_img_sizes}); resize the images, or build the model for their size"
            )
        xs = []
        for i, branch_size in enumerate(self.branch_img_sizes):
            # quirk: a branch whose size differs from the input's (the L-branch: 224) sees it bicubically resized
            image = (
                x
                if branch_size == size
                else F.interpolate(x, size=(branch_size, branch_size), mode="bicubic", align_corners=False)
            )
            tokens = self.patch_embed[i](image)  # (B, N_i, C_i)
            tokens = torch.cat([self.cls_token[i].expand(x.shape[0], -1, -1), tokens], dim=1)  # [cls_i | patches]
            xs.append(self.pos_drop(tokens + self.pos_embed[i]))  # + E_pos,i
        for block in self.blocks:
            xs = block(xs)
        return [norm(x_i) for norm, x_i in zip(self.norm, xs, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, img_size, img_size)`` -> logits ``(B, num_classes)``."""
        logits = [head(x_i[:, 0]) for head, x_i in zip(self.head, self.forward_features(x), strict=True)]
        return torch.stack(logits).mean(dim=0)  # quirk: the MEAN of the two heads (not their sum)


def _check_config(c: CrossViTConfig) -> None:
    """Raise a ValueError naming the field, the value and what works."""
    check_positive(c.num_classes, "num_classes")
    for name in ("img_scale", "patch_size", "embed_dim", "num_heads", "mlp_ratio"):
        value = getattr(c, name)
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"{name} must be a pair (S-branch, L-branch), got {value!r}")
    for i in range(2):
        check_positive(c.patch_size[i], f"patch_size[{i}]")
        check_positive(c.embed_dim[i], f"embed_dim[{i}]")
        check_divides(c.num_heads[i], c.embed_dim[i], f"num_heads[{i}]", f"embed_dim[{i}]")
        if not 0 < c.img_scale[i] <= 1:
            raise ValueError(f"img_scale[{i}]={c.img_scale[i]!r} must lie in (0, 1] (a branch sees a downsized image)")
    if not _valid_depth(c.depth):
        raise ValueError(
            f"depth must list one (M, N, L) per multi-scale block, with M, N >= 1 ViT blocks in the S- and L-branch "
            f"and L >= 0 cross-attention layers (0 means one), e.g. ((1, 4, 0),) * 3; got {c.depth!r}"
        )
    if c.fusion not in FUSION_SCHEMES:
        raise ValueError(f"fusion={c.fusion!r} is unknown; the paper's schemes are {list(FUSION_SCHEMES)}")
    if c.fusion != "cross_attention" and any(block[2] > 1 for block in c.depth):
        raise ValueError(
            f"depth with L > 1 stacks cross-attention layers: it needs fusion='cross_attention', not {c.fusion!r}"
        )
    if not isinstance(c.img_size, int) or isinstance(c.img_size, bool):
        raise ValueError(f"img_size={c.img_size!r} must be one integer (square images)")
    if not _fits(c.img_size, c):
        works = [s for s in range(1, 4 * c.img_size + 1000) if _fits(s, c)]
        nearby = [s for s in works if s < c.img_size][-1:] + [s for s in works if s > c.img_size][:2]
        raise ValueError(
            f"img_size={c.img_size} does not work: branch i sees int(img_size * img_scale[i]) pixels, here "
            f"{branch_img_sizes(c.img_size, c.img_scale)} for img_scale={tuple(c.img_scale)}, and each must be a "
            f"multiple of its patch size {tuple(c.patch_size)}; sizes that work nearby: {nearby}"
        )


def _valid_depth(depth: object) -> bool:
    """``depth`` is a non-empty sequence of ``(M, N, L)`` integer triples with ``M, N >= 1`` and ``L >= 0``."""
    if not isinstance(depth, (tuple, list)) or not depth:
        return False
    return all(
        isinstance(block, (tuple, list))
        and len(block) == 3
        and all(isinstance(d, int) for d in block)
        and min(block[:2]) >= 1
        and block[2] >= 0
        for block in depth
    )


def _fits(img_size: int, c: CrossViTConfig) -> bool:
    """Whether every branch input ``int(img_size * img_scale[i])`` is a positive multiple of its patch size."""
    sizes = branch_img_sizes(img_size, c.img_scale)
    return all(s >= p and s % p == 0 for s, p in zip(sizes, c.patch_size, strict=True))


def _renames(config: CrossViTConfig) -> list[Rule]:
    """The ``(official, ours)`` key renames: the fusion moves into `vitlocal.fusion.CrossAttentionFusion`.

    ``projs.i.{0,2}`` -> ``fusion.f.i.{norm,fc}``, ``revert_projs.i.{0,2}`` -> ``fusion.g.i.{norm,fc}`` (official
    ``Sequential(LN, GELU, Linear)``), and the cross-attention layers ``fusion.i.j.{norm1,attn}`` ->
    ``fusion.blocks.i.j.{norm,attn}``. Quirk: in a multi-scale block with ``L = 0`` (the released models) the
    official ``fusion.i`` is the one layer itself, not a Sequential: ``fusion.i.{norm1,attn}``.
    """
    layer = (("norm1", "norm"), ("attn", "attn"))
    unwrapped = [k for k, (_, _, fusion_depth) in enumerate(config.depth) if fusion_depth == 0]
    return [
        ("blocks.*.projs.*.0", "blocks.*.fusion.f.*.norm"),
        ("blocks.*.projs.*.2", "blocks.*.fusion.f.*.fc"),
        ("blocks.*.revert_projs.*.0", "blocks.*.fusion.g.*.norm"),
        ("blocks.*.revert_projs.*.2", "blocks.*.fusion.g.*.fc"),
        # the first rule that matches wins, so the L = 0 blocks' names come before the general ones
        *(
            (f"blocks.{k}.fusion.*.{official}", f"blocks.{k}.fusion.blocks.*.0.{ours}")
            for k in unwrapped
            for official, ours in layer
        ),
        *((f"blocks.*.fusion.*.*.{official}", f"blocks.*.fusion.blocks.*.*.{ours}") for official, ours in layer),
    ]


def export_official_crossvit(state: dict[str, torch.Tensor], model: CrossViT) -> dict[str, torch.Tensor]:
    """Our CrossViT state dict -> official IBM/CrossViT names (see `_renames`). The position embeddings keep the
    model's grids, ``(1, 1 + N_i, C_i)``."""
    return rename_keys(state, _renames(model.config), inverse=True)


@register_converter(CrossViT, inverse=export_official_crossvit, source="IBM/CrossViT")
def convert_official_crossvit(state: dict[str, torch.Tensor], model: CrossViT) -> dict[str, torch.Tensor]:
    """Official IBM/CrossViT state dict -> ours.

    The branch blocks, embeddings, norms and heads keep their names; the fusion is renamed (see `_renames`). A
    position embedding ``(1, 1 + N_i', C_i)`` trained at another size is resized (bicubic) to the model's
    ``(1, 1 + N_i, C_i)``.
    """
    ours = rename_keys(state, _renames(model.config))
    for i, patch_embed in enumerate(model.patch_embed):
        key = f"pos_embed.{i}"
        if key in ours and ours[key].shape[1] != model.pos_embed[i].shape[1]:
            ours[key] = resize_pos_embed(ours[key], (patch_embed.grid, patch_embed.grid))
    return ours


# (timm, official): quirk (timm): the port keeps every official name but the tokens', ``cls_token_0`` ... instead of
# the ParameterList's ``cls_token.0`` ... (its pretrained_filter_fn replaces the "." by "_")
_TIMM_NAMES: tuple[Rule, ...] = (("cls_token_*", "cls_token.*"), ("pos_embed_*", "pos_embed.*"))


def _is_timm_crossvit(keys: Collection[str]) -> bool:
    return any(key.startswith(("cls_token_", "pos_embed_")) for key in keys)


def export_timm_crossvit(state: dict[str, torch.Tensor], model: CrossViT) -> dict[str, torch.Tensor]:
    """Our CrossViT state dict -> timm's ``crossvit_*``: the official names with timm's token names."""
    return rename_keys(export_official_crossvit(state, model), _TIMM_NAMES, inverse=True)


@register_converter(
    CrossViT, inverse=export_timm_crossvit, layout="timm", source="timm crossvit_*", detect=_is_timm_crossvit
)
def convert_timm_crossvit(state: dict[str, torch.Tensor], model: CrossViT) -> dict[str, torch.Tensor]:
    """timm's CrossViT state dict -> ours: ``cls_token_i`` / ``pos_embed_i`` to the official ``cls_token.i`` /
    ``pos_embed.i``, then `convert_official_crossvit`."""
    return convert_official_crossvit(rename_keys(state, _TIMM_NAMES), model)


def _crossvit(overrides: dict, **preset: object) -> CrossViT:
    return CrossViT(configure(CrossViTConfig(**preset), overrides))


# ---------------------------------------------------------------- CrossViT-Ti / S / B (paper Table 2)
@register_model
def crossvit_tiny(**overrides: object) -> nn.Module:
    """CrossViT-Ti (official ``crossvit_tiny_224``): widths 96 / 192, depth [1, 4, 0] x 3, 3 heads, MLP 4."""
    return _crossvit(overrides, embed_dim=(96, 192), num_heads=(3, 3), mlp_ratio=(4.0, 4.0))


@register_model
def crossvit_small(**overrides: object) -> nn.Module:
    """CrossViT-S (official ``crossvit_small_224``): widths 192 / 384, depth [1, 4, 0] x 3, 6 heads, MLP 4.

    The paper's fusion ablation (Table 4) is this model with ``fusion="none" | "all_attention" | "class_token" |
    "pairwise"``.
    """
    return _crossvit(overrides, embed_dim=(192, 384), num_heads=(6, 6), mlp_ratio=(4.0, 4.0))


@register_model
def crossvit_base(**overrides: object) -> nn.Module:
    """CrossViT-B (official ``crossvit_base_224``): widths 384 / 768, depth [1, 4, 0] x 3, 12 heads, MLP 4."""
    return _crossvit(overrides, embed_dim=(384, 768), num_heads=(12, 12), mlp_ratio=(4.0, 4.0))


# ---------------------------------------------------------------- CrossViT-9 / 15 / 18, with dagger stems (Table 3)
_9 = dict(embed_dim=(128, 256), depth=((1, 3, 0),) * 3, num_heads=(4, 4), mlp_ratio=(3.0, 3.0))
_15 = dict(embed_dim=(192, 384), depth=((1, 5, 0),) * 3, num_heads=(6, 6), mlp_ratio=(3.0, 3.0))
_18 = dict(embed_dim=(224, 448), depth=((1, 6, 0),) * 3, num_heads=(7, 7), mlp_ratio=(3.0, 3.0))


@register_model
def crossvit_9(**overrides: object) -> nn.Module:
    """CrossViT-9 (official ``crossvit_9_224``): widths 128 / 256, depth [1, 3, 0] x 3, 4 heads, MLP 3."""
    return _crossvit(overrides, **_9)


@register_model
def crossvit_15(**overrides: object) -> nn.Module:
    """CrossViT-15 (official ``crossvit_15_224``): widths 192 / 384, depth [1, 5, 0] x 3, 6 heads, MLP 3."""
    return _crossvit(overrides, **_15)


@register_model
def crossvit_18(**overrides: object) -> nn.Module:
    """CrossViT-18 (official ``crossvit_18_224``): widths 224 / 448, depth [1, 6, 0] x 3, 7 heads, MLP 3."""
    return _crossvit(overrides, **_18)


@register_model
def crossvit_9_dagger(**overrides: object) -> nn.Module:
    """CrossViT-9 dagger (official ``crossvit_9_dagger_224``): CrossViT-9 with the 3-conv stems."""
    return _crossvit(overrides, **_9, multi_conv=True)


@register_model
def crossvit_15_dagger(**overrides: object) -> nn.Module:
    """CrossViT-15 dagger (official ``crossvit_15_dagger_224``): CrossViT-15 with the 3-conv stems."""
    return _crossvit(overrides, **_15, multi_conv=True)


@register_model
def crossvit_18_dagger(**overrides: object) -> nn.Module:
    """CrossViT-18 dagger (official ``crossvit_18_dagger_224``): CrossViT-18 with the 3-conv stems."""
    return _crossvit(overrides, **_18, multi_conv=True)


# ---------------------------------------------------------------- CPU preset (NOT from the paper)
@register_model
def crossvit_nano(**overrides: object) -> nn.Module:
    """A CrossViT for 32 px CIFAR-sized images that trains on a CPU. NOT from the paper: S-branch patch 4 on the
    32 px image (8 x 8 tokens, width 64), L-branch patch 8 on the image resized to 24 px (3 x 3 tokens, width 128),
    depth [1, 2, 0] x 2, 4 heads, MLP 3, 10 classes."""
    return _crossvit(
        overrides,
        num_classes=10,
        img_size=32,
        img_scale=(1.0, 0.75),
        patch_size=(4, 8),
        embed_dim=(64, 128),
        depth=((1, 2, 0),) * 2,
        num_heads=(4, 4),
        mlp_ratio=(3.0, 3.0),
    )
