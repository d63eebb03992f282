"""Slide-Transformer properties, each against an independent computation.

Independent references: ``F.unfold`` and ``F.conv2d`` (torch built-ins), naive Python loops, and the official
forward re-expressed with plain reshapes/permutes in `official_forward` below.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.slide import (
    DeformedShift,
    SlideAttention,
    im2col,
    local_attention_reference,
    one_hot_kernels,
    shift,
    shift_conv,
)

seeds = st.integers(0, 2**16)
odd_k = st.sampled_from([1, 3, 5, 7])
side = st.integers(1, 6)


def unfold_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.unfold`` (channel-major, then kernel row-major) viewed as ``(B, C, k*k, H, W)``."""
    b, c, h, w = x.shape
    return F.unfold(x, k, padding=k // 2).reshape(b, c, k * k, h, w)


def split_qkv(qkv: torch.Tensor, heads: int, head_major: bool) -> list[torch.Tensor]:
    """Slice a fused ``(B, H, W, 3C)`` projection into q, k, v ``(B, heads, d, H, W)``.

    head-major: channel ``h*3d + t*d + i`` (official Slide); standard: channel ``t*C + h*d + i`` (timm).
    """
    b, h, w, c3 = qkv.shape
    d = c3 // (3 * heads)
    if head_major:
        t = qkv.reshape(b, h, w, heads, 3, d).permute(4, 0, 3, 5, 1, 2)
    else:
        t = qkv.reshape(b, h, w, 3, heads, d).permute(3, 0, 4, 5, 1, 2)
    return [t[0], t[1], t[2]]


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """``(B, heads, d, H, W) -> (B, H, W, heads*d)``."""
    b, n, d, h, w = y.shape
    return y.permute(0, 3, 4, 1, 2).reshape(b, h, w, n * d)


def plain_local_attention(m: SlideAttention, x: torch.Tensor, head_major: bool = True) -> torch.Tensor:
    """qkv Linear -> split -> scale -> naive zero-padded local attention -> proj, from the module's weights."""
    q, k, v = split_qkv(F.linear(x, m.qkv.weight, m.qkv.bias), m.num_heads, head_major)
    out = local_attention_reference(q * m.head_dim**-0.5, k, v, m.kernel_size)
    return F.linear(merge_heads(out), m.proj.weight, m.proj.bias)


def masked_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """Local attention that EXCLUDES out-of-map neighbours (a masked Im2Col), by a naive loop."""
    h, w, r = q.shape[-2], q.shape[-1], n // 2
    out = torch.zeros_like(q)
    for y in range(h):
        for x in range(w):
            ys, xs = slice(max(y - r, 0), min(y + r + 1, h)), slice(max(x - r, 0), min(x + r + 1, w))
            keys, values = k[..., ys, xs].flatten(-2), v[..., ys, xs].flatten(-2)
            weights = (q[..., y, x, None] * keys).sum(dim=2).softmax(dim=-1)
            out[..., y, x] = (weights[:, :, None, :] * values).sum(dim=-1)
    return out


def zero_to_plain_local_attention(m: SlideAttention) -> SlideAttention:
    """Zero the learnable shift path, both conv biases and rpb: the module becomes plain local attention."""
    with torch.no_grad():
        for p in (m.shift.deform.weight, m.shift.deform.bias, m.shift.onehot.bias, m.rpb):
            p.zero_()
    return m


def official_forward(m: SlideAttention, x: torch.Tensor) -> torch.Tensor:
    """The official SlideAttention forward re-expressed with reshapes, ``F.unfold`` (one-hot path) and ``F.conv2d``."""
    b, h, w, c = x.shape
    n, d, ka = m.num_heads, m.head_dim, m.kernel_size
    f = F.linear(x, m.qkv.weight, m.qkv.bias).permute(0, 3, 1, 2).reshape(b * n, 3 * d, h, w)
    b0, b1 = m.shift.onehot.bias, m.shift.deform.bias

    def shifted(t: torch.Tensor) -> torch.Tensor:  # one-hot path (= unfold + b0) + learnable path
        onehot = F.unfold(t, ka, padding=ka // 2).reshape(b * n, d * ka * ka, h, w) + b0[:, None, None]
        learned = F.conv2d(t, m.shift.deform.weight, b1, padding=ka // 2, groups=d)
        return (onehot + learned).reshape(b, n, d, ka * ka, h, w)

    q = (f[:, :d] * d**-0.5).reshape(b, n, d, 1, h, w)
    k = shifted(f[:, d : 2 * d]) + m.rpb
    v = shifted(f[:, 2 * d :])
    attn = (q * k).sum(2, keepdim=True).softmax(dim=3)
    y = (attn * v).sum(3).reshape(b, c, h, w).permute(0, 2, 3, 1)
    return F.linear(y, m.proj.weight, m.proj.bias)


# ---------------------------------------------------------------- T4: the three views of the neighbourhood


@given(b=st.integers(1, 2), c=st.integers(1, 3), h=side, w=side, k=odd_k, seed=seeds)
def test_im2col_shift_and_shift_conv_equal_unfold(b: int, c: int, h: int, w: int, k: int, seed: int) -> None:
    x = randn(b, c, h, w, seed=seed)
    expected = unfold_reference(x, k)
    for view in (im2col, shift, shift_conv):
        torch.testing.assert_close(view(x, k), expected, rtol=0, atol=0)


@settings(max_examples=10)
@given(c=st.integers(1, 2), h=st.integers(1, 4), w=st.integers(1, 4), k=st.sampled_from([1, 3, 5]), seed=seeds)
def test_im2col_index_semantics_naive_loop(c: int, h: int, w: int, k: int, seed: int) -> None:
    x = randn(1, c, h, w, seed=seed)
    xpad = torch.zeros(1, c, h + k - 1, w + k - 1, dtype=x.dtype)
    xpad[:, :, k // 2 : k // 2 + h, k // 2 : k // 2 + w] = x
    expected = torch.empty(1, c, k * k, h, w, dtype=x.dtype)
    for j in range(k * k):
        for y in range(h):
            for xx in range(w):
                expected[:, :, j, y, xx] = xpad[:, :, y + j // k, xx + j % k]
    torch.testing.assert_close(im2col(x, k), expected, rtol=0, atol=0)


def test_centre_pixel_sees_whole_map_row_major_and_centre_neighbour_is_identity() -> None:
    x = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    out = im2col(x, 3)
    assert out[0, 0, :, 1, 1].tolist() == list(range(1, 10))  # the 3x3 window of the centre pixel, row-major
    assert out[0, 0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 2, 0, 4, 5]  # corner: padded zeros enter first
    torch.testing.assert_close(out[:, :, 4], x)  # j = k*k // 2 is the pixel itself


def test_one_hot_kernels_are_one_hot_row_major() -> None:
    for k in (1, 3, 5):
        expected = torch.zeros(k * k, 1, k, k, dtype=torch.float64)
        for i in range(k * k):
            expected[i, 0, i // k, i % k] = 1.0
        torch.testing.assert_close(one_hot_kernels(k, dtype=torch.float64), expected, rtol=0, atol=0)
    assert one_hot_kernels(3).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("view", [im2col, shift, shift_conv])
@pytest.mark.parametrize("k", [1, 3])
def test_views_gradcheck(view: Callable[[torch.Tensor, int], torch.Tensor], k: int) -> None:
    x = randn(1, 2, 3, 4, seed=k).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: view(t, k), (x,))
    assert torch.autograd.gradgradcheck(lambda t: view(t, k), (x,))


@given(b=st.integers(1, 2), c=st.integers(1, 3), h=side, w=side, k=odd_k, seed=seeds)
def test_shift_gradient_equals_im2col_gradient(b: int, c: int, h: int, w: int, k: int, seed: int) -> None:
    # shift's backward is written by hand (the transposed shift); im2col's is autograd's scatter-add of its gather
    x = randn(b, c, h, w, seed=seed)
    grad = randn(b, c, k * k, h, w, seed=seed + 1)
    (expected,) = torch.autograd.grad(im2col(x.requires_grad_(), k), x, grad)
    (got,) = torch.autograd.grad(shift(x, k), x, grad)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- T5, T7: deformed shift and its merge


@given(b=st.integers(1, 2), c=st.integers(1, 3), h=side, w=side, k=odd_k, seed=seeds)
def test_deformed_shift_two_paths_and_merge_equal_two_convs(b: int, c: int, h: int, w: int, k: int, seed: int) -> None:
    torch.manual_seed(seed)
    m = DeformedShift(c, k).double()
    x = randn(b, c, h, w, seed=seed)
    onehot = F.unfold(x, k, padding=k // 2).reshape(b, c * k * k, h, w) + m.onehot.bias[:, None, None]
    learned = F.conv2d(x, m.deform.weight, m.deform.bias, padding=k // 2, groups=c)
    # T4 literally: the frozen one-hot path minus its bias is F.unfold, channel-major then kernel row-major
    torch.testing.assert_close(m.onehot(x), onehot)
    torch.testing.assert_close(m(x), onehot + learned)
    merged = m.merge()
    assert isinstance(merged, nn.Conv2d) and merged.groups == c and merged.weight.dtype == torch.float64
    torch.testing.assert_close(merged(x), onehot + learned)


@settings(max_examples=20)
@given(b=st.integers(1, 2), c=st.integers(1, 3), h=side, w=side, k=odd_k, seed=seeds)
def test_deformed_shift_gradients_equal_the_official_two_convs(
    b: int, c: int, h: int, w: int, k: int, seed: int
) -> None:
    # the forward sums the two paths' weights before ONE conv; the official code runs two convs and adds them
    torch.manual_seed(seed)
    m = DeformedShift(c, k).double()
    x = randn(b, c, h, w, seed=seed).requires_grad_()
    grad = randn(b, c * k * k, h, w, seed=seed + 1)
    inputs = (x, m.onehot.bias, m.deform.weight, m.deform.bias)
    ours = torch.autograd.grad(m(x), inputs, grad)
    official = torch.autograd.grad(m.onehot(x) + m.deform(x), inputs, grad)
    for got, expected in zip(ours, official, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_deformed_shift_frozen_one_hot_weight_learnable_bias() -> None:
    c, k = 3, 3
    m = DeformedShift(c, k).double()
    assert m.onehot.weight.requires_grad is False and m.onehot.bias.requires_grad is True
    torch.testing.assert_close(m.onehot.weight, one_hot_kernels(k, torch.float64).repeat(c, 1, 1, 1))
    # quirk: the learnable path keeps PyTorch's default init (uniform in +-1/sqrt(fan_in) = +-1/k), not zeros
    assert m.deform.weight.abs().sum() > 0 and m.deform.weight.abs().max() <= 1 / k
    m(randn(2, c, 4, 5, seed=0)).square().sum().backward()
    assert m.onehot.weight.grad is None
    assert m.onehot.bias.grad is not None and m.onehot.bias.grad.abs().sum() > 0
    assert m.deform.weight.grad is not None and m.deform.weight.grad.abs().sum() > 0
    total = sum(p.numel() for p in m.parameters())
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable < total and total - trainable == c * k**4


def test_slide_attention_counts_frozen_weights() -> None:
    m = SlideAttention(12, 3, kernel_size=3)
    total = sum(p.numel() for p in m.parameters())
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert total - trainable == 4 * 9 * 9  # head_dim * k^2 one-hot kernels of k^2 taps each


# ---------------------------------------------------------------- T6: slide attention = local attention


attn_shapes = dict(
    b=st.integers(1, 2),
    heads=st.integers(2, 3),
    d=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    k=odd_k,
    seed=seeds,
)


@given(**attn_shapes)
def test_slide_attention_is_local_attention_with_head_major_layout(
    b: int, heads: int, d: int, h: int, w: int, k: int, seed: int
) -> None:
    torch.manual_seed(seed)
    m = zero_to_plain_local_attention(SlideAttention(heads * d, heads, kernel_size=k).double().eval())
    x = randn(b, h, w, heads * d, seed=seed)
    y = m(x)
    torch.testing.assert_close(y, plain_local_attention(m, x, head_major=True))
    # the standard (3, heads, d) split is a different function: the test pins the layout
    assert not torch.allclose(y, plain_local_attention(m, x, head_major=False))


@settings(max_examples=15)
@given(**attn_shapes)
def test_slide_attention_matches_official_forward_before_and_after_merge(
    b: int, heads: int, d: int, h: int, w: int, k: int, seed: int
) -> None:
    torch.manual_seed(seed)
    m = SlideAttention(heads * d, heads, kernel_size=k).double().eval()
    with torch.no_grad():
        m.rpb.copy_(randn(*m.rpb.shape, seed=seed + 1))
    x = randn(b, h, w, heads * d, seed=seed)
    expected = official_forward(m, x)
    torch.testing.assert_close(m(x), expected)
    m.merge_()
    assert isinstance(m.shift, nn.Conv2d)
    torch.testing.assert_close(m(x), expected)


# ---------------------------------------------------------------- T8: rpb on the keys


@given(**attn_shapes)
def test_rpb_on_keys_is_query_dependent_logit_bias(
    b: int, heads: int, d: int, h: int, w: int, k: int, seed: int
) -> None:
    torch.manual_seed(seed)
    m = SlideAttention(heads * d, heads, kernel_size=k).double()
    with torch.no_grad():
        m.rpb.copy_(randn(*m.rpb.shape, seed=seed + 1))
    no_rpb = copy.deepcopy(m)
    with torch.no_grad():
        no_rpb.rpb.zero_()
    x = randn(b, h, w, heads * d, seed=seed)
    q, _, _ = split_qkv(F.linear(x, m.qkv.weight, m.qkv.bias), heads, head_major=True)
    q_sum = (q * d**-0.5).sum(dim=2, keepdim=True)  # (B, heads, 1, H, W): sum_d q_d
    bias = m.rpb.detach().reshape(1, heads, k * k, 1, 1) * q_sum
    torch.testing.assert_close(m.attention_logits(x) - no_rpb.attention_logits(x), bias)


# ---------------------------------------------------------------- borders: zero padding, no mask


@settings(max_examples=15)
@given(
    b=st.integers(1, 2),
    heads=st.integers(2, 3),
    d=st.integers(1, 3),
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    k=st.sampled_from([3, 5]),
    seed=seeds,
)
def test_padded_neighbours_enter_the_softmax(b: int, heads: int, d: int, h: int, w: int, k: int, seed: int) -> None:
    torch.manual_seed(seed)
    m = zero_to_plain_local_attention(SlideAttention(heads * d, heads, kernel_size=k).double().eval())
    x = randn(b, h, w, heads * d, seed=seed)
    q, kk, v = split_qkv(F.linear(x, m.qkv.weight, m.qkv.bias), heads, head_major=True)
    masked = F.linear(merge_heads(masked_local_attention(q * d**-0.5, kk, v, k)), m.proj.weight, m.proj.bias)
    y = m(x)
    torch.testing.assert_close(y[:, 0, 0], plain_local_attention(m, x)[:, 0, 0])
    assert not torch.allclose(y[:, 0, 0], masked[:, 0, 0])  # the corner's padded neighbours are not masked
    r = k // 2
    if h > 2 * r and w > 2 * r:  # where the whole window lies inside the map, padding plays no role
        torch.testing.assert_close(y[:, r : h - r, r : w - r], masked[:, r : h - r, r : w - r])


@settings(max_examples=15)
@given(heads=st.integers(2, 3), d=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4), seed=seeds)
def test_padded_key_is_biases_plus_rpb(heads: int, d: int, h: int, w: int, seed: int) -> None:
    k = 3
    torch.manual_seed(seed)
    m = SlideAttention(heads * d, heads, kernel_size=k).double()
    with torch.no_grad():
        m.shift.deform.weight.zero_()
        m.rpb.copy_(randn(*m.rpb.shape, seed=seed + 1))
    x = randn(1, h, w, heads * d, seed=seed)
    q = split_qkv(F.linear(x, m.qkv.weight, m.qkv.bias), heads, head_major=True)[0][0, :, :, 0, 0] * d**-0.5
    # the key of a padded neighbour, (heads, d, k*k): zero input, so only b0 + b1 + rpb remain
    biases = (m.shift.onehot.bias + m.shift.deform.bias).detach().reshape(1, d, k * k)
    key = biases + m.rpb.detach().reshape(heads, 1, k * k)
    logits = m.attention_logits(x)[0, :, :, 0, 0]  # (heads, k*k) at the corner pixel (0, 0)
    for j in range(k * k):
        u, v = j // k - 1, j % k - 1
        if u < 0 or v < 0 or u >= h or v >= w:  # neighbour j of pixel (0, 0) lies in the padding
            torch.testing.assert_close(logits[:, j], (q * key[:, :, j]).sum(dim=1))


# ---------------------------------------------------------------- bookkeeping and bad input


def test_rpb_shape_and_no_weight_decay() -> None:
    m = SlideAttention(12, 3, kernel_size=5)
    assert m.rpb.shape == (1, 3, 1, 25, 1, 1)
    names = dict(m.named_parameters())
    assert m.no_weight_decay() == {"rpb"} and all(n in names for n in m.no_weight_decay())
    plain = SlideAttention(12, 3, rpb=False)
    assert plain.rpb is None and plain.no_weight_decay() == set()
    assert "rpb" not in dict(plain.named_parameters())
    assert plain(randn(1, 3, 4, 12, seed=0, dtype=torch.float32)).shape == (1, 3, 4, 12)


def test_bad_input_raises() -> None:
    x = randn(1, 2, 4, 4, seed=0)
    for view in (im2col, shift, shift_conv):
        with pytest.raises(ValueError, match=r"kernel_size must be odd.*got 2; use 1 or 3"):
            view(x, 2)
        with pytest.raises(ValueError, match=r"x must have 4 dimensions \(B, C, H, W\)"):
            view(x[0], 3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        one_hot_kernels(4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DeformedShift(2, kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SlideAttention(8, 2, kernel_size=2)
    with pytest.raises(ValueError, match="x has 2 channels on axis 1"):
        DeformedShift(3)(x)
    with pytest.raises(ValueError, match=r"num_heads=3 must divide dim=10; values that work: \[1, 2, 5, 10\]"):
        SlideAttention(10, 3)
    m = SlideAttention(8, 2)
    with pytest.raises(ValueError, match="x has 6 channels on axis -1"):
        m(randn(1, 4, 4, 6, seed=0, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"x must be a \(B, H, W, C\) map, got tokens.*x.view\(B, H, W, C\)"):
        m(randn(1, 16, 8, seed=0, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"q must have 5 dimensions"):
        local_attention_reference(x, x, x, 3)
    q = randn(1, 2, 3, 4, 4, seed=0)
    with pytest.raises(ValueError, match="q, k, v must have the same shape"):
        local_attention_reference(q, q, q[..., :3], 3)
