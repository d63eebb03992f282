"""Hidden checks of assignment 03, cross-attention fusion (CrossViT)."""

from __future__ import annotations

import torch
from einops import rearrange
from hypothesis import strategies as st
from torch import nn

from vitlocal import fusion

from ._common import DTYPES, LAYOUTS, SEEDS, call, double, expect_close, for_all, load_reference_weights, randn

WIDTHS = st.sampled_from([4, 6, 8])
TOKENS = st.integers(1, 6)
PAIRS = st.sampled_from([(4, 8), (8, 4), (6, 6)])


def _learner_copy(learner: nn.Module, reference: nn.Module, what: str) -> nn.Module:
    """The learner's module in the reference's dtype holding the reference's weights, both in eval mode."""
    dtype = next(reference.parameters()).dtype
    learner = learner.to(dtype).eval()
    load_reference_weights(learner, reference.eval(), what)
    return learner


def _case(b, n, dtype, layout):
    layout = ", non-contiguous" if layout != "contiguous" else ""
    return f"batch {b} of {n} tokens, {str(dtype).removeprefix('torch.')}{layout}"


def check_projection(Projection):
    """``LN -> GELU -> Linear`` with the official eps 1e-6, also when ``in_dim == out_dim``; any batch and dtype."""

    def prop(c_in, c_out, b, dtype, layout, seed):
        reference = double(fusion.Projection(c_in, c_out), seed).to(dtype)
        what = f"Projection({c_in}, {c_out})"
        ours = _learner_copy(call(Projection, "Projection", c_in, c_out), reference, what)
        x = randn(b, 3, c_in, seed=seed, dtype=dtype, layout=layout)
        with torch.no_grad():
            expect_close(call(ours, what, x), reference(x), f"{what} on {_case(b, 3, dtype, layout)}")

    examples = (dict(c_in=4, c_out=6, b=1, dtype=torch.float32, layout="column-major", seed=0),)
    for_all(prop, examples, c_in=WIDTHS, c_out=WIDTHS, b=st.integers(1, 2), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS)


def check_cross_attention(CrossAttention):
    """The class token alone queries keys and values of every token (itself included), per head, scale ``d^-0.5``;
    ``qkv_bias`` on and off, batch 1, float32 and float64, any memory layout."""

    def prop(dim, heads, n, qkv_bias, b, dtype, layout, seed):
        reference = double(fusion.CrossAttention(dim, heads, qkv_bias=qkv_bias), seed).to(dtype)
        what = f"CrossAttention({dim}, num_heads={heads}, qkv_bias={qkv_bias})"
        ours = _learner_copy(call(CrossAttention, "CrossAttention", dim, heads, qkv_bias=qkv_bias), reference, what)
        x = randn(b, n, dim, seed=seed, dtype=dtype, layout=layout)
        with torch.no_grad():
            expect_close(call(ours, what, x), reference(x), f"{what} on {_case(b, n, dtype, layout)}")

    examples = (
        dict(dim=8, heads=2, n=3, qkv_bias=False, b=2, dtype=torch.float64, layout="contiguous", seed=0),
        dict(dim=4, heads=2, n=4, qkv_bias=True, b=1, dtype=torch.float32, layout="column-major", seed=1),
    )
    for_all(
        prop, examples, dim=st.sampled_from([4, 8]), heads=st.sampled_from([1, 2, 4]), n=st.integers(1, 6),
        qkv_bias=st.booleans(), b=st.integers(1, 2), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS,
    )  # fmt: skip


def _branches(dims, n, seed, b=2, layout="contiguous"):
    return [randn(b, 1 + n[i], dims[i], seed=seed + i, layout=layout) for i in range(2)]


def check_fuse_branch(fuse_branch):
    """Branch i's fused tokens, with CrossViT's own f, LN, cross-attention and g, for both branches."""

    def prop(dims, n, b, layout, seed):
        scheme = double(fusion.CrossAttentionFusion(dims, num_heads=2), seed).eval()
        xs = _branches(dims, n, seed, b, layout)
        with torch.no_grad():
            want = scheme(xs)
            for i in range(2):
                block = scheme.blocks[i][0]
                parts = (xs[i], xs[1 - i], scheme.f[i], block.norm, block.attn, scheme.g[i])
                got = call(fuse_branch, "fuse_branch", *parts)
                case = f"widths {dims}, batch {b}{', non-contiguous' if layout != 'contiguous' else ''}"
                expect_close(got, want[i], f"fuse_branch for branch {i} ({case})")

    examples = (dict(dims=(4, 8), n=(2, 3), b=2, layout="column-major", seed=0),)
    for_all(prop, examples, dims=PAIRS, n=st.tuples(TOKENS, TOKENS), b=st.integers(1, 2), layout=LAYOUTS, seed=SEEDS)


