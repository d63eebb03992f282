"""CvT: the Convolutional vision Transformer.

Paper: H. Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021 (arXiv 2103.15808).
Official code: https://github.com/microsoft/CvT (``lib/models/cls_cvt.py``, configs
``experiments/imagenet/cvt/cvt-{13,21}-{224x224,384x384}.yaml``).

Architecture (CvT-13 at 224 px; three stages, each a small ViT on its own map, no position embedding anywhere):

    stage i = 1, 2, 3:
        X_i = LN(Conv2d_{k_i, s_i, p_i}(X_{i-1}))      conv token embedding: 7/4/2, 3/2/1, 3/2/1
                                                    (B, 3, 224, 224) -> 56x56x64 -> 28x28x192 -> 14x14x384
        tokens = [x_cls |] Flatten(X_i)             the class token exists in stage 3 only
        repeat depth_i (1 / 2 / 10) times, pre-norm:
            x = x + DropPath(ConvProjAttn(LN(x), h, w))   depthwise 3x3 conv + BN before each of the q/k/v
                                                          Linear maps, stride 2 on K/V; scale C^-0.5
            x = x + DropPath(MLP(LN(x)))                  Linear(C, 4C) -> QuickGELU -> Linear(4C, C)
        X_i = Reshape2D(patch tokens)               the next stage's input map
    logits = Linear(LN(x_cls))

The mechanisms come from `vitlocal.convproj` (`ConvEmbed`, `ConvProjectionAttention`) and `vitlocal.layers`
(`Mlp`, `QuickGELU`, `DropPath`). Module names follow the official code (``stage0.patch_embed.proj``,
``stage0.blocks.0.attn.conv_proj_q.conv``, ``stage2.cls_token``, ``norm``, ``head`` ...), so official
checkpoints load as they are.

Ablations by override: ``stride_kv=1`` (no "squeezed" K/V, paper Table 7: 6.55 vs 4.53 GFLOPs);
``method="avg"`` (average-pooled K/V, as the official code offers); non-overlapping patch embedding instead of
the overlapping conv embedding: ``patch_size=(4, 2, 2), patch_stride=(4, 2, 2), patch_padding=(0, 0, 0)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from vitlocal._checks import check_channels, check_rank
from vitlocal.convproj import ConvEmbed, ConvProjectionAttention, LayerNorm32
from vitlocal.lattice import img2seq, join_cls, seq2img, split_cls
from vitlocal.layers import DropPath, Mlp, QuickGELU
from vitlocal.models.common import init_vit_weights
from vitlocal.models.official import register_converter
from vitlocal.models.registry import configure, register_model

__all__ = [
    "CvTConfig",
    "stage_grids",
    "drop_path_rates",
    "CvTBlock",
    "CvTStage",
    "ConvolutionalVisionTransformer",
    "convert_official_cvt",
    "export_official_cvt",
    "cvt_13",
    "cvt_21",
    "cvt_nano",
]

_STAGE_FIELDS = ("patch_size", "patch_stride", "patch_padding", "embed_dim", "num_heads", "depth")


@dataclass
class CvTConfig:
    """A CvT model (defaults: CvT-13, official ``cvt-13-224x224.yaml``); tuples hold one entry per stage.

    ``img_size`` is the nominal input size (FLOP counts, checks): with no position embedding the network runs at
    any size whose stage maps are positive. ``drop_path_rate`` is per stage (official ``DROP_PATH_RATE``); a single
    float ``r`` means the official pattern ``(0, ..., 0, r)``: stochastic depth in the last stage only. The class
    token always lives in the last stage. Q uses stride 1 and padding ``kernel_qkv // 2`` (the residual needs
    Q's map to keep its size).
    """

    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3
    patch_size: tuple[int, ...] = (7, 3, 3)  # conv token embedding k / s / p per stage
    patch_stride: tuple[int, ...] = (4, 2, 2)
    patch_padding: tuple[int, ...] = (2, 1, 1)
    embed_dim: tuple[int, ...] = (64, 192, 384)
    num_heads: tuple[int, ...] = (1, 3, 6)
    depth: tuple[int, ...] = (1, 2, 10)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float | tuple[float, ...] = (0.0, 0.0, 0.1)
    method: str = "dw_bn"  # conv projection: "dw_bn" (depthwise conv + BN) or "avg" (average-pooled K/V)
    kernel_qkv: int = 3
    stride_kv: int = 2  # "squeezed" K/V; 1 is the paper's Table 7 ablation
    padding_kv: int = 1
    # NOT in the released code (every stage runs without one): the paper's Table 5 ablation adds a learned
    # absolute position embedding to each stage's tokens; True builds it (then the input size is fixed)
    pos_embed: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _trace_grids(config: CvTConfig, img_size: int) -> tuple[list[int], str | None]:
    """Stage map sides for an ``img_size`` square image, and the first reason it fails (``None`` if it fits)."""
    c, side, sides = config, img_size, []
    for i, (k, s, p) in enumerate(zip(c.patch_size, c.patch_stride, c.patch_padding, strict=True)):
        if side + 2 * p < k:
            return sides, f"stage {i + 1}'s {side}x{side} input is smaller than its embedding conv (k={k}, p={p})"
        side = (side + 2 * p - k) // s + 1  # h_i = (h_{i-1} + 2p - k) // s + 1
        for padding, name in ((c.kernel_qkv // 2, "Q"), (c.padding_kv, "K/V")):
            if side + 2 * padding < c.kernel_qkv:
                return sides, f"stage {i + 1}'s {side}x{side} map is smaller than its {name} kernel {c.kernel_qkv}"
        sides.append(side)
    return sides, None


def stage_grids(config: CvTConfig, img_size: int | None = None) -> list[int]:
    """The side of each stage's map for a square ``img_size`` image (default ``config.img_size``).

    ``h_i = (h_{i-1} + 2 p_i - k_i) // s_i + 1``: 56, 28, 14 at 224 and 96, 48, 24 at 384 for CvT-13/21.
    Raises a ValueError naming the smallest size that works when a map would be empty.
    """
    size = config.img_size if img_size is None else img_size
    if not _is_int(size) or size < 1:
        raise ValueError(f"img_size must be a positive integer (square images), got {size!r}")
    sides, problem = _trace_grids(config, size)
    if problem is not None:
        smallest = next(s for s in itertools.count(size + 1) if _trace_grids(config, s)[1] is None)
        raise ValueError(
            f"img_size={size} is too small for this CvT: {problem}. CvT has no position embedding, so every size "
            f"from {smallest} px up works"
        )
    return sides


def drop_path_rates(config: CvTConfig) -> list[list[float]]:
    """Stochastic-depth rate of every block, stage by stage.

    Quirk (official): each stage has its own ``DROP_PATH_RATE`` and rises linearly from 0 over that stage's
    blocks only: CvT-13 gets ``[0], [0, 0], linspace(0, 0.1, 10)``. (HuggingFace indexes one rate per stage.)
    """
    rates = config.drop_path_rate
    n = len(config.depth)
    if isinstance(rates, (int, float)) and not isinstance(rates, bool):
        rates = (0.0,) * (n - 1) + (float(rates),)  # a single rate: the official pattern, last stage only
    if not isinstance(rates, tuple) or len(rates) != n:
        raise ValueError(f"drop_path_rate must be one float or a tuple of {n} floats (one per stage), got {rates!r}")
    if not all(0.0 <= r < 1.0 for r in rates):
        raise ValueError(f"drop_path_rate values must lie in [0, 1), got {rates!r}")
    return [
        torch.linspace(0, rate, depth, device="cpu").tolist() for rate, depth in zip(rates, config.depth, strict=True)
    ]


class CvTBlock(nn.Module):
    """Pre-norm transformer block with convolutional projection: ``(B, P + h*w, C) -> (B, P + h*w, C)``.

    ``x = x + DropPath(ConvProjAttn(LN_1(x), h, w))``, then ``x = x + DropPath(MLP(LN_2(x)))``; ``P = 1`` when the
    sequence starts with the class token (stage 3), else 0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        config: CvTConfig,
        with_cls_token: bool,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        c = config
        self.norm1 = LayerNorm32(dim, eps=1e-5)  # quirk: LayerNorm computed in fp32, eps 1e-5
        self.attn = ConvProjectionAttention(
            dim,
            dim,
            num_heads,
            qkv_bias=c.qkv_bias,
            kernel_size=c.kernel_qkv,
            stride_q=1,
            stride_kv=c.stride_kv,
            padding_q=c.kernel_qkv // 2,
            padding_kv=c.padding_kv,
            with_cls_token=with_cls_token,
            attn_drop=c.attn_drop_rate,
            proj_drop=c.drop_rate,
            method=c.method,
        )
        self.drop_path = DropPath(drop_path)  # one module for both branches, as in the official block
        self.norm2 = LayerNorm32(dim, eps=1e-5)
        # quirk: QuickGELU x * sigmoid(1.702 x), not nn.GELU (HuggingFace's port uses nn.GELU)
        self.mlp = Mlp(dim, int(dim * c.mlp_ratio), act_layer=QuickGELU, drop=c.drop_rate)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``x``: ``(B, P + h*w, C)`` with the patch tokens on an ``h x w`` lattice."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))  # x = x + DropPath(Attn(LN(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))  # x = x + DropPath(MLP(LN(x)))


