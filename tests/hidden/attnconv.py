"""Hidden checks of assignment 05, AttnConv and pooled global attention (CloFormer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import attnconv

from ._common import DTYPES, LAYOUTS, SEEDS, call, double, expect_close, for_all, randn, reference_parts

HEADS = st.integers(1, 2)
HEAD_DIMS = st.sampled_from([2, 4])
KERNELS = st.sampled_from([3, 5])
MAPS = st.integers(3, 7)


def _attn_conv(heads, head_dim, k, seed, dtype=torch.float64, qkv_bias=True):
    return double(attnconv.AttnConv(4, heads, head_dim, k, qkv_bias=qkv_bias), seed).to(dtype).eval()


def _case(b, h, w, dtype, layout="contiguous"):
    layout = ", non-contiguous" if layout != "contiguous" else ""
    return f"a {h}x{w} map, batch {b}, {str(dtype).removeprefix('torch.')}{layout}"


def _context_weights(q, k, fc1, fc2, head_dim):
    """The reference: attn_conv is checked with it in place of the learner's context_weights."""
    return torch.tanh(fc2(F.silu(fc1(q * k))) * head_dim**-0.5)


def check_context_weights(context_weights):
    """``A = tanh(FC(Swish(FC(Q * K))) * d^-0.5)``: the FCs first, then the scale, then tanh; no softmax."""

    def prop(heads, head_dim, k, h, w, b, dtype, layout, seed):
        module = _attn_conv(heads, head_dim, k, seed, dtype)
        x = randn(b, 4, h, w, seed=seed, dtype=dtype)
        with torch.no_grad():
            q, key, _ = rearrange(module.dwconv(module.qkv(x)), "b (three c) h w -> three b c h w", three=3)
            q, key = (t.contiguous() if layout == "contiguous" else t for t in (q, key))  # the split's views
            got = call(context_weights, "context_weights", q, key, module.context[0], module.context[2], head_dim)
            case = _case(b, h, w, dtype, layout)
            expect_close(got, module.context_weights(x), f"context_weights with head width d={head_dim} on {case}")

    examples = (dict(heads=2, head_dim=2, k=3, h=3, w=4, b=1, dtype=torch.float32, layout="split", seed=0),)
    for_all(
        prop, examples, heads=HEADS, head_dim=HEAD_DIMS, k=KERNELS, h=MAPS, w=MAPS, b=st.integers(1, 2),
        dtype=DTYPES, layout=st.sampled_from(["contiguous", "split"]), seed=SEEDS,
    )  # fmt: skip


def check_attn_conv(attn_conv):
    """``A * V`` with ``[Q | K | V] = DW(X W_qkv)`` split in that order, V aggregated by its depthwise kernel.

    Checked with the reference context_weights in place: a mistake there costs its own points.
    """

    def prop(heads, head_dim, k, qkv_bias, h, w, b, dtype, layout, seed):
        module = _attn_conv(heads, head_dim, k, seed, dtype, qkv_bias)
        x = randn(b, 4, h, w, seed=seed, dtype=dtype, layout=layout)
        parts = (module.qkv, module.dwconv, module.context[0], module.context[2], head_dim)
        with torch.no_grad(), reference_parts(attn_conv, context_weights=_context_weights):
            got = call(attn_conv, "attn_conv", x, *parts)
            case = f"{heads} head(s) of width {head_dim}, kernel {k}, qkv_bias={qkv_bias}"
            expect_close(got, module(x), f"attn_conv with {case}, on {_case(b, h, w, dtype, layout)}")

    examples = (
        dict(
            heads=2, head_dim=2, k=3, qkv_bias=True, h=3, w=5, b=1, dtype=torch.float32, layout="column-major", seed=0
        ),
        dict(heads=1, head_dim=2, k=3, qkv_bias=False, h=4, w=3, b=2, dtype=torch.float64, layout="contiguous", seed=1),
    )
    for_all(
        prop, examples, heads=HEADS, head_dim=HEAD_DIMS, k=KERNELS, qkv_bias=st.booleans(), h=MAPS, w=MAPS,
        b=st.integers(1, 2), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS,
    )  # fmt: skip


