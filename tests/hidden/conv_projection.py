"""Hidden checks of assignment 04, convolutional token embedding and projection (CvT)."""

from __future__ import annotations

import torch
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import convproj

from ._common import DTYPES, LAYOUTS, SEEDS, call, double, expect_close, for_all, randn

STAGES = st.sampled_from([(7, 4, 2), (3, 2, 1), (3, 1, 1)])  # CvT's embeddings (kernel, stride, padding), and s=1
MAPS = st.integers(3, 9)


def _projection(dim_in, dim_out, heads, with_cls, seed, qkv_bias=True, dtype=torch.float64):
    """A reference `ConvProjectionAttention` in eval mode, weights and BN statistics drawn from ``seed``."""
    module = convproj.ConvProjectionAttention(dim_in, dim_out, heads, qkv_bias=qkv_bias, with_cls_token=with_cls)
    return double(module, seed).to(dtype).eval()


def _case(b, h, w, dtype, layout):
    layout = ", non-contiguous" if layout != "contiguous" else ""
    return f"a {h}x{w} map, batch {b}, {str(dtype).removeprefix('torch.')}{layout}"


def check_conv_token_embedding(conv_token_embedding):
    """``LN(Conv2d(x))``, the LayerNorm over the channels of every pixel; batch 1, float32, any memory layout."""

    def prop(stage, h, w, b, dtype, layout, seed):
        k, s, p = stage
        embed = double(convproj.ConvEmbed(3, 8, k, s, p), seed).to(dtype).eval()
        x = randn(b, 3, h + k, w + k, seed=seed, dtype=dtype, layout=layout)
        with torch.no_grad():
            got = call(conv_token_embedding, "conv_token_embedding", x, embed.proj, embed.norm)
            case = _case(b, h + k, w + k, dtype, layout)
            expect_close(got, embed(x), f"conv_token_embedding with kernel {k}, stride {s}, padding {p} on {case}")

    examples = (dict(stage=(3, 2, 1), h=4, w=6, b=1, dtype=torch.float32, layout="column-major", seed=0),)
    for_all(prop, examples, stage=STAGES, h=MAPS, w=MAPS, b=st.integers(1, 2), dtype=DTYPES, layout=LAYOUTS,
            seed=SEEDS)  # fmt: skip


def check_conv_projection(conv_projection):
    """``x_q, x_k, x_v``: each its own depthwise conv + BN on the lattice; the class token bypasses them. In eval
    mode and in training mode (BN normalises with the whole batch's statistics), batch 1, any memory layout."""

    def prop(with_cls, h, w, b, train, layout, seed):
        module = _projection(4, 4, 2, with_cls, seed).train(train)
        x = randn(b, int(with_cls) + h * w, 4, seed=seed, layout=layout)
        parts = (module.conv_proj_q, module.conv_proj_k, module.conv_proj_v)
        with torch.no_grad():
            want = module.forward_conv(x, h, w)  # in training mode the output uses the batch's statistics only
            got = call(conv_projection, "conv_projection", x, h, w, *parts, with_cls)
        if not isinstance(got, tuple) or len(got) != 3:
            raise AssertionError("conv_projection must return the triple (x_q, x_k, x_v)")
        mode = "training" if train else "eval"
        case = f"{_case(b, h, w, torch.float64, layout)}, {mode} mode, class token: {with_cls}"
        for name, ours, theirs in zip(("x_q", "x_k", "x_v"), got, want, strict=True):
            expect_close(ours, theirs, f"{name} of conv_projection on {case}")

    examples = (
        dict(with_cls=True, h=3, w=4, b=2, train=True, layout="contiguous", seed=0),
        dict(with_cls=False, h=4, w=3, b=1, train=False, layout="column-major", seed=1),
    )
    for_all(prop, examples, with_cls=st.booleans(), h=MAPS, w=MAPS, b=st.integers(1, 2), train=st.booleans(),
            layout=LAYOUTS, seed=SEEDS)  # fmt: skip


def check_conv_attention(conv_attention):
    """Separate q/k/v Linear layers, heads, the scale ``C_out^-0.5`` of CvT (not ``d^-0.5``), then ``proj``; with
    and without biases on q/k/v, batch 1, float32 and float64."""

    def prop(dims, heads, with_cls, qkv_bias, b, dtype, seed):
        module = _projection(*dims, heads, with_cls, seed, qkv_bias, dtype)
        x = randn(b, int(with_cls) + 5 * 4, dims[0], seed=seed, dtype=dtype)
        with torch.no_grad():
            x_q, x_k, x_v = module.forward_conv(x, 5, 4)
            parts = (module.proj_q, module.proj_k, module.proj_v, module.proj, heads)
            got = call(conv_attention, "conv_attention", x_q, x_k, x_v, *parts)
            case = f"widths {dims}, {heads} heads, qkv_bias={qkv_bias}, batch {b}, {str(dtype).removeprefix('torch.')}"
            expect_close(got, module(x, 5, 4), f"conv_attention with {case}")

    examples = (
        dict(dims=(4, 8), heads=2, with_cls=True, qkv_bias=False, b=1, dtype=torch.float64, seed=0),
        dict(dims=(4, 4), heads=4, with_cls=False, qkv_bias=True, b=2, dtype=torch.float32, seed=1),
    )
    for_all(
        prop,
        examples,
        dims=st.sampled_from([(4, 4), (4, 8)]),
        heads=st.sampled_from([1, 2, 4]),
        with_cls=st.booleans(),
        qkv_bias=st.booleans(),
        b=st.integers(1, 2),
        dtype=DTYPES,
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
