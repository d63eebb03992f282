"""CloFormer's AttnConv, pooled global attention, Clo attention, ConvFFN and GroupNorm(1).

Every module is compared with an independent functional computation (``F.conv2d`` with groups,
``F.avg_pool2d``, an explicit softmax) built from the module's own weights, in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.attnconv import AttnConv, CloAttention, ConvFFN, PooledGlobalAttention, group_norm

odd_kernels = st.sampled_from([1, 3, 5])
seeds = st.integers(0, 2**16)


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    """Generic float64 weights and biases (not the init's), so every term of the maths is exercised."""
    module = module.double().eval()
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(0.5 * randn(*p.shape, seed=seed + i + 1))
    return module


def _attn_conv_reference(m: AttnConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AttnConv written out with F.conv2d: returns (Z, tanh(Z) * V), Z the pre-tanh logits."""
    c = m.num_heads * m.head_dim
    qkv = F.conv2d(x, m.qkv.weight, m.qkv.bias)
    qkv = F.conv2d(qkv, m.dwconv.weight, m.dwconv.bias, padding=m.kernel_size // 2, groups=3 * c)
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    fc1, fc2 = m.context[0], m.context[2]
    hidden = F.conv2d(q * k, fc1.weight, fc1.bias)
    hidden = hidden * torch.sigmoid(hidden)  # Swish
    z = F.conv2d(hidden, fc2.weight, fc2.bias) * m.head_dim**-0.5
    return z, torch.tanh(z) * v


def _global_reference(m: PooledGlobalAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled global attention written out: avg_pool2d, 1x1 convs, explicit softmax. Returns (out, weights)."""
    b, _, h, w = x.shape
    g, d = m.num_heads, m.head_dim
    q = F.conv2d(x, m.q.weight, m.q.bias).reshape(b, g, d, h * w).transpose(-1, -2)
    kv = F.conv2d(F.avg_pool2d(x, m.window), m.kv.weight, m.kv.bias)
    n_keys = kv.shape[-2] * kv.shape[-1]
    k, v = kv.reshape(b, 2, g, d, n_keys).transpose(-1, -2).unbind(1)
    weights = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, dim=-1)
    return (weights @ v).transpose(-1, -2).reshape(b, g * d, h, w), weights


@given(
    batch=st.integers(1, 2),
    dim=st.integers(1, 6),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 4),
    kernel=odd_kernels,
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    seed=seeds,
)
def test_context_weights_are_bounded_saturate_and_are_not_normalised(batch, dim, heads, head_dim, kernel, h, w, seed):
    """T17: tanh weights lie in [-1, 1], are exactly +-1 wherever the logits are huge, and need not sum to 1."""
    m = _randomize(AttnConv(dim, heads, head_dim, kernel), seed)
    x = randn(batch, dim, h, w, seed=seed)
    a = m.context_weights(x)
    assert a.shape == (batch, heads * head_dim, h, w)
    assert a.abs().max() <= 1.0
    # no softmax: neither the channels of a pixel nor the positions of a channel sum to 1
    assert (a.sum(dim=1) - 1).abs().max() > 1e-3
    assert (a.sum(dim=(2, 3)) - 1).abs().max() > 1e-3
    huge = m.context_weights(x * 1e6)
    assert torch.isfinite(huge).all() and huge.abs().max() <= 1.0
    z = _attn_conv_reference(m, x * 1e6)[0]
    saturated = z.abs() > 20  # tanh(20) rounds to 1 in float64
    torch.testing.assert_close(huge[saturated], z[saturated].sign(), rtol=0, atol=0)


def test_context_weights_saturate_for_huge_inputs_at_a_cloformer_width():
    """At CloFormer-S's stage-1 local width (3 heads of 16) nearly every weight of a huge input is exactly +-1.

    (Not every one: where every FC1 unit is negative, Swish gives 0 and A = tanh(b2 d^-0.5) stays small.)
    """
    m = _randomize(AttnConv(64, 3, head_dim=16, kernel_size=3), seed=0)
    huge = m.context_weights(randn(1, 64, 8, 8, seed=1) * 1e6)
    assert huge.abs().max() <= 1.0
    assert (huge.abs() == 1.0).double().mean() > 0.9


