"""Hidden checks of assignment 02, Im2Col vs shift (Slide-Transformer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
