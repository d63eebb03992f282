"""Cross-attention fusion (CrossViT) and the paper's three other ways to fuse two branches.

CrossViT (Chen, Fan, Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", ICCV 2021, arXiv 2103.14899; official code: github.com/IBM/CrossViT,
``models/crossvit.py``) runs two transformer branches side by side: the S-branch (index 0: small
patches, many tokens, narrow width) and the L-branch (index 1: large patches, few tokens, wide). After
each multi-scale block the branches exchange information. Branch ``i`` holds tokens
``x_i = [cls_i || P_i]`` of shape ``(B, 1 + N_i, C_i)``; ``j`` is the other branch.

**Cross-attention fusion** (the paper's proposal and the official ``MultiScaleBlock``):

    cls'_i = f_i(cls_i)                        f_i = LN -> GELU -> Linear(C_i -> C_j)
    z_i    = [cls'_i || P_j]                   (B, 1 + N_j, C_j)
    y_i    = cls'_i + DropPath(CA(LN(z_i)))    the residual lives in the projected space (width C_j)
    out_i  = [g_i(y_i) || P_i]                 g_i = LN -> GELU -> Linear(C_j -> C_i)

where the cross-attention ``CA`` lets the class token alone ask the question:

    q = z[0] W_q,   K = z W_k,   V = z W_v        per head h of width d = C_j / heads_j
    CA(z) = concat_h(softmax(q_h K_h^T d^-0.5) V_h) W_o       (B, 1, C_j)

One query against ``1 + N_j`` keys costs ``O(N_j C_j)`` for the attention plus ``O(N_j C_j^2)`` for
``K`` and ``V``: linear in the token count, where self-attention over all tokens is quadratic.

**The other three schemes** (the paper's multi-scale feature fusion section, Fig. 3 and Table 4).
Only cross-attention has official code, so these follow the paper's equations; what the paper leaves
open is fixed here and said so. They meet in a common width ``D = max(C_0, C_1)`` (our choice; the
paper only calls ``f_i`` and ``g_i`` "projections to align dimensions"), with ``f_i: C_i -> D`` and
``g_i: D -> C_i`` built like the official projections (LN -> GELU -> Linear) where ``C_i != D`` and
the identity where ``C_i == D``. That is our choice too: it reproduces the paper's Table 4 cost for
CrossViT-S (+0.5M parameters for class-token and pairwise fusion, +0.2G MACs for pairwise fusion),
where projections on the wide branch as well would give +1.3M and +0.35G (Table 4 is marked
not checked against the paper's PDF):

    none:            out_i = x_i
    all-attention:   y = [f_0(x_0) || f_1(x_1)],   o = y + DropPath(MSA(LN(y))),   [o_0 || o_1] = o,   out_i = g_i(o_i)
    class-token:     s = f_0(cls_0) + f_1(cls_1),   out_i = [g_i(s) || P_i]
    pairwise:        s as above,   Q_i = f_i(P_i) + resize_{j->i}(f_j(P_j)),   out_i = g_i([s || Q_i])

``resize_{j->i}`` puts branch ``j``'s projected patch tokens on their square lattice and resizes that
grid bilinearly to branch ``i``'s grid (the paper aligns the two grids by interpolation without
saying which; bilinear is our choice).

Every scheme is a `Fusion`: ``forward(xs)`` maps ``[x_0, x_1]`` to ``[out_0, out_1]`` of the same
shapes, so a dual-branch model can swap one for another (`make_fusion`). `fusion_macs` counts the
multiply-accumulates of one fusion, for plotting cost against the token count.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vitlocal._checks import check_channels, check_divides, check_positive, check_rank
from vitlocal.attention import Attention, attend
from vitlocal.lattice import img2seq, join_cls, seq2img, split_cls, square_grid
from vitlocal.layers import DropPath

__all__ = [
    "FUSION_SCHEMES",
    "AllAttentionFusion",
    "ClassTokenFusion",
    "CrossAttention",
    "CrossAttentionBlock",
    "CrossAttentionFusion",
    "Fusion",
    "NoFusion",
    "PairwiseFusion",
    "Projection",
    "fusion_macs",
    "make_fusion",
]

FUSION_SCHEMES = ("none", "all_attention", "class_token", "pairwise", "cross_attention")

# quirk: the released CrossViT configs build every LayerNorm as partial(nn.LayerNorm, eps=1e-6)
# (the class default norm_layer=nn.LayerNorm, eps 1e-5, is never used by a released model).
LN_EPS = 1e-6


class Projection(nn.Sequential):
    """``f`` / ``g`` of CrossViT: ``LN -> GELU -> Linear(in_dim -> out_dim)``, ``(..., in_dim) -> (..., out_dim)``.

    Quirk: the official code always builds all three layers, even when ``in_dim == out_dim``; its
    identity shortcut for equal widths is switched off by ``... and False``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        check_positive(in_dim, "in_dim")
        check_positive(out_dim, "out_dim")
        super().__init__(
            OrderedDict(norm=nn.LayerNorm(in_dim, eps=LN_EPS), act=nn.GELU(), fc=nn.Linear(in_dim, out_dim))
        )


