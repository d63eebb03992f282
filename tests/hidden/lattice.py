"""Hidden checks of assignment 01, the lattice view (LocalViT)."""

from __future__ import annotations

import torch
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
