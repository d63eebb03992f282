"""Hidden checks of assignment 04, convolutional token embedding and projection (CvT)."""

from __future__ import annotations

import torch
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import convproj

from ._common import SEEDS, double, expect_close, for_all, randn

STAGES = st.sampled_from([(7, 4, 2), (3, 2, 1), (3, 1, 1)])  # CvT's embeddings (kernel, stride, padding), and s=1
MAPS = st.integers(3, 9)


def _projection(dim_in, dim_out, heads, with_cls, seed):
    """A reference `ConvProjectionAttention` in float64 and eval mode, weights and BN statistics drawn from ``seed``."""
    module = convproj.ConvProjectionAttention(dim_in, dim_out, heads, with_cls_token=with_cls)
    return double(module, seed).eval()


def check_conv_token_embedding(conv_token_embedding):
    """``LN(Conv2d(x))``, the LayerNorm over the channels of every pixel."""

    def prop(stage, h, w, seed):
        k, s, p = stage
        embed = double(convproj.ConvEmbed(3, 8, k, s, p), seed).eval()
        x = randn(2, 3, h + k, w + k, seed=seed)
        with torch.no_grad():
            got = conv_token_embedding(x, embed.proj, embed.norm)
            expect_close(got, embed(x), f"conv_token_embedding with kernel {k}, stride {s}, padding {p}")

    for_all(prop, stage=STAGES, h=MAPS, w=MAPS, seed=SEEDS)


def check_conv_projection(conv_projection):
    """``x_q, x_k, x_v``: each its own depthwise conv + BN on the lattice; the class token bypasses them."""

    def prop(with_cls, h, w, seed):
        module = _projection(4, 4, 2, with_cls, seed)
        x = randn(2, int(with_cls) + h * w, 4, seed=seed)
        with torch.no_grad():
            want = module.forward_conv(x, h, w)
            got = conv_projection(x, h, w, module.conv_proj_q, module.conv_proj_k, module.conv_proj_v, with_cls)
        if not isinstance(got, tuple) or len(got) != 3:
            raise AssertionError("conv_projection must return the triple (x_q, x_k, x_v)")
        for name, ours, theirs in zip(("x_q", "x_k", "x_v"), got, want, strict=True):
            expect_close(ours, theirs, f"{name} of conv_projection on a {h}x{w} map (class token: {with_cls})")

    for_all(prop, with_cls=st.booleans(), h=MAPS, w=MAPS, seed=SEEDS)


def check_conv_attention(conv_attention):
    """Separate q/k/v Linear layers, heads, the scale ``C_out^-0.5`` of CvT (not ``d^-0.5``), then ``proj``."""

    def prop(dims, heads, with_cls, seed):
        module = _projection(*dims, heads, with_cls, seed)
        x = randn(2, int(with_cls) + 5 * 4, dims[0], seed=seed)
        with torch.no_grad():
            x_q, x_k, x_v = module.forward_conv(x, 5, 4)
            got = conv_attention(x_q, x_k, x_v, module.proj_q, module.proj_k, module.proj_v, module.proj, heads)
            expect_close(got, module(x, 5, 4), f"conv_attention with widths {dims} and {heads} heads")

    for_all(
        prop,
        dims=st.sampled_from([(4, 4), (4, 8)]),
        heads=st.sampled_from([1, 2, 4]),
        with_cls=st.booleans(),
        seed=SEEDS,
    )


def check_kv_tokens(kv_tokens):
    """``[1 +] ceil(h / 2) * ceil(w / 2)``: what a 3x3 conv with stride 2 and padding 1 leaves."""
    for with_cls in (False, True):
        for h in range(1, 13):
            for w in range(1, 13):
                want = int(with_cls) + ((h - 1) // 2 + 1) * ((w - 1) // 2 + 1)
                got = kv_tokens(h, w, with_cls)
                if got != want:
                    raise AssertionError(f"kv_tokens({h}, {w}, with_cls={with_cls}) is {got}, expected {want}")


def _fails(test, implementation) -> bool:
    """Whether a learner's test raises AssertionError on ``implementation`` (any other error propagates)."""
    try:
        test(implementation)
    except AssertionError:
        return True
    return False


def _reference(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
    prefix = int(with_cls_token)
    fmap = rearrange(x[:, prefix:], "b (h w) c -> b c h w", h=h, w=w)
    return tuple(
        torch.cat([x[:, :prefix], rearrange(p(fmap), "b c h w -> b (h w) c")], 1) for p in (proj_q, proj_k, proj_v)
    )


def _columns_first(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
    prefix = int(with_cls_token)
    fmap = rearrange(x[:, prefix:], "b (w h) c -> b c h w", h=h, w=w)
    return tuple(
        torch.cat([x[:, :prefix], rearrange(p(fmap), "b c h w -> b (w h) c")], 1) for p in (proj_q, proj_k, proj_v)
    )


def _queries_through_the_key_conv(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
    return _reference(x, h, w, proj_k, proj_k, proj_v, with_cls_token)


def _class_token_last(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
    return tuple(
        torch.cat([t[:, 1:], t[:, :1]], 1) if with_cls_token else t
        for t in _reference(x, h, w, proj_q, proj_k, proj_v, with_cls_token)
    )


def check_conv_projection_test(test_conv_projection):
    """The learner's test passes on CvT's projection and fails on each plausible bug."""
    test_conv_projection(_reference)  # a correct projection must pass
    for bug, implementation in (
        ("the lattice read column by column", _columns_first),
        ("the queries through the key projection", _queries_through_the_key_conv),
        ("the class token put last", _class_token_last),
    ):
        if not _fails(test_conv_projection, implementation):
            raise AssertionError(f"your test passes a convolutional projection with a bug: {bug}")


def check_choose_stride_kv(choose_stride_kv):
    """The smallest stride whose measured MACs fit: 2 for CvT-13's first stage under 400 MMACs."""
    for h, w, dim, budget, want in (
        (56, 56, 64, 400e6, 2),
        (56, 56, 64, 2e9, 1),
        (56, 56, 64, 120e6, 4),
        (28, 28, 192, 150e6, 2),
    ):
        got = choose_stride_kv(h, w, dim, budget)
        if got != want:
            raise AssertionError(
                f"choose_stride_kv({h}, {w}, {dim}, {budget:g}) is {got}; the smallest within budget is {want}"
            )
