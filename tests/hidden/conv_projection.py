"""Hidden checks of assignment 04, convolutional token embedding and projection (CvT)."""

from __future__ import annotations

import torch
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
