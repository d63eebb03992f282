"""AttnConv and pooled global attention (CloFormer), on ``(B, C, H, W)`` maps.

Paper: Fan et al., "Rethinking Local Perception in Lightweight Vision Transformer" (CloFormer),
arXiv 2303.17803. Official code: qhfan/CloFormer, ``classification/models/blocks.py``
(``EfficientAttention``, ``AttnMap``, ``ConvFFN``).

CloFormer splits the ``heads`` heads of width ``d = C / heads`` of one attention layer into local
groups and one global group (``group_split = [m_1, ..., g]``).

**Local branch, AttnConv** ("high frequency"), for ``m`` heads, ``c = m d`` channels:

    [Q | K | V] = DW_k(X W_qkv)                    W_qkv: C -> 3c; ONE depthwise k x k conv over all 3c
    A           = tanh(FC(Swish(FC(Q * K))) d^-0.5)   FC: c -> c (1x1 conv), Swish(x) = x sigmoid(x)
    Y_local     = A * V                             (* is the Hadamard product)

The depthwise conv on V is the "shared-weight" aggregation of a conv (every position uses the same
k x k filter); the depthwise convs on Q and K give the context from which the "context-aware"
weights ``A`` are made. ``A`` lies in [-1, 1] and is not normalised (no softmax).

**Global branch** ("low frequency"), for ``g`` heads: the keys and values come from the map
average-pooled by ``window`` (``N_k = (H / window) (W / window)`` keys), the queries from every pixel:

    Q        = X W_q                               W_q: C -> g d, N = H W queries
    [K | V]  = AvgPool_window(X) W_kv              W_kv: C -> 2 g d
    Y_global = softmax(Q K^T d^-0.5) V              per head, no position bias

**Fusion** ("concat + FC"): ``Y = concat(Y_local_1, ..., Y_global) W_o`` with ``W_o: C -> C`` (1x1 conv).

**ConvFFN**: ``Y = Drop(FC2(Drop(DW_k,s(GELU(FC1 X)))))``, the block's feed-forward; its depthwise
conv may have stride 2, which is where CloFormer downsamples.

**Norm**: CloFormer normalises with ``GroupNorm(1, C)`` (`group_norm`), not a LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal._checks import check_channels, check_divides, check_odd, check_positive, check_rank
from vitlocal.attention import attend

__all__ = ["AttnConv", "CloAttention", "ConvFFN", "PooledGlobalAttention", "group_norm"]


def _head_dim(dim: int, num_heads: int, head_dim: int | None) -> int:
    """``head_dim`` if given, else ``dim / num_heads`` (which must then be an integer)."""
    check_positive(dim, "dim")
    check_positive(num_heads, "num_heads")
    if head_dim is None:
        check_divides(num_heads, dim, "num_heads", "dim")
        return dim // num_heads
    check_positive(head_dim, "head_dim")
    return head_dim


def _check_map(x: torch.Tensor, dim: int) -> None:
    check_rank(x, 4, "x", "(B, C, H, W)")
    check_channels(x, 1, dim, "x")


class AttnConv(nn.Module):
    """CloFormer's local branch ``(B, C, H, W) -> (B, m d, H, W)``: context-aware weights times DW-aggregated V.

    Args:
        dim: input width ``C``.
        num_heads: the ``m`` local heads of this group.
        head_dim: head width ``d``; in CloFormer ``d = C / (all heads)``, so pass it; ``None`` means
            ``C / m`` (a standalone layer whose output is as wide as its input).
        kernel_size: odd size ``k`` of the depthwise conv.
        qkv_bias: bias on the ``C -> 3 m d`` projection.
        attn_drop: dropout on the weights ``A``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        kernel_size: int = 3,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = _head_dim(dim, num_heads, head_dim)
        check_odd(kernel_size, "kernel_size")
        self.kernel_size = kernel_size
        self.scale = self.head_dim**-0.5
        width = num_heads * self.head_dim  # c = m d
        self.qkv = nn.Conv2d(dim, 3 * width, 1, bias=qkv_bias)
        # quirk: ONE depthwise conv over the concatenated [Q | K | V] channels (a separate k x k filter each)
        self.dwconv = nn.Conv2d(3 * width, 3 * width, kernel_size, padding=kernel_size // 2, groups=3 * width)
        # quirk: the FCs mix all c channels of the group (not per head), both with bias
        self.context = nn.Sequential(nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1))  # SiLU = Swish
        self.attn_drop = nn.Dropout(attn_drop)

    def _weights_and_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_map(x, self.dim)
        # [Q | K | V] = DW_k(X W_qkv)
        q, k, v = rearrange(self.dwconv(self.qkv(x)), "b (three c) h w -> three b c h w", three=3)
        # quirk: FC-Swish-FC, THEN the scale d^-0.5, THEN tanh: A = tanh(FC(Swish(FC(Q * K))) d^-0.5), no softmax
        a = torch.tanh(self.context(q * k) * self.scale)
        return a, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)``; returns ``Y_local = A * V`` of shape ``(B, m d, H, W)``."""
        a, v = self._weights_and_values(x)
        return self.attn_drop(a) * v  # quirk: attention dropout acts on the tanh weights

    def context_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The context-aware weights ``A`` in [-1, 1], ``(B, m d, H, W)`` (before dropout; for figures)."""
        return self._weights_and_values(x)[0]


