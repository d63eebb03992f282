"""Slide attention (Slide-Transformer): local attention from shifts and depthwise convs.

Paper: Pan et al., "Slide-Transformer: Hierarchical Vision Transformer with Local Self-Attention", CVPR 2023
(arXiv 2304.04237). Official code: LeapLabTHU/Slide-Transformer, ``slide_transformer/models/slide_swin.py``
(class ``SlideAttention``).

Local attention lets every query pixel ``p = (y, x)`` attend over its ``k x k`` neighbourhood only. With
``r = k // 2`` and the neighbours numbered row-major over the window, ``j = u k + v`` at offset
``delta_j = (u - r, v - r)``:

    S[p, j] = q_p . k_{p + delta_j}          A[p, :] = softmax_j S[p, :]          y_p = sum_j A[p, j] v_{p + delta_j}

where keys and values outside the map are zeros (zero padding). Everything hinges on gathering the neighbourhood

    K[b, c, j, y, x] = Kpad[b, c, y + j // k, x + j % k]                                           (*)

and the paper shows three ways to build the same tensor:

1. Im2Col, the column view (`im2col`): for every pixel, gather its window. Memory-unfriendly on devices.
2. Shift, the row view (`shift`): row ``j`` of the gathered tensor is the whole padded map shifted by
   ``delta_j``, so ``k*k`` shifted copies make up the neighbourhood.
3. Depthwise conv (`shift_conv`): shifting by ``delta_j`` is a depthwise conv whose kernel ``e_j`` is one-hot
   at ``(j // k, j % k)`` (`one_hot_kernels`), so ONE conv with ``k*k`` outputs per channel builds (*).

Deformed shifting (`DeformedShift`) runs a learnable depthwise ``k x k`` kernel in parallel with the fixed
one-hot one. Both paths are linear, so they merge into a single conv (re-parameterisation):

    K = (W_onehot * x + b0) + (W_learn * x + b1) = (W_onehot + W_learn) * x + (b0 + b1)

and the forward computes the right-hand side, in training as well (`DeformedShift.merge` makes it permanent).

`SlideAttention` is the official module: a fused q/k/v Linear (head-major layout), one deformed shift shared
by K, V and all heads, a relative position bias added to the keys, softmax over the ``k*k`` neighbours with
zero-padded, unmasked borders, then the output projection. `local_attention_reference` is the naive loop the
tests compare it with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import nn

from vitlocal._checks import check_channels, check_divides, check_odd, check_positive, check_rank

__all__ = [
    "im2col",
    "shift",
    "shift_conv",
    "one_hot_kernels",
    "DeformedShift",
    "SlideAttention",
    "local_attention_reference",
]


def _check_map(x: torch.Tensor, kernel_size: int) -> None:
    check_rank(x, 4, "x", "(B, C, H, W)")
    check_odd(kernel_size)


def _pad(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad the last two axes by ``r = kernel_size // 2`` on every side: ``(..., H, W) -> (..., H+2r, W+2r)``."""
    r = kernel_size // 2
    return F.pad(x, (r, r, r, r))


