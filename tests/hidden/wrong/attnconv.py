"""Wrong answers to assignment 05, AttnConv (CloFormer)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


@wrong(subtle=False)
def sigmoid_instead_of_tanh():
    """A sigmoid gate where CloFormer has tanh: bounded too, but never negative."""

    def context_weights(q, k, fc1, fc2, head_dim):
        return torch.sigmoid(fc2(F.silu(fc1(q * k))) * head_dim**-0.5)

    return {"context_weights": context_weights}


@wrong(subtle=False)
def scale_before_the_fcs():
    """The scale ``d^-0.5`` applied to ``Q * K`` before the FCs instead of after them."""

    def context_weights(q, k, fc1, fc2, head_dim):
        return torch.tanh(fc2(F.silu(fc1(q * k * head_dim**-0.5))))

    return {"context_weights": context_weights}


@wrong(subtle=False)
def relu_instead_of_swish():
    """ReLU between the FCs where CloFormer has Swish."""

    def context_weights(q, k, fc1, fc2, head_dim):
        return torch.tanh(fc2(F.relu(fc1(q * k))) * head_dim**-0.5)

    return {"context_weights": context_weights}


@wrong(subtle=False)
def softmax_over_channels():
    """Softmax over the channels, as if the weights were attention probabilities."""

    def context_weights(q, k, fc1, fc2, head_dim):
        return (fc2(F.silu(fc1(q * k))) * head_dim**-0.5).softmax(dim=1)

    return {"context_weights": context_weights}


def _gate(q, k, fc1, fc2, head_dim):
    return torch.tanh(fc2(F.silu(fc1(q * k))) * head_dim**-0.5)


@wrong(subtle=False)
def qkv_split_interleaved():
    """The ``3c`` channels split as ``(c three)`` instead of ``(three c)``."""

    def attn_conv(x, qkv, dwconv, fc1, fc2, head_dim):
        q, k, v = rearrange(dwconv(qkv(x)), "b (c three) h w -> three b c h w", three=3)
        return _gate(q, k, fc1, fc2, head_dim) * v

    return {"attn_conv": attn_conv}


@wrong(subtle=False)
def values_not_aggregated():
    """V taken before the depthwise conv: no shared-weight aggregation of the values."""

    def attn_conv(x, qkv, dwconv, fc1, fc2, head_dim):
        q, k, _ = rearrange(dwconv(qkv(x)), "b (three c) h w -> three b c h w", three=3)
        v = rearrange(qkv(x), "b (three c) h w -> three b c h w", three=3)[2]
        return _gate(q, k, fc1, fc2, head_dim) * v

    return {"attn_conv": attn_conv}


def _global(x, q_proj, kv_proj, num_heads, window, pool=F.avg_pool2d, scale=None, kv_layout="two heads d"):
    h = x.shape[-2]
    q = rearrange(q_proj(x), "b (heads d) h w -> b heads (h w) d", heads=num_heads)
    k, v = rearrange(kv_proj(pool(x, window)), f"b ({kv_layout}) i j -> two b heads (i j) d", two=2, heads=num_heads)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return rearrange(out, "b heads (h w) d -> b (heads d) h w", h=h)


@wrong(subtle=False)
def max_pooled_keys():
    """Keys and values from a max-pooled map instead of an average-pooled one."""

    def pooled_global_attention(x, q_proj, kv_proj, num_heads, window):
        return _global(x, q_proj, kv_proj, num_heads, window, pool=F.max_pool2d)

    return {"pooled_global_attention": pooled_global_attention}


@wrong(subtle=False)
def global_without_scale():
    """Softmax of the raw logits, without ``d^-0.5``."""

    def pooled_global_attention(x, q_proj, kv_proj, num_heads, window):
        return _global(x, q_proj, kv_proj, num_heads, window, scale=1.0)

    return {"pooled_global_attention": pooled_global_attention}


@wrong(subtle=False)
def keys_and_values_interleaved():
    """The ``2 g d`` channels split as ``(heads two d)``: each head's keys and values taken from the wrong channels."""

    def pooled_global_attention(x, q_proj, kv_proj, num_heads, window):
        return _global(x, q_proj, kv_proj, num_heads, window, kv_layout="heads two d")

    return {"pooled_global_attention": pooled_global_attention}