class CrossAttention(nn.Module):
    """Multi-head attention with the first token as the only query: ``(B, N, C) -> (B, 1, C)``.

    Args:
        dim: token width ``C``.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: bias on ``wq``, ``wk``, ``wv`` (every released CrossViT: True; the official class
            default is False).
        scale: logit scale; ``None`` means ``head_dim ** -0.5``.
        attn_drop, proj_drop: dropout on the attention weights and on the output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_divides(num_heads, dim, "num_heads", "dim")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5 if scale is None else scale
        # three separate Linear layers (not one fused qkv), as in the official CrossAttention
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x``: ``(B, N, C)``; returns ``(B, 1, C)`` (and the weights ``(B, heads, 1, N)`` if asked)."""
        check_rank(x, 3, "x", "(B, N, C)")
        check_channels(x, -1, self.dim, "x")
        if x.shape[1] < 1:
            raise ValueError(f"x has no tokens (shape {tuple(x.shape)}); the first token is the query")
        # quirk: the query is token 0 (the class token) only; K and V come from all tokens, itself included
        # q = z[0] W_q, K = z W_k, V = z W_v, split into heads of width d
        q = rearrange(self.wq(x[:, :1]), "b n (heads d) -> b heads n d", heads=self.num_heads)
        k = rearrange(self.wk(x), "b n (heads d) -> b heads n d", heads=self.num_heads)
        v = rearrange(self.wv(x), "b n (heads d) -> b heads n d", heads=self.num_heads)
        dropout_p = self.attn_drop if self.training else 0.0
        out = attend(q, k, v, self.scale, dropout_p=dropout_p, return_attn=return_attn)
        out, attn = out if return_attn else (out, None)
        # CA(z) = concat_h(A_h V_h) W_o, a single token
        y = self.proj_drop(self.proj(rearrange(out, "b heads n d -> b n (heads d)")))
        return (y, attn) if return_attn else y


class CrossAttentionBlock(nn.Module):
    """``y = z[:, :1] + DropPath(CA(LN(z)))``: ``(B, N, C) -> (B, 1, C)``, with no MLP.

    Quirk: the residual is the first token alone, so the block returns the class token only. The
    official block has an optional MLP, but CrossViT always builds it with ``has_mlp=False``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = CrossAttention(dim, num_heads, qkv_bias, scale, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, N, C)`` with the query token first; returns ``(B, 1, C)``."""
        return z[:, :1] + self.drop_path(self.attn(self.norm(z)))


