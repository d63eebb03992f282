"""Multi-head self-attention on ``F.scaled_dot_product_attention`` (shared by every model).

For tokens ``X`` of shape ``(B, N, C)`` and ``heads`` heads of width ``d = C / heads``:

    Q, K, V = X W_q, X W_k, X W_v                     (one fused Linear(C, 3C), split as (3, heads, d))
    A_h     = softmax(Q_h K_h^T * scale)              scale = d^-0.5 unless overridden
    Y       = concat_h(A_h V_h) W_o

`attend` is the functional core that the other mechanisms (cross-attention, CvT's convolutional
projection, CloFormer's global branch, Swin's windows) reuse: it runs the fused SDPA kernel, or,
when the weights themselves are wanted (figures, tests), the same maths written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal._checks import check_channels, check_divides, check_positive, check_rank

__all__ = ["attend", "Attention"]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    return_attn: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scale + mask) v`` per head.

    Args:
        q: ``(B, heads, N_q, d)``; k: ``(B, heads, N_k, d)``; v: ``(B, heads, N_k, d_v)``.
        scale: the logit scale (``d^-0.5`` in most papers; CvT uses the full width).
        attn_mask: optional additive float mask broadcastable to ``(B, heads, N_q, N_k)``.
        dropout_p: attention dropout (pass 0 in eval mode).
        return_attn: also return the attention weights (computed explicitly, not fused).
    Returns:
        ``(B, heads, N_q, d_v)``, and the weights ``(B, heads, N_q, N_k)`` if ``return_attn``.
    """
    if not return_attn:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    logits = torch.einsum("bhnd,bhmd->bhnm", q, k) * scale  # A = Q K^T * scale
    if attn_mask is not None:
        logits = logits + attn_mask
    attn = logits.softmax(dim=-1)
    out = torch.einsum("bhnm,bhmd->bhnd", F.dropout(attn, p=dropout_p), v)  # Y = A V
    return out, attn


class Attention(nn.Module):
    """Multi-head self-attention ``(B, N, C) -> (B, N, C)`` as in DeiT / timm.

    Args:
        dim: token width ``C``.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: bias on the fused q/k/v projection (DeiT, CrossViT, Swin: True).
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
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5 if scale is None else scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x``: ``(B, N, C)``; returns ``(B, N, C)`` (and ``(B, heads, N, N)`` weights if asked)."""
        check_rank(x, 3, "x", "(B, N, C)")
        check_channels(x, -1, self.dim, "x")
        # [Q | K | V] = X W_qkv, split as (3, heads, d) -- the timm/DeiT layout
        q, k, v = rearrange(self.qkv(x), "b n (three heads d) -> three b heads n d", three=3, heads=self.num_heads)
        dropout_p = self.attn_drop if self.training else 0.0
        out = attend(q, k, v, self.scale, attn_mask=attn_mask, dropout_p=dropout_p, return_attn=return_attn)
        out, attn = out if return_attn else (out, None)
        # Y = concat_h(A_h V_h) W_o
        y = self.proj_drop(self.proj(rearrange(out, "b heads n d -> b n (heads d)")))
        return (y, attn) if return_attn else y

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights ``(B, heads, N, N)`` for ``x`` (for attention-map figures)."""
        return self(x, return_attn=True)[1]
