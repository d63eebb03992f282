"""Hidden checks of assignment 02, Im2Col vs shift (Slide-Transformer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import slide

from ._common import SEEDS, SIDES, double, expect_close, for_all, randn

KERNELS = st.sampled_from([1, 3, 5])
NEIGHBOURS = (
    "; neighbour j = u k + v (row-major over the window) is the pixel at offset (u - k//2, v - k//2), "
    "and zero outside the map"
)


def _check_neighbourhoods(view, name):
    """``view(x, k)`` is every pixel's zero-padded ``k x k`` neighbourhood ``(B, C, k*k, H, W)``, as torch's unfold."""

    def prop(c, h, w, k, seed):
        x = randn(2, c, h, w, seed=seed)
        want = F.unfold(x, k, padding=k // 2).view(2, c, k * k, h, w)  # Im2Col, the torch built-in
        expect_close(view(x, k), want, f"{name}(x, {k}) on a {h}x{w} map", NEIGHBOURS)

    for_all(prop, c=st.integers(1, 3), h=SIDES, w=SIDES, k=KERNELS, seed=SEEDS)


def check_im2col(im2col):
    _check_neighbourhoods(im2col, "im2col")


def check_shift(shift):
    _check_neighbourhoods(shift, "shift")


def check_shift_conv(shift_conv):
    _check_neighbourhoods(shift_conv, "shift_conv")


def check_one_hot_kernels(one_hot_kernels):
    """Kernel ``i`` has its single 1 at ``(i // k, i % k)``."""
    for k in (1, 3, 5, 7):
        expect_close(
            one_hot_kernels(k).double(),
            slide.one_hot_kernels(k, dtype=torch.float64),
            f"one_hot_kernels({k})",
            "; kernel i is one-hot at row i // k, column i % k",
        )


def check_merge(merge):
    """The merged conv computes ``onehot(x) + deform(x)`` and leaves both convs unchanged."""

    def prop(c, k, h, w, seed):
        paths = double(slide.DeformedShift(c, k), seed)
        paths.onehot.weight.copy_(slide.one_hot_kernels(k, torch.float64).repeat(c, 1, 1, 1))
        before = {name: t.clone() for name, t in paths.state_dict().items()}
        x = randn(2, c, h, w, seed=seed)
        with torch.no_grad():
            merged = merge(paths.onehot, paths.deform)
            expect_close(merged(x), paths(x), f"merge(onehot, deform) for {c} channels, k={k}")
        for name, value in paths.state_dict().items():
            if not torch.equal(value, before[name]):
                raise AssertionError(f"merge changed its input {name}; build a new conv instead")

    for_all(prop, c=st.integers(1, 3), k=KERNELS, h=SIDES, w=SIDES, seed=SEEDS)


def check_local_attention(local_attention):
    """Softmax over each query's zero-padded ``k x k`` neighbours (padded keys take part), no scale: a naive loop."""

    def prop(heads, d, h, w, k, seed):
        q, key, v = (randn(2, heads, d, h, w, seed=seed + i) for i in range(3))
        want = slide.local_attention_reference(q, key, v, k)
        expect_close(
            local_attention(q, key, v, k),
            want,
            f"local_attention on a {h}x{w} map with k={k}",
            "; every query attends over all k*k neighbours, zero-padded ones included, without a scale",
        )

    for_all(prop, heads=st.integers(1, 2), d=st.integers(1, 3), h=SIDES, w=SIDES, k=KERNELS, seed=SEEDS)


def _fails(test, implementation) -> bool:
    """Whether a learner's test raises AssertionError on ``implementation`` (any other error propagates)."""
    try:
        test(implementation)
    except AssertionError:
        return True
    return False


def _columns_first(x, kernel_size):
    return rearrange(slide.shift(x, kernel_size), "b c (u v) h w -> b c (v u) h w", u=kernel_size)


def _circular(x, kernel_size):
    r = kernel_size // 2
    shifts = [(r - u, r - v) for u in range(kernel_size) for v in range(kernel_size)]
    return torch.stack([x.roll(s, dims=(2, 3)) for s in shifts], dim=2)


def check_shift_test(test_shift):
    """The learner's test passes on the row-major zero-padded shift and fails on each plausible bug."""
    test_shift(slide.shift)
    for bug, implementation in (("copies column by column", _columns_first), ("a circular shift", _circular)):
        if not _fails(test_shift, implementation):
            raise AssertionError(f"your test passes a shift with a bug: {bug}")


def check_shift_conv_macs(shift_conv_macs):
    """``C k^2 H W k^2``: C k^2 output channels per pixel, each a sum of k^2 products."""

    def prop(channels, h, w, k):
        want = channels * k**4 * h * w
        if shift_conv_macs(channels, h, w, k) != want:
            raise AssertionError(f"shift_conv_macs({channels}, {h}, {w}, {k}) is {shift_conv_macs(channels, h, w, k)}")

    for_all(
        prop, channels=st.integers(1, 96), h=st.integers(1, 64), w=st.integers(1, 64), k=st.sampled_from([1, 3, 5, 7])
    )


def check_choose_neighbourhood(choose_neighbourhood):
    """The largest odd k <= 11 with ``2 H W k^2 C`` within the budget (56 x 56, C = 96)."""
    for budget, want in ((2 * 56 * 56 * 49 * 96, 7), (20e6, 5), (6e6, 3), (1e6, 1), (1e9, 11)):
        got = choose_neighbourhood(budget)
        if got != want:
            raise AssertionError(
                f"choose_neighbourhood({budget:g}) is {got}; the largest kernel within budget is {want}"
            )