@given(
    batch=st.integers(1, 2),
    dim=st.integers(1, 6),
    heads=st.integers(1, 3),
    head_dim=st.one_of(st.none(), st.integers(1, 4)),
    kernel=odd_kernels,
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=seeds,
)
def test_attn_conv_equals_functional_computation(batch, dim, heads, head_dim, kernel, h, w, seed):
    if head_dim is None:
        dim = heads * dim  # the default head width C / m needs m | C
    m = _randomize(AttnConv(dim, heads, head_dim, kernel), seed)
    x = randn(batch, dim, h, w, seed=seed)
    logits, expected = _attn_conv_reference(m, x)
    torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(m.context_weights(x), torch.tanh(logits))


@given(
    heads=st.lists(st.integers(1, 2), min_size=1, max_size=2),
    head_dim=st.integers(1, 3),
    kernels=st.lists(odd_kernels, min_size=2, max_size=2),
    shift=st.sampled_from([1, 2, 3]),
    extra=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=seeds,
)
@settings(max_examples=15)
def test_local_branch_is_translation_equivariant_away_from_borders(heads, head_dim, kernels, shift, extra, seed):
    """T15: local-only Clo attention commutes with shifts on the interior (one DW conv: margin = max(k) // 2)."""
    num_heads = sum(heads)
    kernels = kernels[: len(heads)]
    m = _randomize(CloAttention(num_heads * head_dim, num_heads, [*heads, 0], kernels, window_size=1), seed)
    margin = max(kernels) // 2
    h, w = 2 * margin + shift + extra[0], 2 * margin + shift + extra[1]
    x = randn(2, num_heads * head_dim, h, w, seed=seed)
    y0 = m(x)
    y1 = m(torch.roll(x, shifts=(shift, shift), dims=(2, 3)))
    mg, s = margin, shift
    torch.testing.assert_close(y1[..., s + mg : h - mg, s + mg : w - mg], y0[..., mg : h - mg - s, mg : w - mg - s])


@given(
    heads=st.integers(1, 2),
    head_dim=st.integers(1, 3),
    window=st.integers(2, 4),
    grid=st.tuples(st.integers(2, 3), st.integers(2, 3)),
    seed=seeds,
)
@settings(max_examples=15)
def test_global_branch_is_equivariant_only_for_multiples_of_the_window(heads, head_dim, window, grid, seed):
    """T16: rolling by the pool window permutes the pooled keys (exact); a shift of 1 changes them."""
    m = _randomize(PooledGlobalAttention(heads * head_dim, heads, head_dim, window), seed)
    x = randn(2, heads * head_dim, window * grid[0], window * grid[1], seed=seed)
    y = m(x)
    for s in (window, 2 * window):
        torch.testing.assert_close(m(torch.roll(x, (s, s), dims=(2, 3))), torch.roll(y, (s, s), dims=(2, 3)))
    off_grid = m(torch.roll(x, (1, 1), dims=(2, 3))) - torch.roll(y, (1, 1), dims=(2, 3))
    assert off_grid.abs().max() > 1e-6


@given(
    batch=st.integers(1, 2),
    dim=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    window=st.integers(1, 3),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=seeds,
)
def test_global_branch_equals_pooled_softmax_attention(batch, dim, heads, head_dim, window, grid, seed):
    m = _randomize(PooledGlobalAttention(dim, heads, head_dim, window), seed)
    h, w = window * grid[0], window * grid[1]
    x = randn(batch, dim, h, w, seed=seed)
    expected, expected_weights = _global_reference(m, x)
    weights = m.attention_weights(x)
    assert weights.shape == (batch, heads, h * w, grid[0] * grid[1])  # (H / window)(W / window) keys
    torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(weights, expected_weights)


@pytest.mark.parametrize(("size", "window"), [(56, 8), (28, 4), (14, 2), (7, 1)])
def test_cloformer_pool_windows_give_49_keys_in_every_stage(size, window):
    m = PooledGlobalAttention(4, 1, window=window)
    assert m.attention_weights(torch.randn(1, 4, size, size)).shape == (1, 1, size * size, 49)


