"""Wrong answers to assignment 01, the lattice view."""

from __future__ import annotations

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
