"""Wrong answers to assignment 02, Im2Col vs shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import nn

from vitlocal import slide

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


def _copies(x, k, order):
    """Stack the k*k crops of the zero-padded map at window positions ``order`` (a list of (u, v))."""
    h, w, r = *x.shape[-2:], k // 2
    xpad = F.pad(x, (r, r, r, r))
    return torch.stack([xpad[:, :, u : u + h, v : v + w] for u, v in order], dim=2)


@wrong(subtle=False)
def im2col_columns_first():
    """Neighbours numbered column-major over the window, ``j = v k + u``."""

    def im2col(x, kernel_size):
        h, w = x.shape[-2:]
        cols = F.unfold(x, kernel_size, padding=kernel_size // 2)
        return rearrange(cols, "b (c u v) (h w) -> b c (v u) h w", u=kernel_size, v=kernel_size, h=h, w=w)

    return {"im2col": im2col}


@wrong(subtle=False)
def im2col_wraps_around():
    """Neighbours gathered with ``torch.roll``: the map wraps around where it should be zero-padded."""

    def im2col(x, kernel_size):
        k, r = kernel_size, kernel_size // 2
        return torch.stack([x.roll((r - u, r - v), (2, 3)) for u in range(k) for v in range(k)], dim=2)

    return {"im2col": im2col}


@wrong(subtle=False)
def shift_reversed():
    """Each copy shifted the opposite way (by ``-delta_j``): the neighbours come in reverse order."""

    def shift(x, kernel_size):
        k = kernel_size
        return _copies(x, k, [(k - 1 - u, k - 1 - v) for u in range(k) for v in range(k)])

    return {"shift": shift}


@wrong(subtle=False)
def shift_columns_first():
    """The copies taken column by column over the window: a shift order that is not row-major."""

    def shift(x, kernel_size):
        k = kernel_size
        return _copies(x, k, [(u, v) for v in range(k) for u in range(k)])

    return {"shift": shift}


@wrong(subtle=False)
def one_hot_columns_first():
    """Kernel ``i`` one-hot at ``(i % k, i // k)``: the identity laid on the window column by column."""

    def one_hot_kernels(kernel_size):
        return rearrange(torch.eye(kernel_size**2), "i (v u) -> i 1 u v", u=kernel_size)

    return {"one_hot_kernels": one_hot_kernels}


@wrong(subtle=False)
def one_hot_flipped():
    """Kernels flipped, as if ``conv2d`` flipped its kernel (it does not: it is a cross-correlation)."""

    def one_hot_kernels(kernel_size):
        return slide.one_hot_kernels(kernel_size).flip(-2, -1)

    return {"one_hot_kernels": one_hot_kernels}


@wrong(subtle=False)
def shift_conv_kernel_major():
    """The depthwise weight repeated kernel-major, ``(i c)`` instead of ``(c i)``: groups get the wrong kernels."""

    def shift_conv(x, kernel_size):
        c = x.shape[1]
        weight = repeat(slide.one_hot_kernels(kernel_size).to(x), "i 1 u v -> (i c) 1 u v", c=c)
        y = F.conv2d(x, weight, padding=kernel_size // 2, groups=c)
        return rearrange(y, "b (c j) h w -> b c j h w", j=kernel_size**2)

    return {"shift_conv": shift_conv}


@wrong(subtle=False)
def shift_conv_flipped_kernels():
    """Flipped one-hot kernels in the depthwise conv: every shift goes the opposite way."""

    def shift_conv(x, kernel_size):
        c = x.shape[1]
        kernels = slide.one_hot_kernels(kernel_size).to(x).flip(-2, -1)
        y = F.conv2d(x, repeat(kernels, "i 1 u v -> (c i) 1 u v", c=c), padding=kernel_size // 2, groups=c)
        return rearrange(y, "b (c j) h w -> b c j h w", j=kernel_size**2)

    return {"shift_conv": shift_conv}


def _merged(onehot, weight, bias, padding=None):
    conv = nn.Conv2d(
        onehot.in_channels,
        onehot.out_channels,
        onehot.kernel_size,
        padding=onehot.padding if padding is None else padding,
        groups=onehot.groups,
        dtype=onehot.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


@wrong(subtle=False)
def merge_forgets_a_bias():
    """The weights summed, but only the one-hot path's bias kept."""

    def merge(onehot, deform):
        return _merged(onehot, onehot.weight + deform.weight, onehot.bias)

    return {"merge": merge}


@wrong(subtle=False)
def merge_averages():
    """The two paths averaged instead of summed."""

    def merge(onehot, deform):
        return _merged(onehot, (onehot.weight + deform.weight) / 2, (onehot.bias + deform.bias) / 2)

    return {"merge": merge}


@wrong(subtle=False)
def merge_without_padding():
    """A fresh conv with PyTorch's default padding 0: the merged map shrinks."""

    def merge(onehot, deform):
        return _merged(onehot, onehot.weight + deform.weight, onehot.bias + deform.bias, padding=0)

    return {"merge": merge}


def _neighbourhoods(t, kernel_size):
    """``(B, n, d, H, W) -> (B, n, d, k*k, H, W)`` with the reference shift."""
    shifted = slide.shift(rearrange(t, "b n d h w -> (b n) d h w"), kernel_size)
    return rearrange(shifted, "(b n) d j h w -> b n d j h w", n=t.shape[1])


def _local_attention(q, k, v, kernel_size, scale=1.0, mask_borders=False):
    scores = einsum(q * scale, _neighbourhoods(k, kernel_size), "b n d h w, b n d j h w -> b n j h w")
    if mask_borders:
        h, w = q.shape[-2:]
        inside = slide.shift(torch.ones(1, 1, h, w, dtype=q.dtype), kernel_size)[0, 0] > 0  # (j, h, w)
        scores = scores.masked_fill(~inside, float("-inf"))
    return einsum(scores.softmax(dim=2), _neighbourhoods(v, kernel_size), "b n j h w, b n d j h w -> b n d h w")


@wrong(subtle=False)
def local_attention_masks_borders():
    """Padded neighbours masked out of the softmax (NAT-style), where Slide-Transformer keeps their zero keys."""

    def local_attention(q, k, v, kernel_size):
        return _local_attention(q, k, v, kernel_size, mask_borders=True)

    return {"local_attention": local_attention}


@wrong(subtle=False)
def local_attention_scaled():
    """A ``d^-0.5`` scale inside, although the caller scales the queries."""

    def local_attention(q, k, v, kernel_size):
        return _local_attention(q, k, v, kernel_size, scale=q.shape[2] ** -0.5)

    return {"local_attention": local_attention}


@wrong(subtle=False)
def local_attention_softmax_over_channels():
    """The softmax taken over the channels ``d`` instead of the neighbours ``j``."""

    def local_attention(q, k, v, kernel_size):
        keys, values = _neighbourhoods(k, kernel_size), _neighbourhoods(v, kernel_size)
        weights = (q.unsqueeze(3) * keys).softmax(dim=2)
        return (weights * values).sum(3)

    return {"local_attention": local_attention}


@wrong(subtle=False)
def test_centre_and_box_filter():
    """The learner's test, like the colleague's, checks the centre copy and the sum of the copies: order-blind."""

    def test_shift_order(shift):
        x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
        copies = shift(x, 3)
        assert torch.equal(copies[:, :, 4], x)
        assert torch.allclose(copies.sum(2), F.conv2d(x, torch.ones(2, 1, 3, 3, dtype=x.dtype), padding=1, groups=2))

    return {"test_shift_order": test_shift_order}


@wrong(subtle=True)
def test_interior_pixel_only():
    """The learner's test states the nine neighbours of an interior pixel only: the zero padding goes untested."""

    def test_shift_order(shift):
        x = torch.arange(1.0, 21.0).view(1, 1, 4, 5)
        copies = shift(x, 3)
        for u in range(3):
            for v in range(3):
                assert copies[0, 0, u * 3 + v, 1, 1] == x[0, 0, u, v]

    return {"test_shift_order": test_shift_order}


@wrong(subtle=False)
def macs_one_kernel_per_channel():
    """The conv counted as one k x k kernel per input channel (C k^2 H W), not k^2 one-hot kernels per channel."""

    def shift_conv_macs(channels, h, w, kernel_size):
        return channels * kernel_size**2 * h * w

    return {"shift_conv_macs": shift_conv_macs}


@wrong(subtle=True)
def neighbourhood_always_seven():
    """Swin's window size whatever the budget: right at Swin's cost, not for other budgets."""

    def choose_neighbourhood(budget):
        return 7

    return {"choose_neighbourhood": choose_neighbourhood}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=False)
def im2col_width_for_height():
    """The map's sides both read from its width, ``h = w = x.shape[-1]``: a square map only."""

    def im2col(x, kernel_size):
        side = x.shape[-1]
        columns = F.unfold(x, kernel_size, padding=kernel_size // 2)
        return rearrange(columns, "b (c j) (h w) -> b c j h w", j=kernel_size**2, h=side, w=side)

    return {"im2col": im2col}


@wrong(subtle=True)
def shift_with_view():
    """Channels folded into the batch with ``x.view(b * c, 1, h, w)``: an error on a transposed (non-contiguous) map."""

    def shift(x, kernel_size):
        b, c, h, w = x.shape
        window = [(u, v) for u in range(kernel_size) for v in range(kernel_size)]
        copies = _copies(x.view(b * c, 1, h, w), kernel_size, window)
        return copies.view(b, c, kernel_size**2, h, w)

    return {"shift": shift}


@wrong(subtle=False)
def shift_conv_in_float32():
    """The map cast to float32 for the conv (``x.float()``), so float64 maps come back as float32."""

    def shift_conv(x, kernel_size):
        c = x.shape[1]
        weight = repeat(slide.one_hot_kernels(kernel_size), "i 1 u v -> (c i) 1 u v", c=c)
        y = F.conv2d(x.float(), weight, padding=kernel_size // 2, groups=c)
        return rearrange(y, "b (c j) h w -> b c j h w", j=kernel_size**2)

    return {"shift_conv": shift_conv}


@wrong(subtle=True)
def merge_assumes_biases():
    """``onehot.bias + deform.bias``: right when both convs have a bias, an error when one was made with bias=False."""

    def merge(onehot, deform):
        settings = dict(stride=onehot.stride, padding=onehot.padding, groups=onehot.groups, dtype=onehot.weight.dtype)
        merged = nn.Conv2d(onehot.in_channels, onehot.out_channels, onehot.kernel_size, **settings)
        with torch.no_grad():
            merged.weight.copy_(onehot.weight + deform.weight)
            merged.bias.copy_(onehot.bias + deform.bias)
        return merged

    return {"merge": merge}


@wrong(subtle=True)
def local_attention_with_view():
    """Heads folded into the batch with ``.view``: an error on transposed (non-contiguous) queries, keys, values."""

    def local_attention(q, k, v, kernel_size):
        b, n, d, h, w = q.shape

        def neighbourhoods(t):
            return slide.shift(t.view(b * n, d, h, w), kernel_size).view(b, n, d, kernel_size**2, h, w)

        scores = einsum(q, neighbourhoods(k), "b n d h w, b n d j h w -> b n j h w")
        return einsum(scores.softmax(dim=2), neighbourhoods(v), "b n j h w, b n d j h w -> b n d h w")

    return {"local_attention": local_attention}