def check_class_token_fusion(class_token_fusion):
    """``s = f_0(cls_0) + f_1(cls_1)`` and ``out_i = [g_i(s) || P_i]``, projecting to and from a common width."""

    def prop(dims, n, b, layout, seed):
        scheme = double(fusion.ClassTokenFusion(dims), seed).eval()
        xs = _branches(dims, n, seed, b, layout)
        with torch.no_grad():
            want, got = scheme(xs), call(class_token_fusion, "class_token_fusion", xs, scheme.f, scheme.g)
        if not isinstance(got, (list, tuple)) or len(got) != 2:
            raise AssertionError("class_token_fusion must return a list [out_0, out_1]")
        for i in range(2):
            case = f"widths {dims}, batch {b}{', non-contiguous' if layout != 'contiguous' else ''}"
            expect_close(got[i], want[i], f"branch {i} of class_token_fusion ({case})")

    examples = (dict(dims=(4, 8), n=(2, 3), b=2, layout="column-major", seed=0),)
    for_all(prop, examples, dims=PAIRS, n=st.tuples(TOKENS, TOKENS), b=st.integers(1, 2), layout=LAYOUTS, seed=SEEDS)


def _fails(test, implementation) -> bool:
    """Whether a learner's test raises AssertionError on ``implementation`` (any other error propagates)."""
    try:
        test(implementation)
    except AssertionError:
        return True
    return False


class _HeadsInterleaved(fusion.CrossAttention):
    """Heads split as ``(d heads)``: channel c goes to head c % heads instead of c // d."""

    def forward(self, z):
        split = "b n (d heads) -> b heads n d"
        q, k, v = (rearrange(t, split, heads=self.num_heads) for t in (self.wq(z[:, :1]), self.wk(z), self.wv(z)))
        out = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v
        return self.proj(rearrange(out, "b heads n d -> b n (d heads)"))


class _KeysWithoutQuery(fusion.CrossAttention):
    """Keys and values from the patch tokens only, without the (projected) class token."""

    def forward(self, z):
        split = "b n (heads d) -> b heads n d"
        q = rearrange(self.wq(z[:, :1]), split, heads=self.num_heads)
        k, v = (rearrange(t, split, heads=self.num_heads) for t in (self.wk(z[:, 1:]), self.wv(z[:, 1:])))
        out = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v
        return self.proj(rearrange(out, "b heads n d -> b n (heads d)"))


def check_cross_attention_test(test_cross_attention):
    """The learner's test passes on CrossViT's cross-attention and fails on each plausible bug."""
    test_cross_attention(fusion.CrossAttention)  # a correct cross-attention must pass
    for bug, implementation in (
        ("the heads split as (d heads)", _HeadsInterleaved),
        ("keys and values without the class token", _KeysWithoutQuery),
    ):
        if not _fails(test_cross_attention, implementation):
            raise AssertionError(f"your test passes a cross-attention with a bug: {bug}")


def check_attention_macs(cross_attention_macs, self_attention_macs):
    """``2 C^2 + 2 N C^2 + 2 N C`` for one query, ``4 N C^2 + 2 N^2 C`` for all N; the heads do not matter."""

    def prop(n, dim):
        for name, got, want in (
            ("cross_attention_macs", cross_attention_macs(n, dim), 2 * dim * dim + 2 * n * dim * dim + 2 * n * dim),
            ("self_attention_macs", self_attention_macs(n, dim), 4 * n * dim * dim + 2 * n * n * dim),
        ):
            if got != want:
                raise AssertionError(f"{name}({n}, {dim}) is {got}, expected {want}")

    for_all(prop, n=st.integers(1, 2000), dim=st.integers(1, 1024))


def check_choose_fusion(choose_fusion):
    """The best published scheme within the budget, ties to the cheaper: at 100 MMACs cross-attention at 240 px,
    class token at 384 px."""
    for num_tokens, budget, want in (
        ((400, 225), 100e6, "cross_attention"),
        ((1024, 576), 100e6, "class_token"),
        ((1024, 576), 200e6, "class_token"),  # pairwise fits too: a tie at 80.3, and class token is cheaper
        ((1024, 576), 300e6, "cross_attention"),
        ((400, 225), 1e4, "none"),
    ):
        got = choose_fusion(num_tokens, budget)
        if got != want:
            raise AssertionError(
                f"choose_fusion({num_tokens}, {budget:g}) is {got!r}; the best within budget is {want!r}"
            )
