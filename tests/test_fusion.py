"""CrossViT fusion: cross-attention is the class-token row of self-attention, the fusion invariants
(patch tokens untouched, LN + GELU projections, residual in the projected space), its linear cost
against all-attention's quadratic one, and the paper's other three schemes behind one interface.

Every module output is compared with an independent computation written with ``torch.nn.functional``
(layer_norm, gelu, linear, scaled_dot_product_attention, interpolate) or a closed-form MAC count.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from tests.util import randn
from vitlocal.attention import Attention
from vitlocal.fusion import (
    FUSION_SCHEMES,
    AllAttentionFusion,
    ClassTokenFusion,
    CrossAttention,
    CrossAttentionFusion,
    Fusion,
    NoFusion,
    PairwiseFusion,
    Projection,
    fusion_macs,
    make_fusion,
)

EPS = 1e-6  # the released CrossViT LayerNorm eps

heads_st = st.integers(1, 3)
head_dim_st = st.integers(1, 4)
seeds = st.integers(0, 2**16)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter (LN affine included) with seeded normals; float64, eval mode."""
    module.double().eval()
    with torch.no_grad():
        for k, p in enumerate(module.parameters()):
            p.copy_(randn(*p.shape, seed=seed + 7919 * (k + 1)) * 0.5)
    return module


# ----------------------------------------------------------------------------- independent references


def ref_projection(p: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Linear(GELU(LN(x)))`` with the module's weights, written with torch.nn.functional."""
    if isinstance(p, nn.Identity):
        return x
    ln, fc = p.norm, p.fc
    return F.linear(F.gelu(F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, eps=EPS)), fc.weight, fc.bias)


