"""Wrong answers to assignment 03, cross-attention fusion."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal import fusion

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


@wrong(subtle=False)
def projection_identity_for_equal_widths():
    """The identity when ``in_dim == out_dim`` (lucidrains' port), where CrossViT always has LN, GELU and Linear."""

    class Projection(nn.Sequential):
        def __init__(self, in_dim, out_dim):
            layers = () if in_dim == out_dim else (fusion.Projection(in_dim, out_dim).named_children())
            super().__init__(OrderedDict(layers))

    return {"Projection": Projection}


@wrong(subtle=False)
def projection_gelu_before_norm():
    """GELU before the LayerNorm."""

    class Projection(nn.Sequential):
        def __init__(self, in_dim, out_dim):
            super().__init__(
                OrderedDict(act=nn.GELU(), norm=nn.LayerNorm(in_dim, eps=1e-6), fc=nn.Linear(in_dim, out_dim))
            )

    return {"Projection": Projection}


@wrong(subtle=False)
def projection_default_eps():
    """PyTorch's LayerNorm eps 1e-5 instead of CrossViT's 1e-6."""

    class Projection(nn.Sequential):
        def __init__(self, in_dim, out_dim):
            super().__init__(OrderedDict(norm=nn.LayerNorm(in_dim), act=nn.GELU(), fc=nn.Linear(in_dim, out_dim)))

    return {"Projection": Projection}


class _CrossAttention(fusion.CrossAttention):
    """The reference module with its forward written out, so that one step can go wrong."""

    def attend(self, query, keys, heads_layout="b n (heads d) -> b heads n d"):
        q = rearrange(self.wq(query), heads_layout, heads=self.num_heads)
        k = rearrange(self.wk(keys), heads_layout, heads=self.num_heads)
        v = rearrange(self.wv(keys), heads_layout, heads=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(out, "b heads n d -> b n (heads d)"))


@wrong(subtle=False)
def keys_without_the_query():
    """Keys and values from the patch tokens only, leaving out the (projected) class token itself."""

    class CrossAttention(_CrossAttention):
        def forward(self, z):
            return self.attend(z[:, :1], z[:, 1:])

    return {"CrossAttention": CrossAttention}


@wrong(subtle=False)
def full_width_scale():
    """The scale ``C^-0.5`` of the full width instead of the head width's ``d^-0.5``."""

    class CrossAttention(_CrossAttention):
        def __init__(self, dim, num_heads, qkv_bias=True):
            super().__init__(dim, num_heads, qkv_bias, scale=dim**-0.5)

        def forward(self, z):
            return self.attend(z[:, :1], z)

    return {"CrossAttention": CrossAttention}


@wrong(subtle=False)
def heads_interleaved():
    """Heads split as ``(d heads)``: each head gets every h-th channel instead of a contiguous block."""

    class CrossAttention(_CrossAttention):
        def forward(self, z):
            return self.attend(z[:, :1], z, heads_layout="b n (d heads) -> b heads n d")

    return {"CrossAttention": CrossAttention}


@wrong(subtle=False)
def mean_token_queries():
    """The query made from the mean of all tokens instead of the class token."""

    class CrossAttention(_CrossAttention):
        def forward(self, z):
            return self.attend(z.mean(1, keepdim=True), z)

    return {"CrossAttention": CrossAttention}


@wrong(subtle=False)
def residual_outside_the_projection():
    """The residual in the branch's own space, ``cls_i + g(CA(LN(z)))`` (lucidrains' port), not ``g(cls' + CA)``."""

    def fuse_branch(x_i, x_j, f, norm, attn, g):
        z = torch.cat([f(x_i[:, :1]), x_j[:, 1:]], dim=1)
        return torch.cat([x_i[:, :1] + g(attn(norm(z))), x_i[:, 1:]], dim=1)

    return {"fuse_branch": fuse_branch}


@wrong(subtle=False)
def no_residual():
    """No residual at all: ``g(CA(LN(z)))``."""

    def fuse_branch(x_i, x_j, f, norm, attn, g):
        z = torch.cat([f(x_i[:, :1]), x_j[:, 1:]], dim=1)
        return torch.cat([g(attn(norm(z))), x_i[:, 1:]], dim=1)

    return {"fuse_branch": fuse_branch}


@wrong(subtle=False)
def attends_to_its_own_patches():
    """The class token queries its own branch's patch tokens instead of the other branch's."""

    def fuse_branch(x_i, x_j, f, norm, attn, g):
        cls = f(x_i[:, :1])
        z = torch.cat([cls, x_i[:, 1:]], dim=1)
        return torch.cat([g(cls + attn(norm(z))), x_i[:, 1:]], dim=1)

    return {"fuse_branch": fuse_branch}


@wrong(subtle=False)
def class_tokens_averaged():
    """The projected class tokens averaged instead of summed."""

    def class_token_fusion(xs, f, g):
        s = (f[0](xs[0][:, :1]) + f[1](xs[1][:, :1])) / 2
        return [torch.cat([g[i](s), x[:, 1:]], dim=1) for i, x in enumerate(xs)]

    return {"class_token_fusion": class_token_fusion}


@wrong(subtle=False)
def class_tokens_not_exchanged():
    """Each class token projected there and back on its own: the branches never meet."""

    def class_token_fusion(xs, f, g):
        return [torch.cat([g[i](f[i](x[:, :1])), x[:, 1:]], dim=1) for i, x in enumerate(xs)]

    return {"class_token_fusion": class_token_fusion}


@wrong(subtle=False)
def test_with_one_head():
    """The learner's test, like the colleague's, uses one head, where d = C: the full-width scale passes it."""

    def test_cross_attention_per_head(CrossAttention):
        torch.manual_seed(0)
        attn = CrossAttention(8, 1).double()
        z = torch.randn(2, 5, 8, dtype=torch.float64)
        with torch.no_grad():
            q, k, v = attn.wq(z[:, :1]), attn.wk(z), attn.wv(z)
            want = attn.proj(torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1) @ v)
            assert torch.allclose(attn(z), want)

    return {"test_cross_attention_per_head": test_cross_attention_per_head}