class PooledGlobalAttention(nn.Module):
    """CloFormer's global branch ``(B, C, H, W) -> (B, g d, H, W)``: every pixel attends to the pooled map.

    Args:
        dim: input width ``C``.
        num_heads: the ``g`` global heads.
        head_dim: head width ``d``; ``None`` means ``C / g``.
        window: average-pool window and stride for the keys and values; it must divide ``H`` and ``W``.
            ``1`` means no pooling (the official code swaps the pool for an identity), i.e. plain
            global attention over all ``H W`` pixels. CloFormer uses 8, 4, 2, 1 per stage.
        qkv_bias: bias on the query and key/value projections.
        attn_drop: dropout on the softmax weights.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        window: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = _head_dim(dim, num_heads, head_dim)
        check_positive(window, "window")
        self.window = window
        self.scale = self.head_dim**-0.5
        self.q = nn.Conv2d(dim, num_heads * self.head_dim, 1, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, 2 * num_heads * self.head_dim, 1, bias=qkv_bias)
        self.attn_drop = attn_drop

    def _attend(self, x: torch.Tensor, return_attn: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_map(x, self.dim)
        h, w = x.shape[-2:]
        check_divides(self.window, h, "window", "H")
        check_divides(self.window, w, "window", "W")
        # Q = X W_q on the full-resolution map: N = H W queries
        q = rearrange(self.q(x), "b (heads d) h w -> b heads (h w) d", heads=self.num_heads)
        pooled = F.avg_pool2d(x, self.window) if self.window > 1 else x
        # [K | V] = AvgPool_window(X) W_kv: (H / window)(W / window) keys; quirk: no position bias
        k, v = rearrange(self.kv(pooled), "b (two heads d) i j -> two b heads (i j) d", two=2, heads=self.num_heads)
        dropout_p = self.attn_drop if self.training else 0.0
        # Y = softmax(Q K^T d^-0.5) V
        out = attend(q, k, v, self.scale, dropout_p=dropout_p, return_attn=return_attn)
        out, attn = out if return_attn else (out, None)
        return rearrange(out, "b heads (h w) d -> b (heads d) h w", h=h), attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` with ``window`` dividing ``H`` and ``W``; returns ``(B, g d, H, W)``."""
        return self._attend(x, return_attn=False)[0]

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights ``(B, g, H W, (H / window)(W / window))`` of every pixel over the pooled keys."""
        return self._attend(x, return_attn=True)[1]


class CloAttention(nn.Module):
    """CloFormer's attention (official ``EfficientAttention``): local AttnConv groups + a global group, concat + FC.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        dim: width ``C``; ``num_heads`` must divide it, ``d = C / num_heads``.
        num_heads: all heads of the layer.
        group_split: heads per group, ``[m_1, ..., m_L, g]``: one entry per local group, the LAST entry is
            the global group. Entries are >= 0 and sum to ``num_heads``. Empty groups are skipped, as in
            the official code: ``[4]`` is global-only, ``[4, 0]`` local-only.
        kernel_sizes: the odd DW kernel of each local group, ``len(kernel_sizes) == len(group_split) - 1``.
        window_size: pool window of the global group (must divide ``H`` and ``W`` when ``g > 0``).
        attn_drop: dropout on the local tanh weights and the global softmax weights.
        proj_drop: dropout after the fusion FC.
        qkv_bias: bias on every q/k/v projection and (quirk: the official code reuses the flag) on the fusion FC.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_split: list[int],
        kernel_sizes: list[int],
        window_size: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_heads, "num_heads")
        check_divides(num_heads, dim, "num_heads", "dim")
        _check_split(num_heads, group_split, kernel_sizes)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.group_split = list(group_split)
        self.local = nn.ModuleList(
            AttnConv(dim, m, self.head_dim, k, qkv_bias, attn_drop)
            for m, k in zip(group_split[:-1], kernel_sizes, strict=True)
            if m > 0
        )
        g = group_split[-1]
        self.global_attn = (
            PooledGlobalAttention(dim, g, self.head_dim, window_size, qkv_bias, attn_drop) if g > 0 else None
        )
        self.proj = nn.Conv2d(dim, dim, 1, bias=qkv_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)``; returns ``(B, C, H, W)``."""
        _check_map(x, self.dim)
        branches = [attn_conv(x) for attn_conv in self.local]
        if self.global_attn is not None:
            branches.append(self.global_attn(x))
        # Y = concat(Y_local_1, ..., Y_global) W_o  (concat on the channel axis, then a 1x1 conv)
        return self.proj_drop(self.proj(torch.cat(branches, dim=1)))


def _check_split(num_heads: int, group_split: list[int], kernel_sizes: list[int]) -> None:
    if not group_split or any(not isinstance(m, int) or isinstance(m, bool) or m < 0 for m in group_split):
        raise ValueError(f"group_split must be a non-empty list of head counts >= 0, got {group_split!r}")
    if sum(group_split) != num_heads:
        raise ValueError(
            f"group_split={group_split} sums to {sum(group_split)} heads, but num_heads={num_heads}; "
            f"the local groups and the last (global) entry must add up to num_heads"
        )
    if len(kernel_sizes) != len(group_split) - 1:
        raise ValueError(
            f"kernel_sizes={kernel_sizes} needs one kernel per local group, i.e. {len(group_split) - 1} entries "
            f"for group_split={group_split} (its last entry is the global group)"
        )
    for i, k in enumerate(kernel_sizes):
        check_odd(k, f"kernel_sizes[{i}]")


class ConvFFN(nn.Module):
    """CloFormer's feed-forward ``(B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))``.

    ``Conv1x1 -> GELU -> DWConv k x k (stride s, pad k // 2) -> Dropout -> Conv1x1 -> Dropout``, every conv
    with bias. Stride 2 (the last block of stages 1-3) halves an even map.

    Args:
        in_dim, hidden_dim, out_dim: widths (CloFormer: ``hidden = 4 in_dim``; ``out_dim`` is the next
            stage's width in a downsampling block).
        kernel_size: odd DW kernel (CloFormer: 5).
        stride: DW stride (CloFormer: 1, or 2 in the downsampling block).
        drop: dropout after the DW conv and after the second 1x1 conv.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, kernel_size: int = 5, stride: int = 1, drop: float = 0.0
    ) -> None:
        super().__init__()
        for value, name in ((in_dim, "in_dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim"), (stride, "stride")):
            check_positive(value, name)
        check_odd(kernel_size, "kernel_size")
        self.in_dim = in_dim
        self.fc1 = nn.Conv2d(in_dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, stride, kernel_size // 2, groups=hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, out_dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, H, W)``; returns ``(B, C_out, ceil(H / s), ceil(W / s))``."""
        _check_map(x, self.in_dim)
        x = self.dwconv(self.act(self.fc1(x)))  # quirk: no activation after the DW conv
        return self.drop(self.fc2(self.drop(x)))


def group_norm(dim: int) -> nn.GroupNorm:
    """CloFormer's norm, ``GroupNorm(1, dim)`` on ``(B, C, H, W)`` maps.

    Quirk: one group means the mean and variance are taken jointly over (C, H, W) of each sample,
    and only the affine scale and shift are per channel. This is NOT a per-pixel channel LayerNorm.
    """
    check_positive(dim, "dim")
    return nn.GroupNorm(1, dim)