def ref_cross_attention(ca: CrossAttention, x: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive single-query attention: token 0 queries all tokens (itself included), ``heads`` heads."""
    b, n, c = x.shape
    d = c // heads
    q = F.linear(x[:, :1], ca.wq.weight, ca.wq.bias).reshape(b, 1, heads, d).transpose(1, 2)
    k = F.linear(x, ca.wk.weight, ca.wk.bias).reshape(b, n, heads, d).transpose(1, 2)
    v = F.linear(x, ca.wv.weight, ca.wv.bias).reshape(b, n, heads, d).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # (b, heads, 1, n)
    out = (a @ v).transpose(1, 2).reshape(b, 1, c)
    return F.linear(out, ca.proj.weight, ca.proj.bias), a


def ref_cross_fusion(
    fusion: CrossAttentionFusion, xs: list[torch.Tensor], heads: tuple[int, int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The official MultiScaleBlock fusion for L = 0, branch i attending at C_j with heads_j."""
    outs, weights = [], []
    for i in range(2):
        j = 1 - i
        block = fusion.blocks[i][0]
        cls = ref_projection(fusion.f[i], xs[i][:, :1])
        z = torch.cat([cls, xs[j][:, 1:]], dim=1)
        z = F.layer_norm(z, (z.shape[-1],), block.norm.weight, block.norm.bias, eps=EPS)
        ca, a = ref_cross_attention(block.attn, z, heads[j])
        outs.append(torch.cat([ref_projection(fusion.g[i], cls + ca), xs[i][:, 1:]], dim=1))
        weights.append(a)
    return outs, weights


def to_grid(tokens: torch.Tensor, h: int) -> torch.Tensor:
    """(B, h*h, C) -> (B, C, h, h), row-major, by reshape (independent of seq2img)."""
    return tokens.reshape(tokens.shape[0], h, h, tokens.shape[-1]).permute(0, 3, 1, 2)


def from_grid(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def branch_inputs(dims: tuple[int, int], tokens: tuple[int, int], b: int, seed: int) -> list[torch.Tensor]:
    return [randn(b, 1 + n, c, seed=seed + i) for i, (n, c) in enumerate(zip(tokens, dims, strict=True))]


# ----------------------------------------------------------------------------- cross-attention


@given(heads=heads_st, d=head_dim_st, n=st.integers(1, 9), b=st.integers(1, 3), qkv_bias=st.booleans(), seed=seeds)
def test_cross_attention_is_cls_row_of_self_attention(
    heads: int, d: int, n: int, b: int, qkv_bias: bool, seed: int
) -> None:
    dim = heads * d
    ca = randomize_(CrossAttention(dim, heads, qkv_bias=qkv_bias), seed)
    sa = Attention(dim, heads, qkv_bias=qkv_bias).double().eval()
    with torch.no_grad():  # the same weights: W_qkv = [W_q; W_k; W_v]
        sa.qkv.weight.copy_(torch.cat([ca.wq.weight, ca.wk.weight, ca.wv.weight]))
        if qkv_bias:
            sa.qkv.bias.copy_(torch.cat([ca.wq.bias, ca.wk.bias, ca.wv.bias]))
        sa.proj.load_state_dict(ca.proj.state_dict())
    x = randn(b, n, dim, seed=seed)
    y, attn = ca(x, return_attn=True)
    assert y.shape == (b, 1, dim)
    assert_close(y, sa(x)[:, :1])
    assert_close(ca(x), y)  # the fused SDPA path agrees with the explicit one
    assert_close(attn, sa.attention_weights(x)[:, :, :1])


def test_cross_attention_gradcheck() -> None:
    ca = randomize_(CrossAttention(4, 2), seed=3)
    x = randn(1, 5, 4, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(ca, (x,))


# ----------------------------------------------------------------------------- cross-attention fusion

fusion_shapes = st.fixed_dictionaries(
    {
        "h0": heads_st,
        "d0": head_dim_st,
        "h1": heads_st,
        "d1": head_dim_st,
        "n0": st.integers(0, 9),
        "n1": st.integers(0, 9),
        "b": st.integers(1, 3),
        "seed": seeds,
    }
)


@given(s=fusion_shapes)
def test_cross_attention_fusion_matches_official_equations(s: dict) -> None:
    heads, dims = (s["h0"], s["h1"]), (s["h0"] * s["d0"], s["h1"] * s["d1"])
    fusion = randomize_(CrossAttentionFusion(dims, heads), s["seed"])
    xs = branch_inputs(dims, (s["n0"], s["n1"]), s["b"], s["seed"])
    outs = fusion(xs)
    want, want_weights = ref_cross_fusion(fusion, xs, heads)
    for i in range(2):
        assert outs[i].shape == xs[i].shape
        assert_close(outs[i], want[i])
        # branch i's cross-attention lives at the other branch's width, with its head count
        assert fusion.blocks[i][0].attn.num_heads == heads[1 - i]
        assert fusion.blocks[i][0].attn.dim == dims[1 - i]
        assert len(fusion.blocks[i]) == 1  # L = 0: exactly one cross-attention, no MLP
    for got, w, i in zip(fusion.attention_weights(xs), want_weights, range(2), strict=True):
        assert got.shape == (s["b"], heads[1 - i], 1, xs[1 - i].shape[1])  # keys: z_i = [cls'_i || P_j]
        assert_close(got, w)


@settings(max_examples=10)  # each example builds and runs all five schemes
@given(s=fusion_shapes)
def test_fusion_keeps_or_changes_patch_tokens(s: dict) -> None:
    dims = (s["h0"] * s["d0"], s["h1"] * s["d1"])
    n0, n1 = (k * k for k in (1 + s["n0"] % 3, 1 + s["n1"] % 3))  # square grids for pairwise
    xs = branch_inputs(dims, (n0, n1), s["b"], s["seed"])
    for scheme in FUSION_SCHEMES:
        fusion = randomize_(make_fusion(scheme, dims, (s["h0"], s["h1"])), s["seed"])
        outs = fusion(xs)
        for x, out in zip(xs, outs, strict=True):
            if scheme in ("none", "cross_attention", "class_token"):
                assert torch.equal(out[:, 1:], x[:, 1:])
            else:  # all-attention and pairwise rewrite every patch token
                assert not torch.allclose(out[:, 1:], x[:, 1:])
            if scheme == "none":
                assert torch.equal(out, x)
            else:
                assert not torch.allclose(out[:, :1], x[:, :1])


@given(heads=heads_st, d=head_dim_st, seed=seeds)
def test_cross_attention_projections_are_ln_gelu_linear_even_for_equal_dims(heads: int, d: int, seed: int) -> None:
    dim = heads * d
    fusion = randomize_(CrossAttentionFusion((dim, dim), heads), seed)
    x = randn(2, 3, dim, seed=seed)
    for p in [*fusion.f, *fusion.g]:
        assert isinstance(p, Projection)
        assert [type(m) for m in p] == [nn.LayerNorm, nn.GELU, nn.Linear]
        assert p.norm.eps == EPS
        assert_close(p(x), ref_projection(p, x))
        assert not torch.allclose(p(x), x)


@given(s=fusion_shapes)
def test_cross_attention_residual_is_in_projected_space(s: dict) -> None:
    heads, dims = (s["h0"], s["h1"]), (s["h0"] * s["d0"], s["h1"] * s["d1"])
    fusion = randomize_(CrossAttentionFusion(dims, heads), s["seed"])
    with torch.no_grad():  # CA(.) == 0, so y_i = f_i(cls_i)
        for blocks in fusion.blocks:
            blocks[0].attn.proj.weight.zero_()
            blocks[0].attn.proj.bias.zero_()
    xs = branch_inputs(dims, (s["n0"], s["n1"]), s["b"], s["seed"])
    for i, out in enumerate(fusion(xs)):
        cls = xs[i][:, :1]
        want = ref_projection(fusion.g[i], ref_projection(fusion.f[i], cls))
        assert_close(out[:, :1], want)
        assert not torch.allclose(out[:, :1], cls)  # the class token is not carried over (no residual at C_i)


@settings(max_examples=10)
@given(heads=heads_st, d=head_dim_st, n=st.integers(0, 6), seed=seeds)
def test_cross_attention_depth(heads: int, d: int, n: int, seed: int) -> None:
    dims = (heads * d, 2 * heads * d)
    for depth in (0, 1):
        assert [len(b) for b in CrossAttentionFusion(dims, heads, depth=depth).blocks] == [1, 1]
    fusion = randomize_(CrossAttentionFusion(dims, heads, depth=2), seed)
    xs = branch_inputs(dims, (n, n + 1), 2, seed)
    for i, out in enumerate(fusion(xs)):
        j = 1 - i
        first, second = fusion.blocks[i]
        cls = ref_projection(fusion.f[i], xs[i][:, :1])
        z = torch.cat([cls, xs[j][:, 1:]], dim=1)
        y = (
            cls
            + ref_cross_attention(
                first.attn, F.layer_norm(z, z.shape[-1:], first.norm.weight, first.norm.bias, EPS), heads
            )[0]
        )
        # quirk: the second block sees the class token alone, so its softmax is 1 and CA = proj(wv(LN(y)))
        ln = F.layer_norm(y, y.shape[-1:], second.norm.weight, second.norm.bias, EPS)
        a = second.attn
        y = y + F.linear(F.linear(ln, a.wv.weight, a.wv.bias), a.proj.weight, a.proj.bias)
        assert_close(out, torch.cat([ref_projection(fusion.g[i], y), xs[i][:, 1:]], dim=1))


def test_cross_attention_fusion_gradcheck() -> None:
    fusion = randomize_(CrossAttentionFusion((2, 4), (1, 2)), seed=5)
    xs = [randn(1, 5, 2, seed=1).requires_grad_(), randn(1, 3, 4, seed=2).requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b: tuple(fusion([a, b])), tuple(xs))


# ----------------------------------------------------------------------------- cost: linear vs quadratic


def cross_attention_macs(dims: tuple[int, int], tokens: tuple[int, int]) -> int:
    """Closed form: per branch i, f_i + wq + wk, wv on 1 + N_j tokens + q K^T and A V + proj + g_i."""
    total = 0
    for i in range(2):
        ci, cj, nj = dims[i], dims[1 - i], 1 + tokens[1 - i]
        total += ci * cj + cj * cj + 2 * nj * cj * cj + 2 * nj * cj + cj * cj + cj * ci
    return total


def second_divided_difference(ns: list[int], ms: list[int]) -> list[Fraction]:
    """Exact second divided differences: 0 for an affine function, the N^2 coefficient for a quadratic."""
    slopes = [Fraction(ms[k + 1] - ms[k], ns[k + 1] - ns[k]) for k in range(len(ns) - 1)]
    return [(slopes[k + 1] - slopes[k]) / (ns[k + 2] - ns[k]) for k in range(len(slopes) - 1)]


@settings(max_examples=4)  # each MAC count runs under FlopCounterMode (~0.1 s)
@given(h0=heads_st, d0=head_dim_st, h1=heads_st, d1=head_dim_st, m=st.sampled_from([1, 4, 9, 16]))
def test_cross_attention_cost_is_linear_all_attention_quadratic(h0: int, d0: int, h1: int, d1: int, m: int) -> None:
    ns = [49, 196, 400, 784]
    heads, dims = (h0, h1), (h0 * d0, h1 * d1)
    ca = [fusion_macs("cross_attention", dims, heads, (n, m)) for n in ns]
    aa = [fusion_macs("all_attention", dims, heads, (n, m)) for n in ns]
    assert ca == [cross_attention_macs(dims, (n, m)) for n in ns]
    # CA is affine in N (one query per branch); all-attention has 2 * D * N^2 from q K^T and A V
    assert second_divided_difference(ns, ca) == [0, 0]
    assert second_divided_difference(ns, aa) == [2 * max(dims)] * 2
    assert fusion_macs("none", dims, heads, (ns[0], m)) == 0


# ----------------------------------------------------------------------------- the paper-only schemes


@given(s=fusion_shapes)
def test_common_width_projections(s: dict) -> None:
    dims = (s["h0"] * s["d0"], s["h1"] * s["d1"])
    width = max(dims)
    for scheme, cls in [
        ("all_attention", AllAttentionFusion),
        ("class_token", ClassTokenFusion),
        ("pairwise", PairwiseFusion),
    ]:
        fusion = make_fusion(scheme, dims, (s["h0"], s["h1"]))
        assert isinstance(fusion, cls)
        for i, c in enumerate(dims):
            kinds = {type(fusion.f[i]), type(fusion.g[i])}
            assert kinds == ({nn.Identity} if c == width else {Projection})


@given(s=fusion_shapes)
def test_class_token_fusion_sums_projected_cls(s: dict) -> None:
    dims = (s["h0"] * s["d0"], s["h1"] * s["d1"])
    fusion = randomize_(ClassTokenFusion(dims), s["seed"])
    xs = branch_inputs(dims, (s["n0"], s["n1"]), s["b"], s["seed"])
    total = ref_projection(fusion.f[0], xs[0][:, :1]) + ref_projection(fusion.f[1], xs[1][:, :1])
    for i, out in enumerate(fusion(xs)):
        assert_close(out, torch.cat([ref_projection(fusion.g[i], total), xs[i][:, 1:]], dim=1))
    # equal widths: no projection at all, both branches get cls_0 + cls_1
    same = ClassTokenFusion((dims[0], dims[0]))
    ys = branch_inputs((dims[0], dims[0]), (s["n0"], s["n1"]), s["b"], s["seed"])
    for out in same(ys):
        assert_close(out[:, :1], ys[0][:, :1] + ys[1][:, :1])


@given(s=fusion_shapes)
def test_all_attention_fusion_matches_reference(s: dict) -> None:
    heads, dims = (s["h0"], s["h1"]), (s["h0"] * s["d0"], s["h1"] * s["d1"])
    fusion = randomize_(AllAttentionFusion(dims, heads), s["seed"])
    xs = branch_inputs(dims, (s["n0"], s["n1"]), s["b"], s["seed"])
    width, h = max(dims), heads[0] if dims[0] > dims[1] else heads[1]
    y = torch.cat([ref_projection(f, x) for f, x in zip(fusion.f, xs, strict=True)], dim=1)
    ln = F.layer_norm(y, (width,), fusion.norm.weight, fusion.norm.bias, eps=EPS)
    qkv = F.linear(ln, fusion.attn.qkv.weight, fusion.attn.qkv.bias)
    q, k, v = qkv.reshape(y.shape[0], y.shape[1], 3, h, width // h).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(y.shape)
    o = y + F.linear(a, fusion.attn.proj.weight, fusion.attn.proj.bias)
    o0, o1 = o[:, : xs[0].shape[1]], o[:, xs[0].shape[1] :]
    for out, g, oi in zip(fusion(xs), fusion.g, (o0, o1), strict=True):
        assert_close(out, ref_projection(g, oi))


@example(g0=5, g1=3, c0=4, c1=6, b=2, seed=0)  # the brief's 5x5 / 3x3 grids
@given(
    g0=st.integers(1, 6),
    g1=st.integers(1, 6),
    c0=st.sampled_from([2, 4, 6]),
    c1=st.sampled_from([2, 4, 6]),
    b=st.integers(1, 2),
    seed=seeds,
)
def test_pairwise_fusion_interpolates_the_other_grid(g0: int, g1: int, c0: int, c1: int, b: int, seed: int) -> None:
    dims, sides = (c0, c1), (g0, g1)
    fusion = randomize_(PairwiseFusion(dims), seed)
    xs = branch_inputs(dims, (g0 * g0, g1 * g1), b, seed)
    y = [ref_projection(f, x) for f, x in zip(fusion.f, xs, strict=True)]
    total = y[0][:, :1] + y[1][:, :1]
    outs = fusion(xs)
    for i in range(2):
        j = 1 - i
        other = F.interpolate(
            to_grid(y[j][:, 1:], sides[j]), size=(sides[i], sides[i]), mode="bilinear", align_corners=False
        )
        want = ref_projection(fusion.g[i], torch.cat([total, y[i][:, 1:] + from_grid(other)], dim=1))
        assert outs[i].shape == xs[i].shape
        assert_close(outs[i], want)


def test_pairwise_fusion_gradcheck() -> None:
    fusion = randomize_(PairwiseFusion((2, 4)), seed=6)
    xs = [randn(1, 1 + 4, 2, seed=1).requires_grad_(), randn(1, 1 + 1, 4, seed=2).requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b: tuple(fusion([a, b])), tuple(xs))


# ----------------------------------------------------------------------------- the common interface


@settings(max_examples=10)  # each example builds and runs all five schemes twice
@given(s=fusion_shapes)
def test_every_scheme_keeps_shapes(s: dict) -> None:
    dims = (s["h0"] * s["d0"], s["h1"] * s["d1"])
    grids = (1 + s["n0"] % 4, 1 + s["n1"] % 4)
    for b in (1, s["b"]):
        xs = branch_inputs(dims, (grids[0] ** 2, grids[1] ** 2), b, s["seed"])
        for scheme in FUSION_SCHEMES:
            fusion = make_fusion(scheme, dims, (s["h0"], s["h1"])).double()
            assert isinstance(fusion, Fusion)
            outs = fusion(xs)
            assert isinstance(outs, list)
            assert [o.shape for o in outs] == [x.shape for x in xs]
    assert isinstance(make_fusion("none", dims, 1), NoFusion)


# ----------------------------------------------------------------------------- bad input

X0, X1 = torch.zeros(2, 1 + 9, 4), torch.zeros(2, 1 + 4, 6)
CROSS = CrossAttentionFusion((4, 6), (2, 3))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: CROSS([X0[0], X1]), r"xs\[0\] must have 3 dimensions"),
        (lambda: CROSS([X0, torch.zeros(2, 5, 5)]), r"xs\[1\] has 5 channels .* built for 6"),
        (lambda: CROSS([X0]), r"xs must be a list \[x_0, x_1\]"),
        (lambda: CROSS(X0), r"xs must be a list"),
        (lambda: CROSS([X0, X1[:1]]), r"different batch sizes"),
        (lambda: CROSS([X0, X1[:, :0]]), r"xs\[1\] has no tokens"),
        (lambda: make_fusion("cross", (4, 6), 2), r"scheme must be one of \['none', 'all_attention'"),
        (lambda: CrossAttention(10, 3), r"num_heads=3 must divide dim=10"),
        (lambda: CrossAttention(4, 2)(torch.zeros(3, 4)), r"x must have 3 dimensions"),
        (lambda: CrossAttention(4, 2)(torch.zeros(1, 3, 5)), r"x has 5 channels"),
        (lambda: make_fusion("cross_attention", (12, 10), 4), r"num_heads\[1\]=4 must divide dims\[1\]=10"),
        (lambda: make_fusion("all_attention", (4, 10), (2, 4)), r"num_heads\[1\]=4 must divide dims\[1\]=10"),
        (lambda: make_fusion("cross_attention", (4, 6), (2, 3, 1)), r"num_heads must be an int or a pair"),
        (lambda: make_fusion("cross_attention", (4, 6), 2, depth=-1), r"depth must be a non-negative integer"),
        (lambda: make_fusion("class_token", (4,), 1), r"dims must be the two branch widths"),
        (lambda: make_fusion("class_token", (4, 0), 1), r"dims\[1\] must be a positive integer"),
        (lambda: PairwiseFusion((4, 6))([torch.zeros(2, 1 + 7, 4), X1]), r"xs\[0\] has N=7 patch tokens"),
        (lambda: fusion_macs("pairwise", (4, 6), 1, (9,)), r"num_tokens must be the patch-token counts"),
        (lambda: fusion_macs("pairwise", (4, 6), 1, (9, -1)), r"num_tokens\[1\] must be a non-negative"),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
