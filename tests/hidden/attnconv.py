"""Hidden checks of assignment 05, AttnConv and pooled global attention (CloFormer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import attnconv

from ._common import SEEDS, double, expect_close, for_all, randn

HEADS = st.integers(1, 2)
HEAD_DIMS = st.sampled_from([2, 4])
KERNELS = st.sampled_from([3, 5])
MAPS = st.integers(3, 7)


def _attn_conv(heads, head_dim, k, seed):
    return double(attnconv.AttnConv(4, heads, head_dim, k), seed).eval()


def check_context_weights(context_weights):
    """``A = tanh(FC(Swish(FC(Q * K))) * d^-0.5)``: the FCs first, then the scale, then tanh; no softmax."""

    def prop(heads, head_dim, k, h, w, seed):
        module = _attn_conv(heads, head_dim, k, seed)
        x = randn(2, 4, h, w, seed=seed)
        with torch.no_grad():
            q, key, _ = rearrange(module.dwconv(module.qkv(x)), "b (three c) h w -> three b c h w", three=3)
            got = context_weights(q, key, module.context[0], module.context[2], head_dim)
            expect_close(got, module.context_weights(x), f"context_weights with head width d={head_dim}")

    for_all(prop, heads=HEADS, head_dim=HEAD_DIMS, k=KERNELS, h=MAPS, w=MAPS, seed=SEEDS)


def check_attn_conv(attn_conv):
    """``A * V`` with ``[Q | K | V] = DW(X W_qkv)`` split in that order, V aggregated by its depthwise kernel."""

    def prop(heads, head_dim, k, h, w, seed):
        module = _attn_conv(heads, head_dim, k, seed)
        x = randn(2, 4, h, w, seed=seed)
        with torch.no_grad():
            got = attn_conv(x, module.qkv, module.dwconv, module.context[0], module.context[2], head_dim)
            expect_close(got, module(x), f"attn_conv with {heads} head(s) of width {head_dim}, kernel {k}")

    for_all(prop, heads=HEADS, head_dim=HEAD_DIMS, k=KERNELS, h=MAPS, w=MAPS, seed=SEEDS)


def check_pooled_global_attention(pooled_global_attention):
    """Queries from every pixel, keys and values from the average-pooled map, softmax with scale ``d^-0.5``."""

    def prop(heads, head_dim, window, cells, seed):
        module = double(attnconv.PooledGlobalAttention(4, heads, head_dim, window), seed).eval()
        x = randn(2, 4, window * cells[0], window * cells[1], seed=seed)
        with torch.no_grad():
            got = pooled_global_attention(x, module.q, module.kv, heads, window)
            expect_close(got, module(x), f"pooled_global_attention with window {window} and {heads} head(s)")

    cells = st.tuples(st.integers(1, 3), st.integers(1, 3))
    for_all(prop, heads=HEADS, head_dim=HEAD_DIMS, window=st.sampled_from([1, 2, 4]), cells=cells, seed=SEEDS)


def check_clo_fusion(clo_fusion):
    """``proj(concat(local_1, ..., local_L, global))`` on the channel axis, the global branch last."""

    def prop(split, seed):
        module = double(attnconv.CloAttention(8, sum(split), split, [3] * (len(split) - 1), 2), seed).eval()
        x = randn(2, 8, 4, 4, seed=seed)
        with torch.no_grad():
            got = clo_fusion([local(x) for local in module.local], module.global_attn(x), module.proj)
            expect_close(got, module(x), f"clo_fusion with head groups {split} (the last one global)")

    for_all(prop, split=st.sampled_from([[1, 1], [3, 1], [1, 2, 1]]), seed=SEEDS)


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