@given(
    local=st.lists(st.integers(1, 2), min_size=1, max_size=2),
    global_heads=st.integers(1, 2),
    head_dim=st.integers(1, 3),
    kernels=st.lists(odd_kernels, min_size=2, max_size=2),
    window=st.integers(1, 2),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=seeds,
)
def test_clo_attention_is_concat_then_fc_of_its_branches(local, global_heads, head_dim, kernels, window, grid, seed):
    num_heads = sum(local) + global_heads
    dim = num_heads * head_dim
    kernels = kernels[: len(local)]
    m = _randomize(CloAttention(dim, num_heads, [*local, global_heads], kernels, window), seed)
    x = randn(2, dim, window * grid[0], window * grid[1], seed=seed)
    branches = [attn_conv(x) for attn_conv in m.local] + [m.global_attn(x)]
    assert [b.shape[1] for b in branches] == [n * head_dim for n in [*local, global_heads]]
    torch.testing.assert_close(m(x), F.conv2d(torch.cat(branches, dim=1), m.proj.weight, m.proj.bias))


@given(head_dim=st.integers(1, 3), kernel=odd_kernels, h=st.integers(1, 5), w=st.integers(1, 5), seed=seeds)
def test_local_only_and_global_only_splits(head_dim, kernel, h, w, seed):
    """Ablations: ``[4, 0]`` has no global branch (any map size works), ``[4]`` has no local branch."""
    dim = 4 * head_dim
    x = randn(1, dim, h, w, seed=seed)
    local_only = _randomize(CloAttention(dim, 4, [4, 0], [kernel], window_size=8), seed)
    assert local_only.global_attn is None and len(local_only.local) == 1
    expected = F.conv2d(local_only.local[0](x), local_only.proj.weight, local_only.proj.bias)
    torch.testing.assert_close(local_only(x), expected)
    global_only = _randomize(CloAttention(dim, 4, [4], [], window_size=1), seed)
    assert len(global_only.local) == 0 and global_only.global_attn.num_heads == 4
    expected = F.conv2d(global_only.global_attn(x), global_only.proj.weight, global_only.proj.bias)
    torch.testing.assert_close(global_only(x), expected)
    assert local_only(x).shape == global_only(x).shape == (1, dim, h, w)


@pytest.mark.parametrize(
    ("dim", "num_heads", "group_split", "kernel_sizes"),
    [(32, 4, [3, 1], [3]), (352, 22, [7, 15], [9]), (64, 4, [2, 1, 1], [3, 5]), (32, 4, [4], []), (32, 4, [4, 0], [7])],
)
def test_parameter_count_matches_the_official_layout(dim, num_heads, group_split, kernel_sizes):
    """Official widths: qkv C->3c, DW over 3c, FC c->c twice (mixing all c channels), q C->gd, kv C->2gd, proj C->C."""
    d = dim // num_heads
    expected = dim * dim + dim  # proj
    for m, k in zip(group_split[:-1], kernel_sizes, strict=True):
        c = m * d  # an empty group (c = 0) adds nothing
        expected += (dim * 3 * c + 3 * c) + (3 * c * k * k + 3 * c) + 2 * (c * c + c)
    g = group_split[-1] * d
    expected += (dim * g + g) + (dim * 2 * g + 2 * g)
    m = CloAttention(dim, num_heads, group_split, kernel_sizes, window_size=1)
    assert sum(p.numel() for p in m.parameters()) == expected


