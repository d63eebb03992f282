"""DeiT and LocalViT: one plain Vision Transformer whose feed-forward can be made local, block by block.

Papers: H. Touvron et al., "Training data-efficient image transformers & distillation through attention"
(DeiT, arXiv 2012.12877; official code https://github.com/facebookresearch/deit, ``models.py``, which is
timm's ``VisionTransformer``), and Y. Li et al., "LocalViT: Bringing Locality to Vision Transformers"
(arXiv 2104.05707; official code https://github.com/ofsoundof/LocalViT, ``models/localvit.py``).

Architecture (pre-norm ViT, 224 px, patch 16, so a 14 x 14 grid of N = 196 patch tokens):

    X = [x_cls | PatchEmbed(image)] + E_pos                    (B, 1 + N, C), E_pos learned, 1 + N entries
    repeat depth times:
        X = X + DropPath(MHSA(LN(X)))                          every block, all 1 + N tokens
        DeiT block:      X = X + DropPath(MLP(LN(X)))          token-wise Linear(C, γC) -> GELU -> Linear(γC, C)
        LocalViT block:  X = [x_cls | LFF(T on its h x w lattice)]   1x1 -> BN -> σ -> DW 3x3 -> BN -> σ -> SE
                                                                   -> 1x1 -> BN, residual inside; x_cls skips it
    logits = Linear(LN(X)[:, 0])                               the class token's final state

DeiT and LocalViT differ only in that feed-forward (`vitlocal.locality.LocalViTBlock` replaces the plain
block) and in the head counts (LocalViT-T/S: 4/8 heads, DeiT-Ti/S: 3/6). ``locality_layers`` chooses
which blocks get the locality FFN: ``"none"`` is DeiT, ``"all"`` is LocalViT, ``"low"`` / ``"mid"`` /
``"high"`` (or a ``+`` of them, or a tuple of block indices) is the paper's placement ablation, where
the lower, middle and upper thirds of the 12 blocks are blocks 0-3, 4-7 and 8-11.

LocalViT's ablations by override: ``activation="relu6"`` vs ``"hswish"``; ``gate=None`` /
``"se"`` / ``"eca"`` / ``"eca_hard"``; ``depthwise=False`` (no depthwise conv: the no-locality control);
``mlp_ratio`` (γ); ``reduction`` (SE's r, which divides the hidden width γC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vitlocal._checks import check_channels, check_positive, check_rank
from vitlocal.attention import Attention
from vitlocal.layers import DropPath, Mlp
from vitlocal.locality import LocalViTBlock
from vitlocal.models.common import PatchEmbed, check_img_size, init_vit_weights, resize_pos_embed
from vitlocal.models.official import Rule, register_converter, rename_keys
from vitlocal.models.registry import configure, register_model

__all__ = [
    "ViTConfig",
    "Block",
    "VisionTransformer",
    "locality_blocks",
    "convert_official_keys",
    "export_official_keys",
    "deit_tiny",
    "deit_small",
    "deit_base",
    "deit_nano",
    "localvit_tiny",
    "localvit_tiny_se4",
    "localvit_tiny_mlp6_act1",
    "localvit_small",
    "localvit_nano",
]

THIRDS = ("low", "mid", "high")


@dataclass
class ViTConfig:
    """Everything that defines a DeiT / LocalViT model; every field can be overridden in `create_model`.

    The LocalViT fields (``activation`` ... ``kernel_size``) act only on the blocks in ``locality_layers``.
    ``drop_path_rate`` defaults to the training recipe's 0.1 (DeiT and LocalViT ``main.py``), rising
    linearly from 0 in the first block to this value in the last.
    """

    num_classes: int = 1000
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0  # γ: hidden width of the FFN is γC
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # which blocks get LocalViT's locality FFN: "none" (DeiT), "all" (LocalViT), "low"/"mid"/"high"
    # thirds joined by "+", or a tuple of block indices
    locality_layers: str | tuple[int, ...] = "none"
    activation: str = "hswish"  # "hswish" or "relu6" (official act=1)
    gate: str | None = "se"  # None, "se", "eca", "eca_hard"
    reduction: int = 4  # SE's r; quirk: it divides the hidden width γC, not C
    depthwise: bool = True  # False: official wo_dp_conv, the no-locality control
    kernel_size: int = 3


def locality_blocks(layers: str | Sequence[int], depth: int) -> tuple[int, ...]:
    """The sorted block indices that ``layers`` names (see `ViTConfig.locality_layers`).

    ``"low"``, ``"mid"`` and ``"high"`` are the thirds ``[0, d/3)``, ``[d/3, 2d/3)``, ``[2d/3, d)`` of
    ``depth = d`` blocks (floored); ``"low+mid"`` joins them; ``"all"`` and ``"none"`` are what they say.
    """
    if isinstance(layers, str):
        if layers in ("all", "none"):
            return tuple(range(depth)) if layers == "all" else ()
        parts = layers.split("+")
        if any(part not in THIRDS for part in parts):
            raise ValueError(
                f"locality_layers={layers!r} is unknown; use 'all', 'none', one of {list(THIRDS)} or several "
                f"joined by '+' (e.g. 'low+mid'), or a tuple of block indices in [0, {depth})"
            )
        bounds = [depth * k // 3 for k in range(4)]
        return tuple(i for k, part in enumerate(THIRDS) if part in parts for i in range(bounds[k], bounds[k + 1]))
    indices = tuple(layers)
    bad = [i for i in indices if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth]
    if bad or len(set(indices)) != len(indices):
        raise ValueError(
            f"locality_layers={layers!r} must list distinct block indices in [0, {depth}) (depth={depth}); bad: {bad}"
        )
    return tuple(sorted(indices))


class Block(nn.Module):
    """The plain DeiT block (official timm ``Block``): ``(B, N, C) -> (B, N, C)``.

    ``X = X + DropPath(MHSA(LN_1(X)))``, then ``X = X + DropPath(MLP(LN_2(X)))`` on every token.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # quirk: DeiT's LN eps is 1e-6, not PyTorch's 1e-5
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)  # one module serves both branches, as in the official timm 0.3.2
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))  # X = X + DropPath(MHSA(LN_1(X)))
        return x + self.drop_path(self.mlp(self.norm2(x)))  # X = X + DropPath(MLP(LN_2(X)))


