"""Wrong answers to assignment 01, the lattice view."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from vitlocal import lattice

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


@wrong(subtle=False)
def columns_first():
    """``(w h)`` instead of ``(h w)``: the tokens laid on the lattice column by column, in both directions."""

    def seq2img(tokens, h, w):
        return rearrange(tokens, "b (w h) c -> b c h w", h=h, w=w)

    def img2seq(x):
        return rearrange(x, "b c h w -> b (w h) c")

    return {"seq2img": seq2img, "img2seq": img2seq}


@wrong(subtle=False)
def reshape_without_permute():
    """A ``reshape`` without the permute, in both directions: shapes fit, the channels and positions get mixed."""

    def seq2img(tokens, h, w):
        return tokens.reshape(tokens.shape[0], tokens.shape[2], h, w)

    def img2seq(x):
        return x.reshape(x.shape[0], x.shape[2] * x.shape[3], x.shape[1])

    return {"seq2img": seq2img, "img2seq": img2seq}


@wrong(subtle=False)
def one_prefix_token_only():
    """``split_cls`` ignores ``num_prefix``: always one class token (breaks DeiT's distillation token)."""

    def split_cls(tokens, num_prefix=1):
        return tokens[:, :1], tokens[:, 1:]

    return {"split_cls": split_cls}


@wrong(subtle=False)
def prefix_without_token_axis():
    """``tokens[:, 0]`` drops the token axis of the prefix."""

    def split_cls(tokens, num_prefix=1):
        return tokens[:, 0], tokens[:, num_prefix:]

    return {"split_cls": split_cls}


@wrong(subtle=False)
def conv_without_bias():
    """The 1x1 conv gets the Linear's weight but not its bias."""

    def linear_as_conv1x1(linear):
        conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=False, dtype=linear.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(rearrange(linear.weight, "o i -> o i 1 1"))
        return conv

    return {"linear_as_conv1x1": linear_as_conv1x1}


@wrong(subtle=False)
def conv_with_transposed_weight():
    """The kernel built from ``W^T``, as if the Linear computed ``W x`` with ``W`` of shape (in, out)."""

    def linear_as_conv1x1(linear):
        conv = nn.Conv2d(linear.out_features, linear.in_features, 1, dtype=linear.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(rearrange(linear.weight, "o i -> i o 1 1"))
        return conv

    return {"linear_as_conv1x1": linear_as_conv1x1}


@wrong(subtle=False)
def ffn_residual_added_twice():
    """A residual around the FFN although the FFN (LocalViT's) already holds its own: ``T + FFN(T)``."""

    def locality_on_tokens(tokens, ffn, h, w):
        cls, patches = lattice.split_cls(tokens)
        return lattice.join_cls(cls, patches + lattice.img2seq(ffn(lattice.seq2img(patches, h, w))))

    return {"locality_on_tokens": locality_on_tokens}


@wrong(subtle=False)
def grid_sides_swapped():
    """``seq2img(patches, w, h)``: the grid's sides swapped, invisible on a square grid."""

    def locality_on_tokens(tokens, ffn, h, w):
        cls, patches = lattice.split_cls(tokens)
        return lattice.join_cls(cls, lattice.img2seq(ffn(lattice.seq2img(patches, w, h))))

    return {"locality_on_tokens": locality_on_tokens}


@wrong(subtle=False)
def test_checks_shapes_only():
    """The learner's test checks the shape only: the reshape bug keeps the shape."""

    def test_img2seq_reads_row_major(img2seq):
        assert img2seq(torch.zeros(1, 2, 2, 3)).shape == (1, 6, 2)

    return {"test_img2seq_reads_row_major": test_img2seq_reads_row_major}


@wrong(subtle=False)
def test_trusts_the_code_under_test():
    """The learner's test compares img2seq with itself (or with a copy of the same code): it can never fail."""

    def test_img2seq_reads_row_major(img2seq):
        x = torch.randn(1, 2, 2, 3)
        assert torch.equal(img2seq(x), img2seq(x))

    return {"test_img2seq_reads_row_major": test_img2seq_reads_row_major}


@wrong(subtle=True)
def test_on_one_row():
    """The learner's test states the values on a 1x3 map: it catches the reshape, not a (w h) order."""

    def test_img2seq_reads_row_major(img2seq):
        x = torch.arange(6.0).view(1, 2, 1, 3)
        tokens = img2seq(x)
        for col in range(3):
            assert torch.equal(tokens[0, col], x[0, :, 0, col])

    return {"test_img2seq_reads_row_major": test_img2seq_reads_row_major}


@wrong(subtle=False)
def macs_depthwise_as_dense():
    """The k x k conv counted as a dense conv, C_h * C_h * k^2 per pixel, as if it had no groups."""

    def lff_macs(dim, hidden, kernel_size, h, w):
        return h * w * (2 * dim * hidden + hidden * hidden * kernel_size**2)

    return {"lff_macs": lff_macs}


@wrong(subtle=True)
def macs_square_grid():
    """The grid taken as h x h: right on the visible check's square map, wrong on 224 x 160 images."""

    def lff_macs(dim, hidden, kernel_size, h, w):
        return h * h * (2 * dim * hidden + hidden * kernel_size**2)

    return {"lff_macs": lff_macs}


@wrong(subtle=False)
def receptive_field_k_times_blocks():
    """``k * L``: the kernels' sides added up, as if neighbouring windows did not overlap."""

    def receptive_field(kernel_size, blocks):
        return kernel_size * blocks

    return {"receptive_field": receptive_field}


@wrong(subtle=True)
def kernel_smallest():
    """The smallest kernel (1) is within budget too, but it is not the largest, and it adds no locality."""

    def choose_kernel():
        return 1, 1 / 384, 1

    return {"choose_kernel": choose_kernel}


@wrong(subtle=False)
def kernel_over_budget():
    """k = 5: a 5x5 depthwise conv costs 25 / 384 = 6.5 % of the 1x1 convs, over the 5 % budget."""

    def choose_kernel():
        return 5, 25 / 384, 49

    return {"choose_kernel": choose_kernel}


@wrong(subtle=True)
def reach_of_one_block():
    """The reach of one block (3) where the exercise asks for the 12 blocks' (25)."""

    def choose_kernel():
        return 3, 9 / 384, 3

    return {"choose_kernel": choose_kernel}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=True)
def img2seq_with_view():
    """``x.view(b, c, h * w)``: right on a contiguous map, an error on a transposed (non-contiguous) one."""

    def img2seq(x):
        b, c, h, w = x.shape
        return x.view(b, c, h * w).transpose(1, 2)

    return {"img2seq": img2seq}


@wrong(subtle=False)
def seq2img_float32():
    """The map built in a fresh ``torch.zeros`` (float32 by default): float64 tokens come back as float32."""

    def seq2img(tokens, h, w):
        out = torch.zeros(tokens.shape[0], tokens.shape[2], h, w)
        out[:] = rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)
        return out

    return {"seq2img": seq2img}