class CvTStage(nn.Module):
    """One stage (official ``VisionTransformer``): ``(B, C_in, H, W) -> ((B, C, h, w), (B, 1, C) or None)``.

    Conv token embedding -> [class token] -> embedding dropout -> blocks -> the patch tokens back on their map,
    the class token returned separately. No position embedding (quirk: no parameter is even created), unless the
    ``pos_embed=True`` ablation asks for one.
    """

    def __init__(self, stage: int, in_chans: int, config: CvTConfig, drop_path: list[float]) -> None:
        super().__init__()
        c = config
        dim, with_cls_token = c.embed_dim[stage], stage == len(c.depth) - 1
        self.patch_embed = ConvEmbed(
            in_chans, dim, c.patch_size[stage], c.patch_stride[stage], c.patch_padding[stage]
        )  # X_i = LN(Conv2d_{k, s, p}(X_{i-1}))
        # quirk: the class token exists only in the last stage; zeros, then trunc-normal(0.02) (below)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.pos_embed = None
        if c.pos_embed:  # ablation only: one learned vector per position of this stage's map (Table 5)
            side = stage_grids(c)[stage]
            self.pos_embed = nn.Parameter(torch.zeros(1, side * side, dim))
        self.pos_drop = nn.Dropout(c.drop_rate)  # official name; it drops the embedded tokens
        self.blocks = nn.ModuleList(CvTBlock(dim, c.num_heads[stage], c, with_cls_token, rate) for rate in drop_path)

        # quirk: official init ('trunc_norm'), run as each stage is built (so, from one seed, the weights equal the
        # official model's): Linear trunc-normal(0.02) with zero bias, LN 1/0 (BN's PyTorch default is already
        # 1/0); convs keep PyTorch's default
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_vit_weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch_embed(x)  # (B, C, h, w)
        h, w = x.shape[-2:]
        x = img2seq(x)  # b c h w -> b (h w) c
        if self.pos_embed is not None:
            if self.pos_embed.shape[1] != h * w:
                raise ValueError(
                    f"this CvT has a position embedding for {self.pos_embed.shape[1]} tokens per map, but the input "
                    f"gives a {h}x{w} map; feed the img_size it was built for"
                )
            x = x + self.pos_embed  # z = x + E_pos (patch tokens only; the class token joins after)
        if self.cls_token is not None:
            x = join_cls(self.cls_token.expand(x.shape[0], -1, -1), x)  # [x_cls | patches]
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, h, w)
        cls, patches = split_cls(x, int(self.cls_token is not None))
        return seq2img(patches, h, w), (cls if self.cls_token is not None else None)


