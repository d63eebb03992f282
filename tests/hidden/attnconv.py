"""Hidden checks of assignment 05, AttnConv and pooled global attention (CloFormer)."""

from __future__ import annotations

import torch
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
