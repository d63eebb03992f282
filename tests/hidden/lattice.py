"""Hidden checks of assignment 01, the lattice view (LocalViT)."""

from __future__ import annotations

import torch
from einops import rearrange
from hypothesis import strategies as st
from torch import nn

from vitlocal import lattice, locality

from ._common import SEEDS, SIDES, expect_close, for_all, randn

ROW_MAJOR = "; token i belongs at row i // w, column i % w (einops: b (h w) c)"


def check_seq2img(seq2img):
    """``seq2img`` lays tokens on the lattice row-major, on square and non-square grids."""

    def prop(b, h, w, c, seed):
        tokens = randn(b, h * w, c, seed=seed)
        expect_close(seq2img(tokens, h, w), lattice.seq2img(tokens, h, w), f"seq2img on a {h}x{w} grid", ROW_MAJOR)

    for_all(prop, b=st.integers(1, 2), h=SIDES, w=SIDES, c=st.integers(1, 3), seed=SEEDS)


def check_img2seq(img2seq):
    """``img2seq`` reads the map row by row."""

    def prop(b, h, w, c, seed):
        x = randn(b, c, h, w, seed=seed)
        expect_close(img2seq(x), lattice.img2seq(x), f"img2seq on a {h}x{w} map", ROW_MAJOR)

    for_all(prop, b=st.integers(1, 2), h=SIDES, w=SIDES, c=st.integers(1, 3), seed=SEEDS)


def check_split_join(split_cls, join_cls):
    """Any number of prefix tokens: 0 (Swin), 1 (class token), 2 (DeiT's class + distillation tokens)."""

    def prop(num_prefix, n, seed):
        tokens = randn(2, num_prefix + n, 3, seed=seed)
        want_prefix, want_patches = lattice.split_cls(tokens, num_prefix)
        got = split_cls(tokens, num_prefix)
        if not isinstance(got, tuple) or len(got) != 2:
            raise AssertionError("split_cls must return a pair (prefix, patches)")
        expect_close(got[0], want_prefix, f"the prefix of split_cls(tokens, num_prefix={num_prefix})")
        expect_close(got[1], want_patches, f"the patches of split_cls(tokens, num_prefix={num_prefix})")
        expect_close(join_cls(want_prefix, want_patches), tokens, f"join_cls with {num_prefix} prefix token(s)")

    for_all(prop, num_prefix=st.integers(0, 2), n=st.integers(1, 6), seed=SEEDS)


def check_linear_as_conv1x1(linear_as_conv1x1):
    """The 1x1 conv computes the Linear on every pixel: ``seq2img(linear(T)) == conv(seq2img(T))`` (bias or not)."""

    def prop(c_in, c_out, bias, h, w, seed):
        torch.manual_seed(seed)
        linear = nn.Linear(c_in, c_out, bias=bias)
        conv = linear_as_conv1x1(linear)
        if not isinstance(conv, nn.Conv2d):
            raise AssertionError(f"linear_as_conv1x1 must return an nn.Conv2d, got {type(conv).__name__}")
        tokens = torch.randn(2, h * w, c_in, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = lattice.seq2img(linear(tokens), h, w)
            got = conv(lattice.seq2img(tokens, h, w))
        expect_close(got, want, f"the 1x1 conv of Linear({c_in}, {c_out}, bias={bias})")

    for_all(prop, c_in=st.integers(1, 4), c_out=st.integers(1, 4), bias=st.booleans(), h=SIDES, w=SIDES, seed=SEEDS)


def check_locality_on_tokens(locality_on_tokens):
    """The FFN runs on the patch tokens' ``h x w`` lattice (non-square too); the class token passes unchanged."""

    def prop(h, w, c, seed):
        torch.manual_seed(seed)
        ffn = nn.Conv2d(c, c, 3, padding=1, groups=c).double()  # a depthwise conv: a map-to-map FFN
        tokens = randn(2, 1 + h * w, c, seed=seed)
        with torch.no_grad():
            want = locality.locality_on_tokens(tokens, ffn, h, w)
            got = locality_on_tokens(tokens, ffn, h, w)
        expect_close(got, want, f"locality_on_tokens on a {h}x{w} grid")

    for_all(prop, h=SIDES, w=SIDES, c=st.integers(1, 3), seed=SEEDS)


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
        got = lff_macs(dim, dim * ratio, k, h, w)
        if got != want:
            raise AssertionError(f"lff_macs({dim}, {dim * ratio}, {k}, {h}, {w}) is {got}, expected {want}")

    for_all(prop, dim=st.integers(1, 64), ratio=st.integers(1, 4), k=st.sampled_from([1, 3, 5, 7]), h=SIDES, w=SIDES)


def check_receptive_field(receptive_field):
    """``1 + L (k - 1)``: every block widens the square by ``k // 2`` tokens on either side."""
    for k in (1, 3, 5, 7):
        for blocks in range(7):
            got = receptive_field(k, blocks)
            if got != 1 + blocks * (k - 1):
                raise AssertionError(f"receptive_field({k}, {blocks}) is {got}, expected {1 + blocks * (k - 1)}")


def check_kernel_choice(choose_kernel):
    """LocalViT-T under a 5 % budget: ``k^2 / 2C <= 0.05`` allows ``k = 3``; 12 blocks then reach 25 tokens."""
    kernel, _, reach = choose_kernel()
    if kernel != 3:
        raise AssertionError(f"KERNEL = {kernel} is not the largest odd kernel whose share k^2 / 2C stays within 5 %")
    if reach != 25:
        raise AssertionError(f"REACH = {reach}: after 12 blocks of 3x3 convs one token reaches 1 + 12 * 2 tokens")
