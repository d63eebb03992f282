"""Hidden checks of assignment 02, Im2Col vs shift (Slide-Transformer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import strategies as st

from vitlocal import slide

from ._common import DTYPES, LAYOUTS, SEEDS, SIDES, call, double, expect_close, for_all, randn, reference_parts

KERNELS = st.sampled_from([1, 3, 5])
NEIGHBOURS = (
    "; neighbour j = u k + v (row-major over the window) is the pixel at offset (u - k//2, v - k//2), "
    "and zero outside the map"
)
# Gathering neighbours moves values (a one-hot conv multiplies by 1 and adds zeros): exact in bfloat16 too.
ANY_DTYPE = st.sampled_from([torch.float64, torch.float32, torch.bfloat16])
# Batch 1, non-square maps, a transposed (non-contiguous) input, each dtype: checked first, every time.
SPECIAL = (
    dict(b=1, c=2, h=2, w=3, k=3, dtype=torch.float64, layout="column-major", seed=0),
    dict(b=2, c=3, h=3, w=2, k=3, dtype=torch.float32, layout="contiguous", seed=1),
    dict(b=1, c=1, h=4, w=3, k=5, dtype=torch.bfloat16, layout="column-major", seed=2),
)


def _case(b, h, w, dtype, layout):
    layout = ", non-contiguous" if layout != "contiguous" else ""
    return f"a {h}x{w} map, batch {b}, {str(dtype).removeprefix('torch.')}{layout}"


def _check_neighbourhoods(view, name):
    """``view(x, k)`` is every pixel's zero-padded ``k x k`` neighbourhood ``(B, C, k*k, H, W)``, as torch's unfold."""

    def prop(b, c, h, w, k, dtype, layout, seed):
        x = randn(b, c, h, w, seed=seed, dtype=dtype, layout=layout)
        want = F.unfold(x, k, padding=k // 2).view(b, c, k * k, h, w)  # Im2Col, the torch built-in
        got = call(view, name, x, k)
        expect_close(got, want, f"{name}(x, {k}) on {_case(b, h, w, dtype, layout)}", NEIGHBOURS)

    for_all(
        prop, SPECIAL, b=st.integers(1, 2), c=st.integers(1, 3), h=SIDES, w=SIDES, k=KERNELS, dtype=ANY_DTYPE,
        layout=LAYOUTS, seed=SEEDS,
    )  # fmt: skip


def check_im2col(im2col):
    _check_neighbourhoods(im2col, "im2col")


def check_shift(shift):
    _check_neighbourhoods(shift, "shift")


def check_shift_conv(shift_conv):
    """Checked with the reference one_hot_kernels in place: a mistake there costs its own points."""
    with reference_parts(shift_conv, one_hot_kernels=slide.one_hot_kernels):
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
    """The merged conv computes ``onehot(x) + deform(x)`` and leaves both convs unchanged; biases on or off, a
    missing bias counting as zero; float32 and float64."""

    def prop(c, k, h, w, biases, dtype, seed):
        paths = double(slide.DeformedShift(c, k), seed).to(dtype)
        paths.onehot.weight.copy_(slide.one_hot_kernels(k, dtype).repeat(c, 1, 1, 1))
        for conv, bias in zip((paths.onehot, paths.deform), biases, strict=True):
            conv.bias = conv.bias if bias else None
        before = {name: t.clone() for name, t in paths.state_dict().items()}
        x = randn(2, c, h, w, seed=seed, dtype=dtype)
        what = f"merge(onehot, deform) for {c} channels, k={k}, biases {biases}, {str(dtype).removeprefix('torch.')}"
        with torch.no_grad():
            merged = call(merge, "merge", paths.onehot, paths.deform)
            want = paths.onehot(x) + paths.deform(x)
            expect_close(call(merged, f"the conv of {what}", x), want, what)
        for name, value in paths.state_dict().items():
            if not torch.equal(value, before[name]):
                raise AssertionError(f"merge changed its input {name}; build a new conv instead")

    examples = (
        dict(c=2, k=3, h=2, w=3, biases=(False, True), dtype=torch.float64, seed=0),
        dict(c=1, k=3, h=3, w=2, biases=(False, False), dtype=torch.float32, seed=1),
        dict(c=2, k=1, h=1, w=2, biases=(True, False), dtype=torch.float64, seed=2),
    )
    biases = st.tuples(st.booleans(), st.booleans())
    for_all(prop, examples, c=st.integers(1, 3), k=KERNELS, h=SIDES, w=SIDES, biases=biases, dtype=DTYPES, seed=SEEDS)


def check_local_attention(local_attention):
    """Softmax over each query's zero-padded ``k x k`` neighbours (padded keys take part), no scale: a naive loop.

    Checked with the reference shift in place: a mistake there costs its own points.
    """

    def prop(b, heads, d, h, w, k, dtype, layout, seed):
        q, key, v = (randn(b, heads, d, h, w, seed=seed + i, dtype=dtype, layout=layout) for i in range(3))
        want = slide.local_attention_reference(q, key, v, k)
        with reference_parts(local_attention, shift=slide.shift):
            got = call(local_attention, "local_attention", q, key, v, k)
        expect_close(
            got,
            want,
            f"local_attention(q, k, v, {k}) with {heads} head(s) of width {d} on {_case(b, h, w, dtype, layout)}",
            "; every query attends over all k*k neighbours, zero-padded ones included, without a scale",
        )

    examples = (
        dict(b=1, heads=2, d=2, h=2, w=3, k=3, dtype=torch.float64, layout="column-major", seed=0),
        dict(b=2, heads=1, d=3, h=3, w=1, k=3, dtype=torch.float32, layout="contiguous", seed=1),
    )
    for_all(
        prop, examples, b=st.integers(1, 2), heads=st.integers(1, 2), d=st.integers(1, 3), h=SIDES, w=SIDES,
        k=KERNELS, dtype=DTYPES, layout=LAYOUTS, seed=SEEDS,
    )  # fmt: skip


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
