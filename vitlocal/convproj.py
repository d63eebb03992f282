"""Convolutional token embedding and convolutional projection (CvT).

Paper: Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021 (arXiv 2103.15808).
Official code: microsoft/CvT, ``lib/models/cls_cvt.py`` (``ConvEmbed``, ``Attention`` with ``method='dw_bn'``).

CvT brings locality into a ViT in two places and drops the position embedding altogether.

**Convolutional token embedding.** Each stage starts by convolving the previous stage's map
(or the image) with a strided, overlapping ``k x k`` kernel and layer-normalising every pixel:

    X_i = LN(Conv2d_{k, s, p}(X_{i-1}))      (B, C_in, H, W) -> (B, C, h, w),  h = (H + 2p - k) // s + 1

At 224 the three stages (7/4/2, 3/2/1, 3/2/1) give 56, 28 and 14 pixels per side.

**Convolutional projection** (``dw_bn``). Before the usual linear Q/K/V maps, the patch tokens are
put back on their ``h x w`` lattice and each of q, k and v gets its own depthwise conv + BatchNorm:

    x_q = Flatten(BN(DWConv_{k, s_q}(Reshape2D(x))))        s_q  = 1: h * w tokens
    x_k = Flatten(BN(DWConv_{k, s_kv}(Reshape2D(x))))       s_kv = 2: ceil(h/2) * ceil(w/2) tokens ("squeezed" K/V)
    x_v = Flatten(BN(DWConv_{k, s_kv}(Reshape2D(x))))       (separate weights from x_k)
    Q, K, V = [cls; x_q] W_q, [cls; x_k] W_k, [cls; x_v] W_v
    A_h = softmax(Q_h K_h^T * C_out^-0.5)                  (quirk: the full width, not d^-0.5)
    Y = concat_h(A_h V_h) W_o

The class token (stage 3 only) has no place on the lattice: it skips the depthwise convs and the
BatchNorm but still goes through the three linear maps. The ``avg`` method replaces the K/V convs by
an average pool (and Q's by a plain flatten). The official ``linear`` method is broken (its
``forward`` raises ``UnboundLocalError``); it is refused here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from einops import rearrange
from torch import nn

from vitlocal._checks import check_channels, check_divides, check_odd, check_positive, check_rank
from vitlocal.attention import attend
from vitlocal.lattice import img2seq, join_cls, seq2img, split_cls

__all__ = ["LayerNorm32", "ConvEmbed", "ConvProjectionAttention"]

_METHODS = ("dw_bn", "avg")


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in (at least) float32 and cast back: ``(..., C) -> (..., C)``.

    Quirk: CvT's ``LayerNorm`` runs in fp32 so that fp16 training stays stable (eps 1e-5). The
    official class casts to float32 unconditionally, which would also round float64 down; here a
    float64 input stays float64.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        return super().forward(x.to(dtype)).to(x.dtype)


class ConvEmbed(nn.Module):
    """Convolutional token embedding ``LN(Conv2d_{k, s, p}(x))``: ``(B, C_in, H, W) -> (B, dim, h, w)``.

    ``h = (H + 2 * padding - patch_size) // stride + 1`` (likewise ``w``). The conv has a bias; the
    LayerNorm (eps 1e-5, fp32) normalises each pixel over its ``dim`` channels. Official stages at
    224: ``(7, 4, 2)`` -> 56, ``(3, 2, 1)`` -> 28, ``(3, 2, 1)`` -> 14.

    Args:
        in_chans: input channels ``C_in`` (3 for the image, the previous stage's width after).
        dim: embedding width.
        patch_size, stride, padding: the conv's kernel size ``k``, stride ``s`` and zero padding ``p``.
    """

    def __init__(
        self, in_chans: int = 3, dim: int = 64, patch_size: int = 7, stride: int = 4, padding: int = 2
    ) -> None:
        super().__init__()
        for value, name in ((in_chans, "in_chans"), (dim, "dim"), (patch_size, "patch_size"), (stride, "stride")):
            check_positive(value, name)
        _check_padding(padding, "padding")
        self.in_chans, self.patch_size, self.padding = in_chans, patch_size, padding
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.norm = LayerNorm32(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, H, W)``; returns the normalised map ``(B, dim, h, w)``."""
        check_rank(x, 4, "x", "(B, C_in, H, W)")
        check_channels(x, 1, self.in_chans, "x")
        _check_fits(x.shape[-2], x.shape[-1], self.patch_size, self.padding, "patch_size", "padding")
        x = self.proj(x)  # Conv2d_{k, s, p}(X_{i-1})
        h, w = x.shape[-2:]
        # LN over channels, token by token: b c h w -> b (h w) c -> LN -> b c h w
        return seq2img(self.norm(img2seq(x)), h, w)


class ConvProjectionAttention(nn.Module):
    """CvT's multi-head attention with convolutional projection: ``(B, P + h*w, C_in) -> (B, P + h_q*w_q, C_out)``.

    ``P = 1`` with a class token, else 0; with the default ``stride_q=1, padding_q=kernel_size // 2``,
    ``h_q x w_q = h x w``. K and V have ``P + h_kv * w_kv`` tokens, ``h_kv = (h + 2 p_kv - k) // s_kv + 1``
    (``ceil(h / 2)`` for the official ``k=3, s_kv=2, p_kv=1``; ``avg`` rounds the division up instead).
    Module and attribute names follow the official ``Attention`` (``conv_proj_q/k/v.{conv,bn}``,
    ``proj_q/k/v``, ``proj``), so its checkpoints load directly. Weights keep PyTorch's default init;
    the model applies CvT's trunc-normal init.

    Args:
        dim_in, dim_out: token width in and out (``C_in``, ``C_out``); the depthwise convs work on ``C_in``.
        num_heads: heads; must divide ``dim_out``.
        qkv_bias: bias on ``proj_q/k/v`` (True in every official config).
        kernel_size: the odd depthwise kernel ``k`` (or pooling window for ``avg``).
        stride_q, stride_kv, padding_q, padding_kv: strides and zero padding of the Q and K/V convs.
        with_cls_token: whether the sequence starts with a class token (CvT: stage 3 only).
        attn_drop, proj_drop: dropout on the attention weights and on the output.
        method: ``'dw_bn'`` (depthwise conv + BN, CvT's choice) or ``'avg'`` (K/V average-pooled with
            ``ceil_mode=True``, Q flattened as is, so ``stride_q`` and ``padding_q`` are unused).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        num_heads: int,
        qkv_bias: bool = True,
        kernel_size: int = 3,
        stride_q: int = 1,
        stride_kv: int = 2,
        padding_q: int = 1,
        padding_kv: int = 1,
        with_cls_token: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        method: str = "dw_bn",
    ) -> None:
        super().__init__()
        check_positive(dim_in, "dim_in")
        check_positive(dim_out, "dim_out")
        check_divides(num_heads, dim_out, "num_heads", "dim_out")
        check_odd(kernel_size, "kernel_size")
        check_positive(stride_q, "stride_q")
        check_positive(stride_kv, "stride_kv")
        _check_padding(padding_q, "padding_q", kernel_size)
        _check_padding(padding_kv, "padding_kv", kernel_size)
        if method not in _METHODS:
            broken = " (the official 'linear' method is broken: its forward raises UnboundLocalError)"
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}{broken if method == 'linear' else ''}")
        self.dim_in, self.dim_out, self.num_heads = dim_in, dim_out, num_heads
        self.kernel_size, self.padding_q, self.padding_kv = kernel_size, padding_q, padding_kv
        self.with_cls_token = with_cls_token
        self.scale = dim_out**-0.5  # quirk: the full width C_out, not head_dim ** -0.5
        self.attn_drop = attn_drop

        def projection(stride: int, padding: int) -> nn.Module:
            if method == "avg":
                return nn.AvgPool2d(kernel_size, stride=stride, padding=padding, ceil_mode=True)
            conv = nn.Conv2d(dim_in, dim_in, kernel_size, stride, padding, groups=dim_in, bias=False)
            return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(dim_in)))

        # quirk (avg): the official 'avg' method leaves Q unprojected (a plain flatten)
        self.conv_proj_q = None if method == "avg" else projection(stride_q, padding_q)
        self.conv_proj_k = projection(stride_kv, padding_kv)
        self.conv_proj_v = projection(stride_kv, padding_kv)  # separate weights from K
        self.proj_q = nn.Linear(dim_in, dim_out, bias=qkv_bias)
        self.proj_k = nn.Linear(dim_in, dim_out, bias=qkv_bias)
        self.proj_v = nn.Linear(dim_in, dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward_conv(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The convolutional projection alone, before the linear maps.

        Args:
            x: ``(B, P + h*w, C_in)`` tokens, class token first if ``with_cls_token``.
            h, w: the lattice of the patch tokens.
        Returns:
            ``x_q (B, P + h_q*w_q, C_in)``, ``x_k`` and ``x_v (B, P + h_kv*w_kv, C_in)``.
        """
        check_rank(x, 3, "x", "(B, [1 +] h*w, C_in)")
        check_channels(x, -1, self.dim_in, "x")
        check_positive(h, "h")
        check_positive(w, "w")
        prefix = int(self.with_cls_token)
        if x.shape[1] != prefix + h * w:
            raise ValueError(
                f"x has {x.shape[1]} tokens, but with_cls_token={self.with_cls_token} and h*w={h}*{w} need "
                f"{prefix + h * w}; pass the (h, w) of the patch grid, and build with with_cls_token=True "
                f"exactly when the sequence starts with a class token"
            )
        if self.conv_proj_q is not None:
            _check_fits(h, w, self.kernel_size, self.padding_q, "kernel_size", "padding_q")
        _check_fits(h, w, self.kernel_size, self.padding_kv, "kernel_size", "padding_kv")
        cls, patches = split_cls(x, prefix)
        fmap = seq2img(patches, h, w)  # Reshape2D: b (h w) c -> b c h w
        # x_q, x_k, x_v = Flatten(BN(DWConv(.))): b c h' w' -> b (h' w') c
        q, k, v = (
            img2seq(fmap if p is None else p(fmap)) for p in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v)
        )
        # quirk: the class token bypasses the conv projection (it still goes through proj_q/k/v)
        return join_cls(cls, q), join_cls(cls, k), join_cls(cls, v)

    def forward(
        self, x: torch.Tensor, h: int, w: int, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x``: ``(B, P + h*w, C_in)``; returns ``(B, P + h_q*w_q, C_out)`` (with the defaults ``P + h*w``).

        With ``return_attn`` also the weights ``(B, heads, P + h_q*w_q, P + h_kv*w_kv)`` (for figures).
        """
        x_q, x_k, x_v = self.forward_conv(x, h, w)
        # Q = x_q W_q, K = x_k W_k, V = x_v W_v, each split into heads: b t (heads d) -> b heads t d
        q, k, v = (
            rearrange(lin(t), "b t (heads d) -> b heads t d", heads=self.num_heads)
            for lin, t in ((self.proj_q, x_q), (self.proj_k, x_k), (self.proj_v, x_v))
        )
        dropout_p = self.attn_drop if self.training else 0.0
        # A_h = softmax(Q_h K_h^T * C_out^-0.5), out_h = A_h V_h
        out = attend(q, k, v, self.scale, dropout_p=dropout_p, return_attn=return_attn)
        out, attn = out if return_attn else (out, None)
        # Y = concat_h(out_h) W_o
        y = self.proj_drop(self.proj(rearrange(out, "b heads t d -> b t (heads d)")))
        return (y, attn) if return_attn else y


def _check_padding(padding: int, name: str, kernel_size: int | None = None) -> None:
    """Raise unless ``padding >= 0`` (and ``<= kernel_size // 2``: more pads windows that see only zeros)."""
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {padding!r}")
    if kernel_size is not None and padding > kernel_size // 2:
        raise ValueError(
            f"{name}={padding} exceeds kernel_size // 2 = {kernel_size // 2}, so border windows would see only "
            f"padding; use {kernel_size // 2} (keeps the map size at stride 1) or less"
        )


def _check_fits(h: int, w: int, kernel_size: int, padding: int, kernel_name: str, padding_name: str) -> None:
    """Raise unless a ``kernel_size`` window fits the zero-padded ``h x w`` map at least once."""
    smallest = kernel_size - 2 * padding
    if min(h, w) < smallest:
        raise ValueError(
            f"a {h}x{w} map is too small for {kernel_name}={kernel_size} with {padding_name}={padding}; "
            f"use a map of at least {smallest}x{smallest} or more padding"
        )