def check_pooled_global_attention(pooled_global_attention):
    """Queries from every pixel, keys and values from the average-pooled map, softmax with scale ``d^-0.5``; maps
    square or not, batch 1, float32 and float64, any memory layout."""

    def prop(heads, head_dim, window, qkv_bias, cells, b, dtype, layout, seed):
        module = attnconv.PooledGlobalAttention(4, heads, head_dim, window, qkv_bias=qkv_bias)
        module = double(module, seed).to(dtype).eval()
        h, w = window * cells[0], window * cells[1]
        x = randn(b, 4, h, w, seed=seed, dtype=dtype, layout=layout)
        with torch.no_grad():
            got = call(pooled_global_attention, "pooled_global_attention", x, module.q, module.kv, heads, window)
            case = f"window {window}, {heads} head(s), qkv_bias={qkv_bias}, on {_case(b, h, w, dtype, layout)}"
            expect_close(got, module(x), f"pooled_global_attention with {case}")

    cells = st.tuples(st.integers(1, 3), st.integers(1, 3))
    examples = (
        dict(heads=2, head_dim=2, window=2, qkv_bias=False, cells=(1, 3), b=1, dtype=torch.float32,
             layout="column-major", seed=0),
    )  # fmt: skip
    for_all(
        prop, examples, heads=HEADS, head_dim=HEAD_DIMS, window=st.sampled_from([1, 2, 4]), qkv_bias=st.booleans(),
        cells=cells, b=st.integers(1, 2), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS,
    )  # fmt: skip


def check_clo_fusion(clo_fusion):
    """``proj(concat(local_1, ..., local_L, global))`` on the channel axis, the global branch last."""

    def prop(split, b, h, w, seed):
        module = double(attnconv.CloAttention(8, sum(split), split, [3] * (len(split) - 1), 2), seed).eval()
        x = randn(b, 8, h, w, seed=seed)
        with torch.no_grad():
            parts = ([local(x) for local in module.local], module.global_attn(x), module.proj)
            got = call(clo_fusion, "clo_fusion", *parts)
            expect_close(
                got,
                module(x),
                f"clo_fusion with head groups {split} (the last one global) on {_case(b, h, w, x.dtype)}",
            )

    examples = (dict(split=[1, 2, 1], b=1, h=2, w=4, seed=0),)
    sides = st.sampled_from([2, 4])
    for_all(prop, examples, split=st.sampled_from([[1, 1], [3, 1], [1, 2, 1]]), b=st.integers(1, 2), h=sides, w=sides,
            seed=SEEDS)  # fmt: skip


def _fails(test, implementation) -> bool:
    """Whether a learner's test raises AssertionError on ``implementation`` (any other error propagates)."""
    try:
        test(implementation)
    except AssertionError:
        return True
    return False


def check_context_weights_test(test_context_weights):
    """The learner's test passes on the paper's order and fails on each plausible bug."""
    test_context_weights(lambda q, k, fc1, fc2, head_dim: torch.tanh(fc2(F.silu(fc1(q * k))) * head_dim**-0.5))
    for bug, implementation in (
        ("a sigmoid gate", lambda q, k, fc1, fc2, head_dim: torch.sigmoid(fc2(F.silu(fc1(q * k))) * head_dim**-0.5)),
        (
            "the scale before the FCs",
            lambda q, k, fc1, fc2, head_dim: torch.tanh(fc2(F.silu(fc1(q * k * head_dim**-0.5)))),
        ),
        ("ReLU for Swish", lambda q, k, fc1, fc2, head_dim: torch.tanh(fc2(F.relu(fc1(q * k))) * head_dim**-0.5)),
    ):
        if not _fails(test_context_weights, implementation):
            raise AssertionError(f"your test passes context weights with a bug: {bug}")


def check_attn_conv_params(attn_conv_params):
    """``C 3c + 3c + 3c k^2 + 3c + 2 (c^2 + c)``, compared with vitlocal's AttnConv on drawn sizes."""

    def prop(dim, heads, head_dim, k):
        want = sum(p.numel() for p in attnconv.AttnConv(dim, heads, head_dim, k).parameters())
        got = attn_conv_params(dim, heads * head_dim, k)
        if got != want:
            raise AssertionError(f"attn_conv_params({dim}, {heads * head_dim}, {k}) is {got}, expected {want}")

    for_all(
        prop,
        dim=st.integers(1, 64),
        heads=st.integers(1, 4),
        head_dim=st.integers(1, 16),
        k=st.sampled_from([1, 3, 5, 9]),
    )


def check_choose_window(choose_window):
    """The smallest tiling window whose global head costs no more than the three local heads (measured)."""
    for (h, w), want in (((56, 56), 4), ((28, 28), 2), ((14, 14), 1), ((56, 42), 7)):
        got = choose_window(h, w)
        if got != want:
            raise AssertionError(
                f"choose_window({h}, {w}) is {got}; the smallest window within the local cost is {want}"
            )