class Fusion(nn.Module):
    """The common interface of the fusion schemes: ``[x_0, x_1] -> [out_0, out_1]``, shapes kept.

    ``xs[i]`` is ``(B, 1 + N_i, C_i)``: branch ``i``'s class token followed by its patch tokens, with
    ``C_i = dims[i]``.
    """

    def __init__(self, dims: tuple[int, int]) -> None:
        super().__init__()
        if not isinstance(dims, (tuple, list)) or len(dims) != 2:
            raise ValueError(f"dims must be the two branch widths (C_0, C_1), e.g. (192, 384), got {dims!r}")
        for i, dim in enumerate(dims):
            check_positive(dim, f"dims[{i}]")
        self.dims = tuple(dims)

    def check_inputs(self, xs: list[torch.Tensor]) -> None:
        """Raise unless ``xs`` is ``[x_0, x_1]`` with ``x_i`` of shape ``(B, 1 + N_i, dims[i])``."""
        if not isinstance(xs, (list, tuple)) or len(xs) != 2:
            got = f"{type(xs).__name__} of length {len(xs)}" if isinstance(xs, (list, tuple)) else type(xs).__name__
            raise ValueError(f"xs must be a list [x_0, x_1] with one (B, 1 + N_i, C_i) tensor per branch, got {got}")
        for i, (x, dim) in enumerate(zip(xs, self.dims, strict=True)):
            check_rank(x, 3, f"xs[{i}]", "(B, 1 + N, C)")
            check_channels(x, -1, dim, f"xs[{i}]")
            if x.shape[1] < 1:
                raise ValueError(f"xs[{i}] has no tokens (shape {tuple(x.shape)}); it must start with the class token")
        if xs[0].shape[0] != xs[1].shape[0]:
            raise ValueError(
                f"the branches have different batch sizes: xs[0] {tuple(xs[0].shape)}, xs[1] {tuple(xs[1].shape)}"
            )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``xs``: ``[(B, 1 + N_0, C_0), (B, 1 + N_1, C_1)]``; returns a list of the same shapes."""
        raise NotImplementedError


class NoFusion(Fusion):
    """The branches never exchange information: ``out_i = x_i``."""

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        return list(xs)


class CrossAttentionFusion(Fusion):
    """CrossViT's fusion: each branch's class token cross-attends to the other branch's patch tokens.

    For branch ``i`` (``j`` the other): ``z_i = [f_i(cls_i) || P_j]``, ``y_i = f_i(cls_i) +
    DropPath(CA(LN(z_i)))``, ``out_i = [g_i(y_i) || P_i]``. As in the official ``MultiScaleBlock``,
    branch ``i``'s cross-attention works at the OTHER branch's width ``C_j`` with the other branch's
    head count ``heads_j``, and branch ``i``'s patch tokens pass through unchanged. Quirk: the fusion
    has no MLP.

    Args:
        dims: ``(C_0, C_1)``, the branch widths.
        num_heads: ``(heads_0, heads_1)``, or one int for both.
        qkv_bias, scale, attn_drop, proj_drop: as in `CrossAttention`.
        drop_path: stochastic depth on the attention branch (the official model passes the last
            drop-path rate of the multi-scale block to both branches).
        depth: ``L`` of the official ``depth=[M, N, L]``. The released configs use ``L = 0``, which
            the code treats as exactly one cross-attention block per branch (so do 0 and 1 here).
            ``L > 1`` stacks ``L`` blocks; quirk: each block returns the class token alone, so every
            block after the first attends to that single token.
    Shapes: ``[(B, 1 + N_0, C_0), (B, 1 + N_1, C_1)]`` -> the same.
    """

    def __init__(
        self,
        dims: tuple[int, int],
        num_heads: int | tuple[int, int],
        qkv_bias: bool = True,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        depth: int = 0,
    ) -> None:
        super().__init__(dims)
        heads = _pair(num_heads)
        for i in range(2):  # branch j's heads split branch j's width inside branch i's cross-attention
            check_divides(heads[i], self.dims[i], f"num_heads[{i}]", f"dims[{i}]")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer (0 or 1: one cross-attention), got {depth!r}")
        c = self.dims
        self.f = nn.ModuleList(Projection(c[i], c[1 - i]) for i in range(2))  # f_i: C_i -> C_j
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    # branch i attends at width C_j with heads_j (the official fusion[i])
                    CrossAttentionBlock(c[1 - i], heads[1 - i], qkv_bias, scale, attn_drop, proj_drop, drop_path)
                    for _ in range(max(depth, 1))
                )
            )
            for i in range(2)
        )
        self.g = nn.ModuleList(Projection(c[1 - i], c[i]) for i in range(2))  # g_i: C_j -> C_i

    def _query_sequence(self, xs: list[torch.Tensor], i: int) -> torch.Tensor:
        """``z_i = [f_i(cls_i) || P_j]``: ``(B, 1 + N_j, C_j)``."""
        cls_i, _ = split_cls(xs[i])
        _, patches_j = split_cls(xs[1 - i])
        return join_cls(self.f[i](cls_i), patches_j)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        outs = []
        for i, x in enumerate(xs):
            # y_i = f_i(cls_i) + DropPath(CA(LN(z_i)))   quirk: the residual is in the projected space (width C_j)
            y = self.blocks[i](self._query_sequence(xs, i))
            # out_i = [g_i(y_i) || P_i]   branch i's own patch tokens are untouched
            outs.append(join_cls(self.g[i](y), split_cls(x)[1]))
        return outs

    def attention_weights(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each branch's class-token attention ``(B, heads_j, 1, 1 + N_j)`` over ``z_i`` (first block).

        Key 0 is the branch's own projected class token; keys ``1..N_j`` are the other branch's patch
        tokens, in row-major grid order (for attention-map figures).
        """
        self.check_inputs(xs)
        weights = []
        for i, blocks in enumerate(self.blocks):
            block = blocks[0]
            weights.append(block.attn(block.norm(self._query_sequence(xs, i)), return_attn=True)[1])
        return weights