@wrong(subtle=False)
def seq2img_square_grid():
    """The grid's side taken as ``sqrt(N)``, ignoring ``h`` and ``w``: a square grid only."""

    def seq2img(tokens, h, w):
        side = math.isqrt(tokens.shape[1])
        return rearrange(tokens, "b (h w) c -> b c h w", h=side, w=side)

    return {"seq2img": seq2img}


@wrong(subtle=True)
def conv_always_with_bias():
    """A ``Conv2d`` with its default ``bias=True`` whatever the Linear has: ``bias=False`` keeps a random bias."""

    def linear_as_conv1x1(linear):
        conv = nn.Conv2d(linear.in_features, linear.out_features, 1, dtype=linear.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(rearrange(linear.weight, "o i -> o i 1 1"))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    return {"linear_as_conv1x1": linear_as_conv1x1}


@wrong(subtle=False)
def conv_default_dtype():
    """The conv made in the default dtype (float32), whatever the Linear's: a float64 Linear gives a float32 conv."""

    def linear_as_conv1x1(linear):
        conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(rearrange(linear.weight, "o i -> o i 1 1"))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    return {"linear_as_conv1x1": linear_as_conv1x1}


@wrong(subtle=False)
def locality_square_grid():
    """``locality_on_tokens`` lays the patches on a ``sqrt(N) x sqrt(N)`` grid, ignoring ``h`` and ``w``."""

    def locality_on_tokens(tokens, ffn, h, w):
        cls, patches = lattice.split_cls(tokens)
        side = math.isqrt(patches.shape[1])
        return lattice.join_cls(cls, lattice.img2seq(ffn(lattice.seq2img(patches, side, side))))

    return {"locality_on_tokens": locality_on_tokens}