class ConvolutionalVisionTransformer(nn.Module):
    """CvT ``(B, in_chans, H, W) -> (B, num_classes)`` (official class name; stages ``stage0`` ... ``stage2``)."""

    def __init__(self, config: CvTConfig) -> None:
        super().__init__()
        c = config
        for name in _STAGE_FIELDS:
            values, least = getattr(c, name), 0 if name == "patch_padding" else 1
            if not isinstance(values, (tuple, list)) or not all(_is_int(v) and v >= least for v in values):
                raise ValueError(f"{name} must be a tuple of integers >= {least}, one per stage; got {values!r}")
        lengths = {name: len(getattr(c, name)) for name in _STAGE_FIELDS}
        if len(set(lengths.values())) != 1 or not c.depth:
            raise ValueError(f"the per-stage fields must list the same (>0) number of stages, got lengths {lengths}")
        if not isinstance(c.num_classes, int) or c.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no head), got {c.num_classes!r}")
        self.grids = stage_grids(c)  # raises below the smallest image size that works
        rates = drop_path_rates(c)
        self.config = c
        self.num_stages = len(c.depth)
        in_chans = c.in_chans
        for i in range(self.num_stages):
            setattr(self, f"stage{i}", CvTStage(i, in_chans, c, rates[i]))  # official names stage0, stage1, ...
            in_chans = c.embed_dim[i]
        self.norm = LayerNorm32(c.embed_dim[-1], eps=1e-5)
        self.head = nn.Linear(c.embed_dim[-1], c.num_classes) if c.num_classes > 0 else nn.Identity()

        # quirk: the stages initialise themselves; the head gets only trunc_normal_(head.weight, 0.02), so its
        # bias keeps PyTorch's default uniform init (and the final LN its 1/0)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)

    @property
    def stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    def no_weight_decay(self) -> set[str]:
        """The class token (official ``no_weight_decay``; BN, LN and biases are 1-D and skipped by the trainer,
        as the official ``WITHOUT_WD_LIST: ['bn', 'bias', 'ln']``)."""
        names = {f"stage{i}.cls_token" for i, stage in enumerate(self.stages) if stage.cls_token is not None}
        return names | {f"stage{i}.pos_embed" for i, stage in enumerate(self.stages) if stage.pos_embed is not None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, C)``: the last stage's class token, layer-normalised."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.config.in_chans, "x")
        cls = None
        for stage in self.stages:
            x, cls = stage(x)  # (B, C_i, h_i, w_i), class token of the last stage
        # quirk NOT replicated: the official torch.squeeze drops the batch axis at B = 1; x[:, 0] keeps it
        return self.norm(cls)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def export_official_cvt(
    state: dict[str, torch.Tensor], model: ConvolutionalVisionTransformer
) -> dict[str, torch.Tensor]:
    """Our CvT state dict -> official microsoft/CvT: the names and layouts are already the official ones."""
    return dict(state)