class _CommonWidthFusion(Fusion):
    """Shared part of the paper-only schemes: ``f_i: C_i -> D`` and ``g_i: D -> C_i``, ``D = max(C_0, C_1)``.

    ``f_i`` and ``g_i`` are `Projection` where ``C_i != D`` and the identity where ``C_i == D``.
    """

    def __init__(self, dims: tuple[int, int]) -> None:
        super().__init__(dims)
        self.width = max(self.dims)
        self.f = nn.ModuleList(_align(c, self.width) for c in self.dims)
        self.g = nn.ModuleList(_align(self.width, c) for c in self.dims)


class AllAttentionFusion(_CommonWidthFusion):
    """All tokens of both branches self-attend together (paper only; no official code).

    ``y = [f_0(x_0) || f_1(x_1)]`` (every token, class tokens included, projected to the common width
    ``D``), ``o = y + DropPath(MSA(LN(y)))`` (one pre-norm attention, no MLP, residual at width ``D``),
    split back ``[o_0 || o_1] = o`` and ``out_i = g_i(o_i)``. The attention uses the head count of the
    widest branch (the L-branch on a tie) and costs ``O((N_0 + N_1)^2 D)``: quadratic in the tokens.
    Patch tokens change. For CrossViT-S this design adds 2.2M parameters and 2.1G MACs, less than the
    paper's Table 4 row (+4.0M, +2.3G, unverified); the paper does not say what else its module holds.

    Shapes: ``[(B, 1 + N_0, C_0), (B, 1 + N_1, C_1)]`` -> the same.
    """

    def __init__(
        self,
        dims: tuple[int, int],
        num_heads: int | tuple[int, int],
        qkv_bias: bool = True,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(dims)
        k = 0 if self.dims[0] > self.dims[1] else 1  # the widest branch
        heads = _pair(num_heads)[k]
        check_divides(heads, self.width, f"num_heads[{k}]", f"dims[{k}]")
        self.norm = nn.LayerNorm(self.width, eps=LN_EPS)
        self.attn = Attention(self.width, heads, qkv_bias, scale, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        # y = [f_0(x_0) || f_1(x_1)]: (B, 2 + N_0 + N_1, D)
        y = torch.cat([f(x) for f, x in zip(self.f, xs, strict=True)], dim=1)
        # o = y + DropPath(MSA(LN(y)))
        o = y + self.drop_path(self.attn(self.norm(y)))
        # [o_0 || o_1] = o,  out_i = g_i(o_i)
        return [g(o_i) for g, o_i in zip(self.g, o.split([x.shape[1] for x in xs], dim=1), strict=True)]


class ClassTokenFusion(_CommonWidthFusion):
    """The two class tokens are summed at the common width (paper only; no official code).

    ``s = f_0(cls_0) + f_1(cls_1)`` and ``out_i = [g_i(s) || P_i]``: exactly the paper's equation, with
    no residual to the old class token. Patch tokens pass through unchanged.

    Shapes: ``[(B, 1 + N_0, C_0), (B, 1 + N_1, C_1)]`` -> the same.
    """

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        # s = f_0(cls_0) + f_1(cls_1): (B, 1, D)
        s = self.f[0](xs[0][:, :1]) + self.f[1](xs[1][:, :1])
        # out_i = [g_i(s) || P_i]
        return [join_cls(g(s), split_cls(x)[1]) for g, x in zip(self.g, xs, strict=True)]


class PairwiseFusion(_CommonWidthFusion):
    """Patch tokens are summed location by location; class tokens as in class-token fusion (paper only).

    No official code. ``s = f_0(cls_0) + f_1(cls_1)``; ``Q_i = f_i(P_i) + resize_{j->i}(f_j(P_j))``;
    ``out_i = g_i([s || Q_i])``. The branches' grids differ in size (20x20 vs 14x14 in CrossViT), so,
    as the paper implies (it aligns the grids by interpolation without saying which), the OTHER
    branch's patch tokens are first projected to the common width ``D``, laid on their square
    lattice (`seq2img`), resized bilinearly (``align_corners=False``) to this branch's grid and
    flattened back (`img2seq`). Every token changes, patch tokens included.

    Shapes: ``[(B, 1 + h_0 * h_0, C_0), (B, 1 + h_1 * h_1, C_1)]`` -> the same (square grids).
    """

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.check_inputs(xs)
        grids = [_square_side(x, f"xs[{i}]") for i, x in enumerate(xs)]
        y = [f(x) for f, x in zip(self.f, xs, strict=True)]  # f_i on every token: (B, 1 + N_i, D)
        s = y[0][:, :1] + y[1][:, :1]  # s = f_0(cls_0) + f_1(cls_1)
        outs = []
        for i in range(2):
            j = 1 - i
            # resize_{j->i}: (B, h_j * h_j, D) -> (B, D, h_j, h_j) -> (B, D, h_i, h_i) -> (B, h_i * h_i, D)
            other = seq2img(y[j][:, 1:], grids[j], grids[j])
            other = img2seq(F.interpolate(other, size=(grids[i], grids[i]), mode="bilinear", align_corners=False))
            # out_i = g_i([s || f_i(P_i) + resize_{j->i}(f_j(P_j))])
            outs.append(self.g[i](join_cls(s, y[i][:, 1:] + other)))
        return outs


_SCHEMES: dict[str, type[Fusion]] = {
    "none": NoFusion,
    "all_attention": AllAttentionFusion,
    "class_token": ClassTokenFusion,
    "pairwise": PairwiseFusion,
    "cross_attention": CrossAttentionFusion,
}


def make_fusion(scheme: str, dims: tuple[int, int], num_heads: int | tuple[int, int], **kw: object) -> Fusion:
    """Build one of `FUSION_SCHEMES` for branch widths ``dims``.

    ``num_heads`` is used by the attention schemes (``all_attention``, ``cross_attention``) and
    ignored by the others, which have no attention; ``kw`` goes to the scheme's class (``qkv_bias``,
    ``drop_path``, ... for the attention schemes).
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {list(FUSION_SCHEMES)}, got {scheme!r}")
    if scheme in ("all_attention", "cross_attention"):
        return _SCHEMES[scheme](dims, num_heads, **kw)
    return _SCHEMES[scheme](dims, **kw)


def fusion_macs(
    scheme: str,
    dims: tuple[int, int],
    num_heads: int | tuple[int, int],
    num_tokens: tuple[int, int],
    batch_size: int = 1,
) -> int:
    """Multiply-accumulates of one forward of ``make_fusion(scheme, dims, num_heads)``.

    The inputs hold ``num_tokens[i]`` patch tokens plus the class token per branch. Counted with
    ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products only (Linear, bmm):
    LayerNorm, GELU, softmax, sums and the interpolation are free. It reports 2 FLOPs per
    multiply-accumulate; we halve it, since the papers' "FLOPs" are MACs. Attention runs under the
    math SDPA backend: with torch 2.13 on CPU the fused SDPA kernel is invisible to the counter
    (it reports 0), while the math backend's two ``bmm`` are counted.
    """
    if not isinstance(num_tokens, (tuple, list)) or len(num_tokens) != 2:
        raise ValueError(f"num_tokens must be the patch-token counts (N_0, N_1), got {num_tokens!r}")
    for i, n in enumerate(num_tokens):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"num_tokens[{i}] must be a non-negative number of patch tokens, got {n!r}")
    check_positive(batch_size, "batch_size")
    fusion = make_fusion(scheme, dims, num_heads).eval()
    xs = [torch.zeros(batch_size, 1 + n, c) for n, c in zip(num_tokens, fusion.dims, strict=True)]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fusion(xs)
    return counter.get_total_flops() // 2


def _align(in_dim: int, out_dim: int) -> nn.Module:
    """A `Projection` where the widths differ, the identity where they agree (paper-only schemes)."""
    return nn.Identity() if in_dim == out_dim else Projection(in_dim, out_dim)


def _pair(num_heads: int | tuple[int, int]) -> tuple[int, int]:
    """``num_heads`` as ``(heads_0, heads_1)``: one int serves both branches."""
    heads = (num_heads, num_heads) if isinstance(num_heads, int) else num_heads
    if not isinstance(heads, (tuple, list)) or len(heads) != 2:
        raise ValueError(f"num_heads must be an int or a pair (heads_0, heads_1), got {num_heads!r}")
    for i, h in enumerate(heads):
        check_positive(h, f"num_heads[{i}]")
    return tuple(heads)


def _square_side(x: torch.Tensor, name: str) -> int:
    """Side of the square grid of the patch tokens of ``x`` ``(B, 1 + N, C)``."""
    n = x.shape[1] - 1
    try:
        return square_grid(n)
    except ValueError:
        side = max(1, round(n**0.5))
        raise ValueError(
            f"{name} has N={n} patch tokens after the class token, but pairwise fusion needs a square grid "
            f"N = h * h, e.g. {side * side} or {(side + 1) ** 2}"
        ) from None