def im2col(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The column view: gather every pixel's zero-padded ``k x k`` window.

    Args:
        x: ``(B, C, H, W)`` map.
        kernel_size: odd window size ``k``.
    Returns:
        ``(B, C, k*k, H, W)`` with ``out[b, c, j, y, x] == xpad[b, c, y + j // k, x + j % k]``.
    """
    _check_map(x, kernel_size)
    k, (h, w) = kernel_size, x.shape[-2:]
    window = torch.arange(k, device=x.device)
    rows = rearrange(window, "u -> u 1") + torch.arange(h, device=x.device)  # rows[u, y] = y + u
    cols = rearrange(window, "v -> v 1") + torch.arange(w, device=x.device)  # cols[v, x] = x + v
    # K[b, c, u, v, y, x] = Xpad[b, c, y + u, x + v]  (one gather with broadcast row and column indices)
    windows = _pad(x, k)[:, :, rearrange(rows, "u h -> u 1 h 1"), rearrange(cols, "v w -> 1 v 1 w")]
    # j = u k + v: row-major over the window, equation (*)
    return rearrange(windows, "b c u v h w -> b c (u v) h w")


def shift(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The row view: ``k*k`` shifted copies of the zero-padded map, stacked on a new neighbour axis.

    Args:
        x: ``(B, C, H, W)`` map.
        kernel_size: odd window size ``k``.
    Returns:
        ``(B, C, k*k, H, W)``, identical to `im2col`.
    """
    _check_map(x, kernel_size)
    return _Shift.apply(x, kernel_size)


def _overlap(delta: int, n: int) -> tuple[slice, slice]:
    """Along an axis of length ``n``, copy index ``y`` holds map index ``y + delta`` (the rest is padding):
    the map's indices that a copy shifted by ``delta`` holds, and where the copy holds them."""
    start, end = max(delta, 0), min(n + delta, n)  # map indices y + delta, 0 <= y < n
    return slice(start, max(start, end)), slice(start - delta, max(start, end) - delta)


class _Shift(torch.autograd.Function):
    """`shift`, with the transposed shift as its backward.

    The gradient of copy ``j`` goes back shifted by ``-delta_j``: ``dX = sum_j shift_{-delta_j}(dK[:, :, j])``,
    added in place into one map. (Autograd's own backward of the ``k*k`` slices zero-fills a padded map per
    copy and then sums the ``k*k`` maps: about twice the time of this one on a CPU.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        ctx.kernel_size = kernel_size
        k, (h, w) = kernel_size, x.shape[-2:]
        xpad = _pad(x, k)
        # K[:, :, j] = Xpad[:, :, u : u + H, v : v + W]: the whole map shifted by delta_j = (u - r, v - r)
        copies = [xpad[:, :, u : u + h, v : v + w] for u in range(k) for v in range(k)]
        return torch.stack(copies, dim=2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        k, r = ctx.kernel_size, ctx.kernel_size // 2
        h, w = grad.shape[-2:]
        dx = grad[:, :, k * k // 2].clone()  # the centre copy, delta = (0, 0)
        for j in range(k * k):
            du, dv = j // k - r, j % k - r
            if du == dv == 0:
                continue
            (rows, copy_rows), (cols, copy_cols) = _overlap(du, h), _overlap(dv, w)
            # K[:, :, j, y, x] = X[:, :, y + du, x + dv] where that is inside the map
            dx[:, :, rows, cols] += grad[:, :, j, copy_rows, copy_cols]
        return dx, None


def one_hot_kernels(
    kernel_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``k*k`` shift kernels ``e_i``: a ``(k*k, 1, k, k)`` depthwise weight, one-hot at ``(i // k, i % k)``."""
    check_odd(kernel_size)
    k = kernel_size
    # E[i, 0, u, v] = 1 iff u k + v == i: row i of the identity, laid out on the k x k window
    return rearrange(torch.eye(k * k, dtype=dtype, device=device), "i (u v) -> i 1 u v", u=k)


def _depthwise_one_hot(
    channels: int, kernel_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(channels*k*k, 1, k, k)``: output ``c*k*k + i`` of the depthwise conv shifts channel ``c`` by ``delta_i``."""
    # channel-major, then kernel row-major (the official order)
    return repeat(one_hot_kernels(kernel_size, dtype, device), "i 1 u v -> (c i) 1 u v", c=channels)


def shift_conv(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The depthwise-conv view: ONE depthwise conv with one-hot kernels produces all ``k*k`` shifts.

    Args:
        x: ``(B, C, H, W)`` map.
        kernel_size: odd window size ``k``.
    Returns:
        ``(B, C, k*k, H, W)``, identical to `im2col`.
    """
    _check_map(x, kernel_size)
    c, k = x.shape[1], kernel_size
    # K[:, c k^2 + j] = e_j * X[:, c]  (conv with zero padding r)
    y = F.conv2d(x, _depthwise_one_hot(c, k, x.dtype, x.device), padding=k // 2, groups=c)
    return rearrange(y, "b (c j) h w -> b c j h w", j=k * k)


def _depthwise_conv(channels: int, kernel_size: int, **factory: object) -> nn.Conv2d:
    """``Conv2d(C, k*k*C, k, padding=k//2, groups=C, bias=True)``: each channel gets ``k*k`` outputs of its own."""
    return nn.Conv2d(
        channels, kernel_size**2 * channels, kernel_size, padding=kernel_size // 2, groups=channels, **factory
    )


class DeformedShift(nn.Module):
    """Deformed shifting: fixed one-hot shifts plus a learnable parallel depthwise ``k x k`` conv.

    ``K = (W_onehot * x + b0) + (W_learn * x + b1)``, both ``Conv2d(C, k*k*C, k, padding=k//2, groups=C)``.

    Shapes: ``(B, C, H, W) -> (B, C*k*k, H, W)`` in the official channel-major order (channel ``c*k*k + j``), so
    that `merge` returns a drop-in replacement; ``rearrange(out, "b (c j) h w -> b c j h w", j=k*k)`` gives the
    `im2col` layout.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        check_positive(channels, "channels")
        check_odd(kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        # the fixed shifts (official `dep_conv`); quirk: a frozen Parameter (counted by parameters(), never trained)
        # holds the one-hot weight, while its bias stays learnable with PyTorch's default init
        self.onehot = _depthwise_conv(channels, kernel_size)
        self.onehot.weight = nn.Parameter(_depthwise_one_hot(channels, kernel_size), requires_grad=False)
        # the deformation (official `dep_conv1`); quirk: PyTorch default (Kaiming-uniform) init, NOT zero
        self.deform = _depthwise_conv(channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)``; returns ``(B, C*k*k, H, W)``, channel-major."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.channels, "x")
        # K = (W_onehot * x + b0) + (W_learn * x + b1) = (W_onehot + W_learn) * x + (b0 + b1): one conv instead of
        # the official two, in training too (less than half the time forward and backward on a CPU; the same
        # gradients for W_learn, b0 and b1, since both paths are linear)
        weight, bias = self.onehot.weight + self.deform.weight, self.onehot.bias + self.deform.bias
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2, groups=self.channels)

    @torch.no_grad()
    def merge(self) -> nn.Conv2d:
        """Re-parameterise both paths into ONE conv with the same output (not in the official repository).

        ``W = W_onehot + W_learn``, ``b = b0 + b1``: a fresh, trainable ``nn.Conv2d`` on the same device and dtype.
        """
        weight = self.onehot.weight + self.deform.weight
        merged = _depthwise_conv(self.channels, self.kernel_size, device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(weight)
        merged.bias.copy_(self.onehot.bias + self.deform.bias)
        return merged


class SlideAttention(nn.Module):
    """Slide attention ``(B, H, W, C) -> (B, H, W, C)``: multi-head local attention over ``k x k`` neighbourhoods.

    Per head ``h`` with width ``d = C / heads`` and neighbour ``j``:

        [q_h | k_h | v_h] = X W_qkv                         (quirk: head-major layout, not (3, heads, d))
        K_h = DeformedShift(k_h) + rpb[h, j],  V_h = DeformedShift(v_h)   (one shift for K, V and all heads)
        S[p, j] = (q_h d^-0.5)_p . K_h[p, j]               = q . k_{p+delta_j} + rpb[h, j] sum_d q_d + ...
        y_p = sum_j softmax_j(S[p, :]) V_h[p, j],   then concat over heads and ``proj``.

    The official forward takes tokens ``(B, L, C)`` and a resolution fixed at construction; here the map
    ``(B, H, W, C)`` carries its own resolution (tokens: ``x.view(B, H, W, C)``). The official ``qk_scale`` and
    ``padding_mode`` options are left out: Slide-Swin never changes them (``d^-0.5``, zeros). Linear layers keep
    PyTorch's default init; the model applies Swin's trunc-normal init.

    Args:
        dim: channels ``C``.
        num_heads: number of heads; must divide ``dim``.
        kernel_size: odd neighbourhood size ``k`` (official ``ka``, 3 in Slide-Swin).
        qkv_bias: bias on the fused q/k/v Linear.
        attn_drop, proj_drop: dropout on the attention weights and on the output.
        rpb: learn the relative position bias (official: always on).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        rpb: bool = True,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_divides(num_heads, dim, "num_heads", "dim")
        check_odd(kernel_size)
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # quirk: ONE deformed shift (official dep_conv + dep_conv1) serves K and V, and is shared by all heads
        self.shift: nn.Module = DeformedShift(self.head_dim, kernel_size)
        if rpb:
            # official `relative_position_bias_table`, shape (1, heads, 1, k*k, 1, 1), trunc-normal std 0.02
            self.rpb = nn.Parameter(torch.zeros(1, num_heads, 1, kernel_size**2, 1, 1))
            nn.init.trunc_normal_(self.rpb, std=0.02)
        else:
            self.register_parameter("rpb", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H, W, C)``; returns ``(B, H, W, C)``."""
        q, k, v = self._neighbourhoods(x)
        attn = self.attn_drop(self._logits(q, k).softmax(dim=2))  # softmax over the k*k neighbours
        # y_p = sum_j A[p, j] V[p, j]
        out = einsum(attn, v, "b heads j h w, b heads d j h w -> b heads d h w")
        # concat_h: channel h d + i (head-major, as in the official reshape)
        return self.proj_drop(self.proj(rearrange(out, "b heads d h w -> b h w (heads d)")))

    def attention_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-softmax logits ``S`` of ``x`` ``(B, H, W, C)``, shape ``(B, heads, k*k, H, W)``."""
        q, k, _ = self._neighbourhoods(x)
        return self._logits(q, k)

    def no_weight_decay(self) -> set[str]:
        """Parameter names to keep out of weight decay (the official model excludes the keyword of its rpb table)."""
        return set() if self.rpb is None else {"rpb"}

    def merge_(self) -> SlideAttention:
        """For inference: swap the two-path deformed shift for its single re-parameterised conv, in place."""
        if isinstance(self.shift, DeformedShift):
            self.shift = self.shift.merge()
        return self

    def _neighbourhoods(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scaled queries ``(B, heads, d, H, W)`` and shifted keys, values ``(B, heads, d, k*k, H, W)``."""
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            raise ValueError(
                f"x must be a (B, H, W, C) map, got tokens of shape {tuple(x.shape)}; "
                f"reshape them with x.view(B, H, W, C) (or lattice.seq2img, then permute)"
            )
        check_rank(x, 4, "x", "(B, H, W, C)")
        check_channels(x, -1, self.dim, "x")
        heads, kk = self.num_heads, self.kernel_size**2
        # quirk: head-major layout [q_h | k_h | v_h] per head; heads go to the batch axis for the shared shift
        q, k, v = rearrange(self.qkv(x), "b h w (heads three d) -> three (b heads) d h w", heads=heads, three=3)
        q = rearrange(q * self.scale, "(b heads) d h w -> b heads d h w", heads=heads)
        # K[b, heads, d, j, y, x] from the shift's channel-major output (d j)
        k, v = (rearrange(self.shift(t), "(b heads) (d j) h w -> b heads d j h w", heads=heads, j=kk) for t in (k, v))
        return q, k, v

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``S[p, j] = q_p . (K[p, j] + rpb[h, j])``.

        Shapes: q ``(B, heads, d, H, W)``, k ``(B, heads, d, k*k, H, W)`` -> ``(B, heads, k*k, H, W)``.

        Borders: zero padding, no mask (quirk): a padded neighbour's key is ``0 + b0 + b1 (+ learned taps) + rpb``.
        """
        if self.rpb is not None:
            # quirk: rpb is added to the KEYS, so its logit bias rpb[h, j] * sum_d q_d depends on the query
            k = k + self.rpb
        return einsum(q, k, "b heads d h w, b heads d j h w -> b heads j h w")


def local_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Naive local attention with Python loops over pixels (for tests; slow but obviously correct).

    Each query attends over its ``k x k`` neighbourhood of ZERO-PADDED keys and values; padded zeros take part in
    the softmax (no mask). No scale is applied: scale ``q`` beforehand.

    Args:
        q, k, v: ``(B, heads, d, H, W)``.
        kernel_size: odd neighbourhood size.
    Returns:
        ``(B, heads, d, H, W)``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(t, 5, name, "(B, heads, d, H, W)")
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    check_odd(kernel_size)
    n = kernel_size
    kpad, vpad = _pad(k, n), _pad(v, n)
    rows = []
    for y in range(q.shape[-2]):
        row = []
        for x in range(q.shape[-1]):
            keys = kpad[..., y : y + n, x : x + n].flatten(-2)  # (B, heads, d, n*n): the window centred on (y, x)
            values = vpad[..., y : y + n, x : x + n].flatten(-2)
            weights = (q[..., y, x, None] * keys).sum(dim=2).softmax(dim=-1)  # (B, heads, n*n)
            row.append((weights[:, :, None, :] * values).sum(dim=-1))  # (B, heads, d)
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)