@register_converter(ConvolutionalVisionTransformer, inverse=export_official_cvt, source="microsoft/CvT")
def convert_official_cvt(
    state: dict[str, torch.Tensor], model: ConvolutionalVisionTransformer
) -> dict[str, torch.Tensor]:
    """Official microsoft/CvT state dict -> ours: the same names and layouts, so this only strips a
    ``DistributedDataParallel`` ``module.`` prefix. HuggingFace ``transformers`` checkpoints (``cvt.encoder...``)
    are a different format and are refused (`load_official` then checks every key and shape strictly)."""
    if any(key.startswith("cvt.") for key in state):
        raise ValueError(
            "this is a HuggingFace transformers CvT checkpoint (keys 'cvt.encoder...'); load the official "
            "microsoft/CvT release (keys 'stage0.patch_embed.proj.weight', ...) instead"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _cvt(overrides: dict, **preset: object) -> ConvolutionalVisionTransformer:
    return ConvolutionalVisionTransformer(configure(CvTConfig(**preset), overrides))


@register_model
def cvt_13(**overrides: object) -> nn.Module:
    """CvT-13 (``cvt-13-224x224.yaml``): widths 64/192/384, heads 1/3/6, depths 1/2/10; 20.0M params,
    4.5 GFLOPs, 81.6%. ``img_size=384`` is ``cvt-13-384x384.yaml`` (16.3 GFLOPs, 83.0%)."""
    return _cvt(overrides)


@register_model
def cvt_21(**overrides: object) -> nn.Module:
    """CvT-21 (``cvt-21-224x224.yaml``): depths 1/4/16; 31.6M params (published 32M), 7.1 GFLOPs, 82.5%."""
    return _cvt(overrides, depth=(1, 4, 16))


@register_model
def cvt_nano(**overrides: object) -> nn.Module:
    """A CvT for 32 px CIFAR-sized images that trains on a CPU. NOT from the papers: CvT-13's embeddings and
    conv projection on maps 8/4/2 (the 8x8 first map matches `deit_nano`'s grid), widths 32/64/128, heads
    1/2/4, depths 1/1/2, 10 classes."""
    return _cvt(overrides, num_classes=10, img_size=32, embed_dim=(32, 64, 128), num_heads=(1, 2, 4), depth=(1, 1, 2))