class VisionTransformer(nn.Module):
    """DeiT with LocalViT's locality FFN in the blocks ``config.locality_layers`` names.

    ``(B, in_chans, img_size, img_size) -> (B, num_classes)``. Official key names throughout
    (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.{norm1,attn,norm2,mlp}`` or
    ``blocks.i.{norm1,attn,conv}``, ``norm``, ``head``).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = config
        if not isinstance(c.img_size, int) or isinstance(c.img_size, bool):
            raise ValueError(
                f"img_size={c.img_size!r} must be one integer (square images): LocalViT recovers its token grid "
                f"as int(sqrt(N)), so only square grids work"
            )
        check_img_size(c.img_size, c.patch_size, "img_size", f"patch_size={c.patch_size}")
        for name in ("num_classes", "depth", "embed_dim"):
            check_positive(getattr(c, name), name)
        self.config = c
        self.locality_layers = locality_blocks(c.locality_layers, c.depth)

        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        num_patches = self.patch_embed.grid**2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, c.embed_dim))  # quirk: 1 + N entries
        self.pos_drop = nn.Dropout(c.drop_rate)
        drop_path = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()  # stochastic depth decay
        self.blocks = nn.ModuleList(
            self._locality_block(c, drop_path[i]) if i in self.locality_layers else self._plain_block(c, drop_path[i])
            for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        self.head = nn.Linear(c.embed_dim, c.num_classes)

        # quirk: official init (timm 0.3.2 ``_init_weights``, which LocalViT also applies): Linear layers
        # (SE's included) trunc-normal 0.02 with zero bias, LN 1/0; pos_embed and cls_token trunc-normal 0.02
        # (timm 1.0 draws cls_token with std 1e-6 instead); convs and BNs keep PyTorch's default init.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    @staticmethod
    def _plain_block(c: ViTConfig, drop_path: float) -> Block:
        return Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.drop_rate, c.attn_drop_rate, drop_path)

    @staticmethod
    def _locality_block(c: ViTConfig, drop_path: float) -> LocalViTBlock:
        # quirks (inside LocalViTBlock): no norm2, no DropPath on the FFN branch, the class token skips the FFN
        return LocalViTBlock(
            c.embed_dim,
            c.num_heads,
            mlp_ratio=c.mlp_ratio,
            qkv_bias=c.qkv_bias,
            drop=c.drop_rate,
            attn_drop=c.attn_drop_rate,
            drop_path=drop_path,
            activation=c.activation,
            gate=c.gate,
            reduction=c.reduction,
            depthwise=c.depthwise,
            kernel_size=c.kernel_size,
        )

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not decay (official DeiT): the position embedding and the class token."""
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` images -> ``(B, 1 + N, C)`` normalised tokens, the class token first."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.config.in_chans, "x")
        size = self.config.img_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"x is {tuple(x.shape[-2:])} pixels but the model was built for img_size={size} (its position "
                f"embedding has {self.pos_embed.shape[1]} entries); resize the images or build it with "
                f"img_size={x.shape[-1]}"
            )
        x = self.patch_embed(x)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # X = [x_cls | patches]
        x = self.pos_drop(x + self.pos_embed)  # X = X + E_pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, img_size, img_size)`` -> logits ``(B, num_classes)`` from the class token."""
        return self.head(self.forward_features(x)[:, 0])


# (official, ours): LocalViT's ``SELayer`` keeps its two Linear layers in ``fc = Sequential(Linear, ReLU, Linear,
# h_sigmoid)``; ours are ``fc1`` / ``fc2``. DeiT's keys are ours.
_RENAMES: tuple[Rule, ...] = (
    ("blocks.*.conv.conv.*.fc.0", "blocks.*.conv.conv.*.fc1"),
    ("blocks.*.conv.conv.*.fc.2", "blocks.*.conv.conv.*.fc2"),
)


def export_official_keys(state: dict[str, torch.Tensor], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Our DeiT / LocalViT state dict -> official: the SE layers back to ``fc.0`` / ``fc.2``. The position
    embedding keeps the model's grid, ``(1, 1 + N, C)``."""
    return rename_keys(state, _RENAMES, inverse=True)


# quirk: DeiT's released code IS timm's VisionTransformer, whose keys timm's vit_* / deit_* still use (the layers
# timm added since, ls1 / fc_norm / norm_pre ..., have no parameters in these models): one converter reads both, and
# such a checkpoint is read as the official one (no key tells them apart)
@register_converter(
    VisionTransformer,
    inverse=export_official_keys,
    layout="timm",
    source="timm vit_* / deit_*, the official DeiT keys",
)
@register_converter(
    VisionTransformer, inverse=export_official_keys, source="facebookresearch/deit = timm vit_* / deit_*, LocalViT"
)
def convert_official_keys(state: dict[str, torch.Tensor], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Official DeiT / LocalViT state dict -> ours.

    DeiT's keys are ours; LocalViT's SE layers ``fc.0`` / ``fc.2`` become ``fc1`` / ``fc2``. A position
    embedding ``(1, 1 + N', C)`` trained at another size is resized (bicubic) to the model's ``(1, 1 + N, C)``.
    """
    ours = rename_keys(state, _RENAMES)
    if "pos_embed" in ours and ours["pos_embed"].shape[1] != model.pos_embed.shape[1]:
        grid = model.patch_embed.grid
        ours["pos_embed"] = resize_pos_embed(ours["pos_embed"], (grid, grid))
    return ours


def _vit(overrides: dict[str, object], **preset: object) -> VisionTransformer:
    return VisionTransformer(configure(ViTConfig(**preset), overrides))


# ---------------------------------------------------------------- DeiT (Table 1)
@register_model
def deit_tiny(**overrides: object) -> nn.Module:
    """DeiT-Ti: 192 wide, 12 blocks, 3 heads; 5.7M params, 1.3 GFLOPs, 72.2% (official ``deit_tiny_patch16_224``)."""
    return _vit(overrides, embed_dim=192, depth=12, num_heads=3)


@register_model
def deit_small(**overrides: object) -> nn.Module:
    """DeiT-S: 384 wide, 12 blocks, 6 heads; 22.1M params, 4.6 GFLOPs, 79.8% (``deit_small_patch16_224``)."""
    return _vit(overrides, embed_dim=384, depth=12, num_heads=6)


@register_model
def deit_base(**overrides: object) -> nn.Module:
    """DeiT-B: 768 wide, 12 blocks, 12 heads; 86.6M params, 17.6 GFLOPs, 81.8% (``deit_base_patch16_224``)."""
    return _vit(overrides, embed_dim=768, depth=12, num_heads=12)


# ---------------------------------------------------------------- LocalViT (Table 3, README)
@register_model
def localvit_tiny(**overrides: object) -> nn.Module:
    """LocalViT-T (official ``localvit_tiny_mlp4_act3_r192``): DeiT-Ti with the locality FFN in every block.

    quirk: 4 heads (DeiT-Ti has 3); γ = 4, h-swish + SE with r = 192 on the 768-wide hidden layer (4 units).
    5.9M params, 1.3 GFLOPs, 74.8%.
    """
    return _vit(overrides, embed_dim=192, depth=12, num_heads=4, locality_layers="all", reduction=192)


@register_model
def localvit_tiny_se4(**overrides: object) -> nn.Module:
    """LocalViT-T-SE4 (official ``localvit_tiny_mlp4_act3_r4``): SE with r = 4, i.e. 192 units; 9.4M, 75.74%."""
    return _vit(overrides, embed_dim=192, depth=12, num_heads=4, locality_layers="all", reduction=4)


@register_model
def localvit_tiny_mlp6_act1(**overrides: object) -> nn.Module:
    """The official ablation ``localvit_tiny_mlp6_act1``: LocalViT-T with γ = 6, ReLU6 and no channel gate."""
    return _vit(
        overrides,
        embed_dim=192,
        depth=12,
        num_heads=4,
        locality_layers="all",
        mlp_ratio=6.0,
        activation="relu6",
        gate=None,
    )


@register_model
def localvit_small(**overrides: object) -> nn.Module:
    """LocalViT-S (official ``localvit_small_mlp4_act3_r384``): DeiT-S with the locality FFN in every block.

    quirk: 8 heads (DeiT-S has 6); SE r = 384 on the 1536-wide hidden layer (4 units). 22.4M params, 80.8%.
    """
    return _vit(overrides, embed_dim=384, depth=12, num_heads=8, locality_layers="all", reduction=384)


# ---------------------------------------------------------------- CPU presets (NOT from the papers)
NANO = dict(num_classes=10, img_size=32, patch_size=4, embed_dim=64, depth=6, num_heads=4)


@register_model
def deit_nano(**overrides: object) -> nn.Module:
    """A DeiT for 32 px CIFAR-sized images that trains on a CPU. NOT from the papers: patch 4 (an 8 x 8 grid),
    64 wide, 6 blocks, 4 heads, 10 classes. Pairs with `localvit_nano` (same heads, only the FFN differs)."""
    return _vit(overrides, **NANO)


@register_model
def localvit_nano(**overrides: object) -> nn.Module:
    """`deit_nano` with the locality FFN in every block (SE r = 64: 4 units, as in LocalViT-T/S). NOT from
    the papers."""
    return _vit(overrides, **NANO, locality_layers="all", reduction=64)