@wrong(subtle=False)
def global_branch_first():
    """The global branch concatenated first instead of last."""

    def clo_fusion(local_outputs, global_output, proj):
        return proj(torch.cat([global_output, *local_outputs], dim=1))

    return {"clo_fusion": clo_fusion}


@wrong(subtle=False)
def branches_summed():
    """The branches summed instead of concatenated (the widths do not even agree)."""

    def clo_fusion(local_outputs, global_output, proj):
        return proj(sum(local_outputs) + global_output)

    return {"clo_fusion": clo_fusion}


@wrong(subtle=False)
def test_checks_the_range_only():
    """The learner's test, like the colleague's, checks that the weights lie in [-1, 1]: the bug keeps them there."""

    def test_context_weights_order(context_weights):
        fc1, fc2 = torch.nn.Conv2d(2, 2, 1).double(), torch.nn.Conv2d(2, 2, 1).double()
        q = k = 100 * torch.randn(1, 2, 3, 3, dtype=torch.float64)
        assert context_weights(q, k, fc1, fc2, 4).abs().max() <= 1

    return {"test_context_weights_order": test_context_weights_order}


@wrong(subtle=True)
def test_checks_the_reach_only():
    """The learner's test checks that weights beyond d^-1/2 are reached: it catches the bug, not a sigmoid gate."""

    def test_context_weights_order(context_weights):
        torch.manual_seed(0)
        fc1, fc2 = torch.nn.Conv2d(2, 2, 1).double(), torch.nn.Conv2d(2, 2, 1).double()
        q = k = 10 * torch.randn(1, 2, 3, 3, dtype=torch.float64)
        with torch.no_grad():
            a = context_weights(q, k, fc1, fc2, 4)
        assert a.abs().max() > 0.5 and a.abs().max() <= 1

    return {"test_context_weights_order": test_context_weights_order}


@wrong(subtle=False)
def params_without_biases():
    """The biases left out of the count (every AttnConv layer has one)."""

    def attn_conv_params(dim, width, kernel_size):
        return dim * 3 * width + 3 * width * kernel_size**2 + 2 * width * width

    return {"attn_conv_params": attn_conv_params}


@wrong(subtle=False)
def params_dense_dwconv():
    """The k x k conv counted as dense (3c x 3c x k x k), as if it had no groups."""

    def attn_conv_params(dim, width, kernel_size):
        return (
            dim * 3 * width + 3 * width + 9 * width * width * kernel_size**2 + 3 * width + 2 * (width * width + width)
        )

    return {"attn_conv_params": attn_conv_params}


@wrong(subtle=True)
def window_of_the_paper():
    """The paper's window 8: within the local heads' cost at 56 x 56, but not the smallest such window."""

    def choose_window(h, w):
        return 8

    return {"choose_window": choose_window}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=False)
def global_square_map():
    """The output laid back on a ``sqrt(HW) x sqrt(HW)`` map, as if every map were square."""

    def pooled_global_attention(x, q_proj, kv_proj, num_heads, window):
        out = _global(x, q_proj, kv_proj, num_heads, window)
        side = math.isqrt(x.shape[-2] * x.shape[-1])
        return rearrange(out, "b c h w -> b c (h w)").unflatten(-1, (side, -1))

    return {"pooled_global_attention": pooled_global_attention}


@wrong(subtle=True)
def global_projections_by_hand():
    """The 1x1 projections written out as ``conv2d(x, W) + b``: right with biases, an error for a layer made with
    qkv_bias=False (its projections have no bias)."""

    def pooled_global_attention(x, q_proj, kv_proj, num_heads, window):
        class ByHand:
            def __init__(self, conv):
                self.conv = conv

            def __call__(self, t):
                return F.conv2d(t, self.conv.weight) + self.conv.bias[:, None, None]

        return _global(x, ByHand(q_proj), ByHand(kv_proj), num_heads, window)

    return {"pooled_global_attention": pooled_global_attention}