@wrong(subtle=False)
def test_checks_the_shape_only():
    """The learner's test checks that one token of width C comes out: every bug here keeps the shape."""

    def test_cross_attention_per_head(CrossAttention):
        assert CrossAttention(8, 4)(torch.randn(2, 5, 8)).shape == (2, 1, 8)

    return {"test_cross_attention_per_head": test_cross_attention_per_head}


@wrong(subtle=False)
def macs_query_on_every_token():
    """W_q counted on all N tokens, as in self-attention: 3 N C^2 where cross-attention projects one query."""

    def cross_attention_macs(n, dim):
        return 3 * n * dim * dim + dim * dim + 2 * n * dim

    return {"cross_attention_macs": cross_attention_macs}


@wrong(subtle=False)
def macs_scores_only():
    """Self-attention's quadratic part counted once (Q K^T) and not for A V."""

    def self_attention_macs(n, dim):
        return 4 * n * dim * dim + n * n * dim

    return {"self_attention_macs": self_attention_macs}


@wrong(subtle=True)
def fusion_always_cross_attention():
    """The paper's winner, whatever the budget: right at 240 px, over budget at 384 px."""

    def choose_fusion(num_tokens, budget):
        return "cross_attention"

    return {"choose_fusion": choose_fusion}


@wrong(subtle=True)
def fusion_tie_to_pairwise():
    """Ties broken by the order of the table, not by cost: pairwise (151 MMACs) where class token costs 0.15."""

    def choose_fusion(num_tokens, budget):
        top1 = {"none": 80.2, "all_attention": 80.0, "class_token": 80.3, "pairwise": 80.3, "cross_attention": 81.0}
        fits = [s for s in ("cross_attention", "pairwise", "class_token", "none", "all_attention")
                if fusion.fusion_macs(s, (192, 384), 6, num_tokens) <= budget]  # fmt: skip
        return max(fits, key=top1.get)

    return {"choose_fusion": choose_fusion}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=True)
def qkv_bias_ignored():
    """``nn.Linear(dim, dim)`` for wq, wk, wv whatever ``qkv_bias`` says: CrossAttention(..., qkv_bias=False) has
    biases it must not have."""

    class CrossAttention(fusion.CrossAttention):
        def __init__(self, dim, num_heads, qkv_bias=True):
            super().__init__(dim, num_heads, qkv_bias=True)

    return {"CrossAttention": CrossAttention}


@wrong(subtle=False)
def class_token_squeezed():
    """The class token's axis dropped with ``.squeeze()`` and put back with ``unsqueeze(1)``: with batch 1 the
    batch axis goes too, and the tokens no longer line up."""

    def fuse_branch(x_i, x_j, f, norm, attn, g):
        cls = f(x_i[:, :1]).squeeze()  # (B, C_j), meant to drop the token axis
        z = torch.cat([cls.unsqueeze(1), x_j[:, 1:]], dim=1)
        y = cls + attn(norm(z)).squeeze()
        return torch.cat([g(y).unsqueeze(1), x_i[:, 1:]], dim=1)

    return {"fuse_branch": fuse_branch}
