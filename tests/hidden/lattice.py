"""Hidden checks of assignment 01, the lattice view (LocalViT)."""

from __future__ import annotations

import torch
from einops import rearrange
from hypothesis import strategies as st
from torch import nn

from vitlocal import lattice, locality

from ._common import DTYPES, LAYOUTS, SEEDS, SIDES, call, expect_close, for_all, randn, reference_parts

ROW_MAJOR = "; token i belongs at row i // w, column i % w (einops: b (h w) c)"
# Rearrangements move values without arithmetic: exact in any dtype, bfloat16 included.
ANY_DTYPE = st.sampled_from([torch.float64, torch.float32, torch.bfloat16])
# Batch 1, a non-square grid, a transposed (non-contiguous) input, each dtype: checked first, every time.
SPECIAL = (
    dict(b=1, h=2, w=3, c=2, dtype=torch.float64, layout="column-major", seed=0),
    dict(b=2, h=3, w=2, c=3, dtype=torch.bfloat16, layout="contiguous", seed=1),
    dict(b=1, h=1, w=4, c=1, dtype=torch.float32, layout="column-major", seed=2),
)
# The answers locality_on_tokens may build on: it is checked with these in place, so a mistake in one of
# them costs points in its own cells only.
EARLIER = dict(seq2img=lattice.seq2img, img2seq=lattice.img2seq, split_cls=lattice.split_cls, join_cls=lattice.join_cls)


def _lattice_case(b, h, w, c, dtype, layout):
    layout = ", non-contiguous" if layout != "contiguous" else ""
    return f"a {h}x{w} grid, batch {b}, {str(dtype).removeprefix('torch.')}{layout}"


def check_seq2img(seq2img):
    """``seq2img`` lays tokens on the lattice row-major, on square and non-square grids, any dtype and layout."""

    def prop(b, h, w, c, dtype, layout, seed):
        tokens = randn(b, h * w, c, seed=seed, dtype=dtype, layout=layout)
        got = call(seq2img, "seq2img", tokens, h, w)
        case = _lattice_case(b, h, w, c, dtype, layout)
        expect_close(got, lattice.seq2img(tokens, h, w), f"seq2img(tokens, {h}, {w}) on {case}", ROW_MAJOR)

    for_all(
        prop, SPECIAL, b=st.integers(1, 2), h=SIDES, w=SIDES, c=st.integers(1, 3), dtype=ANY_DTYPE, layout=LAYOUTS,
        seed=SEEDS,
    )  # fmt: skip


def check_img2seq(img2seq):
    """``img2seq`` reads the map row by row, also from a transposed (non-contiguous) map, in any dtype."""

    def prop(b, h, w, c, dtype, layout, seed):
        x = randn(b, c, h, w, seed=seed, dtype=dtype, layout=layout)
        case = _lattice_case(b, h, w, c, dtype, layout)
        expect_close(call(img2seq, "img2seq", x), lattice.img2seq(x), f"img2seq(x) on {case}", ROW_MAJOR)

    for_all(
        prop, SPECIAL, b=st.integers(1, 2), h=SIDES, w=SIDES, c=st.integers(1, 3), dtype=ANY_DTYPE, layout=LAYOUTS,
        seed=SEEDS,
    )  # fmt: skip


def check_split_join(split_cls, join_cls):
    """Any number of prefix tokens: 0 (Swin), 1 (class token), 2 (DeiT's class + distillation tokens)."""

    def prop(num_prefix, n, b, seed):
        tokens = randn(b, num_prefix + n, 3, seed=seed)
        want_prefix, want_patches = lattice.split_cls(tokens, num_prefix)
        got = call(split_cls, "split_cls", tokens, num_prefix)
        if not isinstance(got, tuple) or len(got) != 2:
            raise AssertionError("split_cls must return a pair (prefix, patches)")
        expect_close(got[0], want_prefix, f"the prefix of split_cls(tokens, num_prefix={num_prefix})")
        expect_close(got[1], want_patches, f"the patches of split_cls(tokens, num_prefix={num_prefix})")
        joined = call(join_cls, "join_cls", want_prefix, want_patches)
        expect_close(joined, tokens, f"join_cls with {num_prefix} prefix token(s), batch {b}")

    examples = (dict(num_prefix=2, n=1, b=1, seed=0), dict(num_prefix=0, n=3, b=1, seed=1))
    for_all(prop, examples, num_prefix=st.integers(0, 2), n=st.integers(1, 6), b=st.integers(1, 2), seed=SEEDS)


def check_linear_as_conv1x1(linear_as_conv1x1):
    """The 1x1 conv computes the Linear on every pixel: ``seq2img(linear(T)) == conv(seq2img(T))`` (bias or not)."""

    def prop(c_in, c_out, bias, dtype, h, w, seed):
        torch.manual_seed(seed)
        linear = nn.Linear(c_in, c_out, bias=bias, dtype=dtype)
        what = f"linear_as_conv1x1(Linear({c_in}, {c_out}, bias={bias}, dtype={str(dtype).removeprefix('torch.')}))"
        conv = call(linear_as_conv1x1, "linear_as_conv1x1", linear)
        if not isinstance(conv, nn.Conv2d):
            raise AssertionError(f"{what} must return an nn.Conv2d, got {type(conv).__name__}")
        if (conv.bias is not None) != bias:
            raise AssertionError(f"{what} returns a conv {'without' if bias else 'with'} a bias: keep the Linear's")
        tokens = randn(2, h * w, c_in, seed=seed, dtype=dtype)
        with torch.no_grad():
            want = lattice.seq2img(linear(tokens), h, w)
            got = call(conv, what, lattice.seq2img(tokens, h, w))
        expect_close(got, want, f"the conv of {what} on a {h}x{w} map")

    examples = (
        dict(c_in=3, c_out=2, bias=False, dtype=torch.float32, h=2, w=3, seed=0),
        dict(c_in=2, c_out=3, bias=True, dtype=torch.float64, h=3, w=1, seed=1),
        dict(c_in=2, c_out=2, bias=False, dtype=torch.float64, h=1, w=2, seed=2),
    )
    for_all(
        prop, examples, c_in=st.integers(1, 4), c_out=st.integers(1, 4), bias=st.booleans(), dtype=DTYPES, h=SIDES,
        w=SIDES, seed=SEEDS,
    )  # fmt: skip


