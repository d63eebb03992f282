"""CvT's convolutional token embedding and convolutional projection, against torch built-ins."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.convproj import ConvEmbed, ConvProjectionAttention, LayerNorm32
from vitlocal.layers import QuickGELU

odd_kernels = st.sampled_from([3, 1, 5])


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Fill every float parameter and buffer with seeded values: Linear weights ~ N(0, 1/fan_in), BN variances > 0."""
    with torch.no_grad():
        for i, (name, t) in enumerate(sorted(module.state_dict().items())):
            if not t.is_floating_point():
                continue
            r = randn(*t.shape, seed=seed + i)
            if name.endswith("running_var"):
                r = r.abs() + 0.5
            elif t.ndim == 2:
                r = r * t.shape[1] ** -0.5
            t.copy_(r)
    return module


def _cvt_attention(dim_in: int, dim_out: int, heads: int, seed: int, **kwargs) -> ConvProjectionAttention:
    return _randomise(ConvProjectionAttention(dim_in, dim_out, heads, **kwargs).double(), seed).eval()


def _linear_mhsa(m: ConvProjectionAttention, q_in, k_in, v_in, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Separate q/k/v Linear maps, SDPA with `scale`, output Linear; also the explicit softmax weights."""
    b, heads = q_in.shape[0], m.num_heads

    def heads_first(t: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, heads, T, C / heads)
        return t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)

    q = heads_first(F.linear(q_in, m.proj_q.weight, m.proj_q.bias))
    k = heads_first(F.linear(k_in, m.proj_k.weight, m.proj_k.bias))
    v = heads_first(F.linear(v_in, m.proj_v.weight, m.proj_v.bias))
    out = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(b, q_in.shape[1], -1)
    weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    return F.linear(out, m.proj.weight, m.proj.bias), weights


def _reference_qkv_inputs(m, x, h, w, kernel, stride_q, stride_kv, padding_q, padding_kv, training=False):
    """x_q, x_k, x_v from F.conv2d(groups=C) + F.batch_norm on the row-major lattice; CLS prepended untouched."""
    b, _, c = x.shape
    prefix = int(m.with_cls_token)
    cls, fmap = x[:, :prefix], x[:, prefix:].reshape(b, h, w, c).permute(0, 3, 1, 2)

    def dw_bn(branch: nn.Module, stride: int, padding: int) -> torch.Tensor:
        assert branch.conv.weight.shape == (c, 1, kernel, kernel)
        y = F.conv2d(fmap, branch.conv.weight, stride=stride, padding=padding, groups=c)
        bn = branch.bn
        y = F.batch_norm(y, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, training, 0.1, bn.eps)
        return torch.cat([cls, y.flatten(2).transpose(1, 2)], dim=1)

    return (
        dw_bn(m.conv_proj_q, stride_q, padding_q),
        dw_bn(m.conv_proj_k, stride_kv, padding_kv),
        dw_bn(m.conv_proj_v, stride_kv, padding_kv),
    )


# --- T9: identity conv projection = linear MHSA with scale dim^-0.5 ------------------------------------------------


@given(
    batch=st.integers(1, 2),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    dim_in=st.integers(1, 6),
    heads=st.integers(2, 4),
    head_dim=st.integers(1, 4),
    kernel=odd_kernels,
    cls=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_identity_projection_is_linear_mhsa_with_full_width_scale(
    batch, h, w, dim_in, heads, head_dim, kernel, cls, seed
):
    assume(h * w + cls >= 2)  # one key would make the softmax 1 whatever the scale
    dim_out = heads * head_dim
    pad = kernel // 2
    m = _cvt_attention(
        dim_in, dim_out, heads, seed, kernel_size=kernel, stride_kv=1, padding_q=pad, padding_kv=pad, with_cls_token=cls
    )
    with torch.no_grad():
        for branch in (m.conv_proj_q, m.conv_proj_k, m.conv_proj_v):
            branch.conv.weight.zero_()
            branch.conv.weight[:, :, pad, pad] = 1.0  # centre tap 1: the identity
            branch.bn.running_mean.zero_()
            branch.bn.running_var.fill_(1.0)
            branch.bn.weight.fill_(1.0)
            branch.bn.bias.zero_()
            branch.bn.eps = 0.0
    x = randn(batch, cls + h * w, dim_in, seed=seed)
    out = m(x, h, w)
    expected, _ = _linear_mhsa(m, x, x, x, scale=dim_out**-0.5)
    torch.testing.assert_close(out, expected)
    wrong, _ = _linear_mhsa(m, x, x, x, scale=head_dim**-0.5)
    assert not torch.allclose(out, wrong, rtol=1e-4, atol=1e-4), "the scale must be dim_out^-0.5, not head_dim^-0.5"


# --- the general dw_bn projection against F.conv2d + F.batch_norm -------------------------------------------------


@given(
    batch=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    dim_in=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    kernel=odd_kernels,
    stride_q=st.sampled_from([1, 2]),
    stride_kv=st.sampled_from([2, 1, 3]),
    data=st.data(),
    cls=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_projection_matches_conv2d_batch_norm_and_linears(
    batch, h, w, dim_in, heads, head_dim, kernel, stride_q, stride_kv, data, cls, training, seed
):
    assume(batch >= 2 or not training)  # batch statistics need more than one value per channel
    padding_q = data.draw(st.integers(0, kernel // 2), label="padding_q")
    padding_kv = data.draw(st.integers(0, kernel // 2), label="padding_kv")
    assume(min(h, w) + 2 * min(padding_q, padding_kv) >= kernel)  # else a clear ValueError, tested below
    dim_out = heads * head_dim
    m = _cvt_attention(
        dim_in,
        dim_out,
        heads,
        seed,
        kernel_size=kernel,
        stride_q=stride_q,
        stride_kv=stride_kv,
        padding_q=padding_q,
        padding_kv=padding_kv,
        with_cls_token=cls,
    ).train(training)
    x = randn(batch, cls + h * w, dim_in, seed=seed)
    inputs = _reference_qkv_inputs(m, x, h, w, kernel, stride_q, stride_kv, padding_q, padding_kv, training)
    expected, expected_weights = _linear_mhsa(m, *inputs, scale=dim_out**-0.5)
    for got, want in zip(m.forward_conv(x, h, w), inputs, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(m(x, h, w), expected)
    out, weights = m(x, h, w, return_attn=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)


@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    dim=st.integers(1, 4),
    heads=st.integers(1, 2),
    kernel=odd_kernels,
    stride_kv=st.integers(1, 3),
    cls=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_avg_method_pools_kv_and_leaves_q_flat(h, w, dim, heads, kernel, stride_kv, cls, seed):
    pad = kernel // 2
    dim_out = 2 * heads
    m = _cvt_attention(
        dim,
        dim_out,
        heads,
        seed,
        kernel_size=kernel,
        stride_kv=stride_kv,
        padding_q=pad,
        padding_kv=pad,
        with_cls_token=cls,
        method="avg",
    )
    x = randn(2, cls + h * w, dim, seed=seed)
    cls_tok, fmap = x[:, :cls], x[:, cls:].reshape(2, h, w, dim).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(fmap, kernel, stride_kv, pad, ceil_mode=True, count_include_pad=True)
    kv = torch.cat([cls_tok, pooled.flatten(2).transpose(1, 2)], dim=1)
    expected, _ = _linear_mhsa(m, x, kv, kv, scale=dim_out**-0.5)
    torch.testing.assert_close(m(x, h, w), expected)
    assert not any(name.startswith("conv_proj") for name, _ in m.named_parameters())


# --- T10: token bookkeeping ----------------------------------------------------------------------------------------


@given(batch=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), cls=st.booleans(), seed=st.integers(0, 99))
@example(batch=1, h=7, w=7, cls=True, seed=0)
@example(batch=1, h=8, w=6, cls=False, seed=0)
def test_stride_two_squeezes_kv_to_ceil_half_grid(batch, h, w, cls, seed):
    m = _cvt_attention(4, 4, 2, seed, with_cls_token=cls)  # official k=3, stride_kv=2, padding 1
    seen = {}
    for name in ("proj_q", "proj_k", "proj_v"):
        getattr(m, name).register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0].shape))
    x = randn(batch, cls + h * w, 4, seed=seed)
    out, weights = m(x, h, w, return_attn=True)
    n_kv = cls + math.ceil(h / 2) * math.ceil(w / 2)
    assert seen == {"proj_q": (batch, cls + h * w, 4), "proj_k": (batch, n_kv, 4), "proj_v": (batch, n_kv, 4)}
    assert weights.shape == (batch, 2, cls + h * w, n_kv)
    assert out.shape == (batch, cls + h * w, 4)


def test_seven_by_seven_with_cls_gives_50_queries_and_17_keys():
    m = _cvt_attention(6, 6, 1, seed=0, with_cls_token=True)
    q, k, v = m.forward_conv(randn(1, 50, 6, seed=0), 7, 7)
    assert (q.shape[1], k.shape[1], v.shape[1]) == (50, 17, 17)


# --- CLS bypasses the convolutions but not the linears --------------------------------------------------------------


@given(h=st.integers(1, 5), w=st.integers(1, 5), dim=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cls_bypasses_conv_projection_but_goes_through_linears(h, w, dim, seed):
    m = _cvt_attention(dim, 2 * dim, 2, seed, with_cls_token=True)
    x = randn(2, 1 + h * w, dim, seed=seed)
    before = m.forward_conv(x, h, w)
    for i, branch in enumerate((m.conv_proj_q, m.conv_proj_k, m.conv_proj_v)):
        _randomise(branch, seed + 1000 * (i + 1))  # new DW conv and BN weights
    after = m.forward_conv(x, h, w)
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b[:, 0], x[:, 0]) and torch.equal(a[:, 0], x[:, 0])
        assert not torch.allclose(b[:, 1:], a[:, 1:])  # the patch tokens did change with the conv weights
    seen = {}
    m.proj_q.register_forward_hook(lambda mod, args, out: seen.__setitem__("q", out))
    m(x, h, w)
    torch.testing.assert_close(seen["q"][:, 0], F.linear(x[:, 0], m.proj_q.weight, m.proj_q.bias))


# --- ConvEmbed ------------------------------------------------------------------------------------------------------


@given(
    batch=st.integers(1, 2),
    in_chans=st.integers(1, 4),
    dim=st.integers(1, 6),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_conv_embed_is_conv2d_then_layer_norm_over_channels(
    batch, in_chans, dim, kernel, stride, padding, height, width, seed
):
    assume(min(height, width) + 2 * padding >= kernel)
    embed = _randomise(ConvEmbed(in_chans, dim, kernel, stride, padding).double(), seed)
    x = randn(batch, in_chans, height, width, seed=seed)
    y = F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=stride, padding=padding)
    expected = F.layer_norm(y.permute(0, 2, 3, 1), (dim,), embed.norm.weight, embed.norm.bias, eps=1e-5)
    out = embed(x)
    h, w = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    assert out.shape == (batch, dim, h, w)
    torch.testing.assert_close(out, expected.permute(0, 3, 1, 2))


def test_official_stage_embeddings_give_56_28_14_and_squeezed_kv_28_14_7():
    x = randn(1, 3, 224, 224, seed=0, dtype=torch.float32)
    stages = [(3, 64, 7, 4, 2, 1, False), (64, 192, 3, 2, 1, 3, False), (192, 384, 3, 2, 1, 6, True)]
    sides = []
    with torch.no_grad():
        for in_chans, dim, k, s, p, heads, cls in stages:
            x = ConvEmbed(in_chans, dim, k, s, p)(x)
            b, _, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            tokens = torch.cat([torch.zeros(b, cls, dim), tokens], dim=1)
            q, k_, v = ConvProjectionAttention(dim, dim, heads, with_cls_token=cls).eval().forward_conv(tokens, h, w)
            sides.append((h, w, q.shape[1] - cls, k_.shape[1] - cls, v.shape[1] - cls))
    assert sides == [(56, 56, 56**2, 28**2, 28**2), (28, 28, 28**2, 14**2, 14**2), (14, 14, 14**2, 7**2, 7**2)]


@given(seed=st.integers(0, 2**16))
def test_layer_norm_runs_in_float32_for_half_inputs_and_keeps_float64(seed):
    ln = LayerNorm32(6, eps=1e-5)
    x = randn(3, 5, 6, seed=seed, dtype=torch.float32) * 4 + 1
    half = x.bfloat16()
    assert ln(half).dtype == torch.bfloat16
    torch.testing.assert_close(ln(half), F.layer_norm(half.float(), (6,), eps=1e-5).bfloat16(), rtol=0, atol=0)
    x64 = x.double()
    torch.testing.assert_close(ln.double()(x64), F.layer_norm(x64, (6,), eps=1e-5), rtol=1e-12, atol=1e-12)


# --- T11: QuickGELU -------------------------------------------------------------------------------------------------


@given(seed=st.integers(0, 2**16))
def test_quick_gelu_is_x_sigmoid_1702x_not_erf_gelu(seed):
    x = torch.cat([randn(64, seed=seed) * 3, torch.linspace(-4, 4, 81, dtype=torch.float64)])
    torch.testing.assert_close(QuickGELU()(x), x / (1 + torch.exp(-1.702 * x)))
    assert (QuickGELU()(x) - nn.GELU()(x)).abs().max() > 1e-2


# --- no position embedding, official parameter names ---------------------------------------------------------------


def test_no_position_embedding_and_official_parameter_names():
    m = ConvProjectionAttention(8, 8, 2, with_cls_token=True)
    branches = [f"conv_proj_{t}.{p}" for t in "qkv" for p in ("conv.weight", "bn.weight", "bn.bias")]
    linears = [f"{p}.{a}" for p in ("proj_q", "proj_k", "proj_v", "proj") for a in ("weight", "bias")]
    assert {n for n, _ in m.named_parameters()} == set(branches + linears)
    stats = {f"conv_proj_{t}.bn.{s}" for t in "qkv" for s in ("running_mean", "running_var", "num_batches_tracked")}
    assert {n for n, _ in m.named_buffers()} == stats
    assert sum(p.numel() for p in m.parameters()) == 3 * (8 * 9 + 2 * 8) + 4 * (8 * 8 + 8)
    embed = ConvEmbed(3, 64, 7, 4, 2)
    assert {n for n, _ in embed.named_parameters()} == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
    assert not any("pos" in n for n in [*m.state_dict(), *embed.state_dict()])


# --- batch size one, gradients --------------------------------------------------------------------------------------


@given(h=st.integers(1, 5), w=st.integers(1, 5), cls=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_of_one_keeps_its_axis_and_matches_the_batched_row(h, w, cls, seed):
    m = _cvt_attention(4, 6, 3, seed, with_cls_token=cls)
    x = randn(3, cls + h * w, 4, seed=seed)
    one = m(x[:1], h, w)
    assert one.shape == (1, cls + h * w, 6)
    torch.testing.assert_close(one, m(x, h, w)[:1])


@pytest.mark.parametrize("return_attn", [False, True])
def test_gradcheck(return_attn):
    m = _cvt_attention(2, 4, 2, seed=0, with_cls_token=True)
    x = randn(2, 1 + 2 * 3, 2, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: m(t, 2, 3, return_attn=return_attn), (x,), fast_mode=True)


# --- bad input ------------------------------------------------------------------------------------------------------


def _attn(**kwargs) -> ConvProjectionAttention:
    return ConvProjectionAttention(**{"dim_in": 8, "dim_out": 8, "num_heads": 2, **kwargs})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: _attn(with_cls_token=True)(torch.zeros(1, 16, 8), 4, 4), r"16 tokens.*with_cls_token=True.*need 17"),
        (lambda: _attn()(torch.zeros(1, 17, 8), 4, 4), r"17 tokens.*need 16"),
        (lambda: _attn()(torch.zeros(1, 12, 8), 4, 4), r"12 tokens.*need 16"),
        (lambda: _attn()(torch.zeros(16, 8), 4, 4), r"x must have 3 dimensions"),
        (lambda: _attn()(torch.zeros(1, 8, 4, 4), 4, 4), r"x must have 3 dimensions"),
        (lambda: _attn()(torch.zeros(1, 16, 6), 4, 4), r"x has 6 channels.*built for 8"),
        (lambda: _attn()(torch.zeros(1, 16, 8), 0, 16), r"h must be a positive integer"),
        (lambda: _attn(kernel_size=4), r"kernel_size must be odd.*use 3 or 5"),
        (lambda: _attn(num_heads=3), r"num_heads=3 must divide dim_out=8.*\[1, 2, 4, 8\]"),
        (lambda: _attn(dim_out=6, num_heads=4), r"num_heads=4 must divide dim_out=6"),
        (lambda: _attn(stride_kv=0), r"stride_kv must be a positive integer"),
        (lambda: _attn(padding_kv=2), r"padding_kv=2 exceeds kernel_size // 2 = 1"),
        (lambda: _attn(kernel_size=1), r"padding_q=1 exceeds kernel_size // 2 = 0"),
        (
            lambda: _attn(padding_kv=0)(torch.zeros(1, 2, 8), 1, 2),
            r"1x2 map is too small for kernel_size=3 with padding_kv=0",
        ),
        (lambda: _attn(method="linear"), r"method must be one of.*broken"),
        (lambda: ConvEmbed(3, 8, 3, 2, 1)(torch.zeros(1, 4, 8, 8)), r"x has 4 channels.*built for 3"),
        (lambda: ConvEmbed(3, 8, 3, 2, 1)(torch.zeros(3, 8, 8)), r"x must have 4 dimensions"),
        (
            lambda: ConvEmbed(3, 8, 7, 4, 2)(torch.zeros(1, 3, 2, 8)),
            r"2x8 map is too small for patch_size=7 with padding=2.*at least 3x3",
        ),
        (lambda: ConvEmbed(3, 8, 7, 4, -1), r"padding must be an integer >= 0"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