@given(
    in_dim=st.integers(1, 4),
    hidden=st.integers(1, 6),
    out_dim=st.integers(1, 4),
    kernel=odd_kernels,
    stride=st.sampled_from([1, 2]),
    half=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=seeds,
)
def test_conv_ffn_equals_functional_computation(in_dim, hidden, out_dim, kernel, stride, half, seed):
    m = _randomize(ConvFFN(in_dim, hidden, out_dim, kernel, stride), seed)
    h, w = 2 * half[0], 2 * half[1]
    x = randn(2, in_dim, h, w, seed=seed)
    hidden = F.gelu(F.conv2d(x, m.fc1.weight, m.fc1.bias))
    z = F.conv2d(hidden, m.dwconv.weight, m.dwconv.bias, stride=stride, padding=kernel // 2, groups=hidden.shape[1])
    y = m(x)
    assert y.shape == (2, out_dim, h // stride, w // stride)  # stride 2 halves the map
    torch.testing.assert_close(y, F.conv2d(z, m.fc2.weight, m.fc2.bias))
    # the quirk is visible: a GELU after the DW conv would change the output
    assert (y - F.conv2d(F.gelu(z), m.fc2.weight, m.fc2.bias)).abs().max() > 1e-6


@given(channels=st.integers(2, 6), h=st.integers(1, 4), w=st.integers(2, 4), seed=seeds)
def test_group_norm_spans_channels_and_space_and_is_not_a_channel_layer_norm(channels, h, w, seed):
    """T18: GroupNorm(1, C) takes one mean and variance over (C, H, W); a per-pixel LN takes one per pixel."""
    norm = _randomize(group_norm(channels), seed)
    x = randn(2, channels, h, w, seed=seed)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    affine = norm.weight[:, None, None], norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + norm.eps) * affine[0] + affine[1])
    per_pixel_ln = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), norm.weight, norm.bias, norm.eps).permute(
        0, 3, 1, 2
    )
    assert (norm(x) - per_pixel_ln).abs().max() > 1e-3


def test_attn_conv_gradcheck():
    m = _randomize(AttnConv(3, 2, head_dim=1, kernel_size=3), seed=0)
    names, params = zip(*m.named_parameters(), strict=True)
    x = randn(1, 3, 3, 4, seed=1).requires_grad_()

    def f(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *(p.detach().clone().requires_grad_() for p in params)))


@pytest.mark.parametrize(
    ("build", "shape", "match"),
    [
        (lambda: PooledGlobalAttention(4, 1, window=3), (1, 4, 6, 4), r"window=3 must divide W=4; values that work"),
        (lambda: PooledGlobalAttention(4, 1, window=2), (1, 4, 5, 4), r"window=2 must divide H=5"),
        (lambda: CloAttention(8, 4, [2, 2], [3], 4), (1, 8, 8, 6), r"window=4 must divide W=6"),
        (lambda: AttnConv(4, 1, kernel_size=4), None, r"kernel_size must be odd .* use 3 or 5"),
        (lambda: ConvFFN(4, 8, 4, kernel_size=2), None, r"kernel_size must be odd"),
        (lambda: CloAttention(8, 4, [2, 2], [4], 1), None, r"kernel_sizes\[0\] must be odd"),
        (lambda: CloAttention(6, 4, [2, 2], [3], 1), None, r"num_heads=4 must divide dim=6; values that work"),
        (lambda: AttnConv(6, 4), None, r"num_heads=4 must divide dim=6"),
        (lambda: CloAttention(8, 4, [2, 1], [3], 1), None, r"group_split=\[2, 1\] sums to 3 heads, but num_heads=4"),
        (lambda: CloAttention(8, 4, [5, -1], [3], 1), None, r"group_split must be .* >= 0"),
        (lambda: CloAttention(8, 4, [2, 2], [3, 5], 1), None, r"kernel_sizes=\[3, 5\] needs .* 1 entries"),
        (lambda: AttnConv(4, 2), (4, 5, 5), r"x must have 4 dimensions \(B, C, H, W\)"),
        (lambda: CloAttention(8, 4, [2, 2], [3], 1), (1, 8, 4), r"x must have 4 dimensions"),
        (lambda: AttnConv(4, 2), (1, 3, 5, 5), r"x has 3 channels .* built for 4"),
        (lambda: PooledGlobalAttention(4, 2), (1, 5, 4, 4), r"x has 5 channels"),
        (lambda: ConvFFN(4, 8, 4), (1, 2, 4, 4), r"x has 2 channels"),
    ],
)
def test_bad_input_raises_value_error_naming_the_fix(build, shape, match):
    with pytest.raises(ValueError, match=match):
        module = build()
        module(torch.randn(*shape))