def check_locality_on_tokens(locality_on_tokens):
    """The FFN runs on the patch tokens' ``h x w`` lattice (non-square too); the class token passes unchanged.

    Checked with the reference seq2img, img2seq, split_cls and join_cls in place (`EARLIER`).
    """

    def prop(b, h, w, c, dtype, layout, seed):
        torch.manual_seed(seed)
        ffn = nn.Conv2d(c, c, 3, padding=1, groups=c, dtype=dtype)  # a depthwise conv: a map-to-map FFN
        tokens = randn(b, 1 + h * w, c, seed=seed, dtype=dtype, layout=layout)
        case = _lattice_case(b, h, w, c, dtype, layout)
        with torch.no_grad(), reference_parts(locality_on_tokens, **EARLIER):
            want = locality.locality_on_tokens(tokens, ffn, h, w)
            got = call(locality_on_tokens, "locality_on_tokens", tokens, ffn, h, w)
        expect_close(got, want, f"locality_on_tokens(tokens, ffn, {h}, {w}) on {case}")

    examples = (
        dict(b=1, h=2, w=3, c=2, dtype=torch.float64, layout="column-major", seed=0),
        dict(b=2, h=3, w=1, c=1, dtype=torch.float32, layout="contiguous", seed=1),
    )
    for_all(prop, examples, b=st.integers(1, 2), h=SIDES, w=SIDES, c=st.integers(1, 3), dtype=DTYPES, layout=LAYOUTS,
            seed=SEEDS)  # fmt: skip


def _fails(test, implementation) -> bool:
    """Whether a learner's test raises AssertionError on ``implementation`` (any other error propagates)."""
    try:
        test(implementation)
    except AssertionError:
        return True
    return False


def check_img2seq_test(test_img2seq):
    """The learner's test passes on a correct ``img2seq`` and fails on each plausible bug, not only the given one."""
    bugs = {
        "reading the map column by column (b c h w -> b (w h) c)": lambda x: rearrange(x, "b c h w -> b (w h) c"),
        "a reshape without the permute": lambda x: x.reshape(x.shape[0], -1, x.shape[1]),
        "the channels reversed": lambda x: lattice.img2seq(x).flip(-1),
    }
    test_img2seq(lattice.img2seq)  # a correct img2seq must pass
    for bug, implementation in bugs.items():
        if not _fails(test_img2seq, implementation):
            raise AssertionError(f"your test passes an img2seq with a bug: {bug}")


def check_lff_macs(lff_macs):
    """``h w (2 C C_h + C_h k^2)`` on drawn widths, kernels and grids, square or not."""

    def prop(dim, ratio, k, h, w):
        want = h * w * (2 * dim * dim * ratio + dim * ratio * k * k)
        got = call(lff_macs, "lff_macs", dim, dim * ratio, k, h, w)
        if got != want:
            raise AssertionError(f"lff_macs({dim}, {dim * ratio}, {k}, {h}, {w}) is {got}, expected {want}")

    examples = (dict(dim=4, ratio=2, k=3, h=2, w=5),)  # a non-square grid, every time
    for_all(prop, examples, dim=st.integers(1, 64), ratio=st.integers(1, 4), k=st.sampled_from([1, 3, 5, 7]), h=SIDES,
            w=SIDES)  # fmt: skip


def _lff_macs(dim, hidden, kernel_size, h, w):
    return h * w * (2 * dim * hidden + hidden * kernel_size**2)


def _receptive_field(kernel_size, blocks):
    return 1 + blocks * (kernel_size - 1)


def check_receptive_field(receptive_field):
    """``1 + L (k - 1)``: every block widens the square by ``k // 2`` tokens on either side."""
    for k in (1, 3, 5, 7):
        for blocks in range(7):
            got = receptive_field(k, blocks)
            if got != 1 + blocks * (k - 1):
                raise AssertionError(f"receptive_field({k}, {blocks}) is {got}, expected {1 + blocks * (k - 1)}")


def check_kernel_choice(choose_kernel):
    """LocalViT-T under a 5 % budget: ``k^2 / 2C <= 0.05`` allows ``k = 3``; 12 blocks then reach 25 tokens.

    Checked with the reference lff_macs and receptive_field in place: a mistake there costs its own points.
    """
    with reference_parts(choose_kernel, lff_macs=_lff_macs, receptive_field=_receptive_field):
        kernel, _, reach = call(choose_kernel, "choose_kernel")
    if kernel != 3:
        raise AssertionError(
            f"choose_kernel(): KERNEL = {kernel}, expected 3, the largest odd kernel whose share k^2 / 2C stays "
            "within 5 % at C = 192"
        )
    if reach != 25:
        raise AssertionError(
            f"choose_kernel(): REACH = {reach}, expected 25: after 12 blocks of 3x3 convs one token reaches "
            "1 + 12 * 2 tokens"
        )
