"""The lattice view: tokens <-> map, against naive loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.util import randn
from vitlocal.lattice import img2seq, join_cls, seq2img, split_cls, square_grid

seeds = st.integers(0, 2**16)
grids = {"batch": st.integers(1, 3), "h": st.integers(1, 6), "w": st.integers(1, 6), "c": st.integers(1, 5)}


@given(**grids, seed=seeds)
def test_seq2img_and_img2seq_invert_each_other(batch, h, w, c, seed):
    tokens = randn(batch, h * w, c, seed=seed)
    image = randn(batch, c, h, w, seed=seed + 1)
    assert torch.equal(img2seq(seq2img(tokens, h, w)), tokens)
    assert torch.equal(seq2img(img2seq(image), h, w), image)


@given(**grids, seed=seeds)
def test_token_i_lands_at_row_i_div_w_column_i_mod_w(batch, h, w, c, seed):
    tokens = randn(batch, h * w, c, seed=seed)
    expected = torch.empty(batch, c, h, w, dtype=tokens.dtype)
    for i in range(h * w):
        expected[:, :, i // w, i % w] = tokens[:, i, :]
    assert torch.equal(seq2img(tokens, h, w), expected)
    image = randn(batch, c, h, w, seed=seed + 1)
    flat = torch.stack([image[:, :, y, x] for y in range(h) for x in range(w)], dim=1)  # row by row
    assert torch.equal(img2seq(image), flat)


@given(batch=st.integers(1, 3), n=st.integers(0, 8), num_prefix=st.integers(0, 2), c=st.integers(1, 4), seed=seeds)
def test_split_and_join_cls_round_trip(batch, n, num_prefix, c, seed):
    tokens = randn(batch, num_prefix + n, c, seed=seed)
    prefix, patches = split_cls(tokens, num_prefix)
    assert prefix.shape == (batch, num_prefix, c) and patches.shape == (batch, n, c)
    for i in range(num_prefix + n):
        part, j = (prefix, i) if i < num_prefix else (patches, i - num_prefix)
        assert torch.equal(part[:, j], tokens[:, i])
    assert torch.equal(join_cls(prefix, patches), tokens)


@given(side=st.integers(1, 40))
def test_square_grid_recovers_the_side(side):
    assert square_grid(side * side) == side
    if side > 1:
        with pytest.raises(ValueError, match=f"{side * side - 1} tokens do not form a square grid; pass h and w"):
            square_grid(side * side - 1)


@given(h=st.integers(1, 3), w=st.integers(1, 3), seed=seeds)
def test_seq2img_and_img2seq_gradcheck(h, w, seed):
    tokens = randn(2, h * w, 2, seed=seed).requires_grad_()
    image = randn(2, 2, h, w, seed=seed).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: seq2img(t, h, w), (tokens,))
    assert torch.autograd.gradcheck(img2seq, (image,))


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"tokens must have 3 dimensions \(B, N, C\), got shape \(4, 3\)"):
        seq2img(torch.randn(4, 3), 2, 2)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(B, C, h, w\)"):
        img2seq(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"tokens must have 3 dimensions"):
        split_cls(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"patches must have 3 dimensions"):
        join_cls(torch.randn(1, 1, 4), torch.randn(9, 4))
    with pytest.raises(ValueError, match=r"must agree in batch and channels"):
        join_cls(torch.randn(1, 1, 4), torch.randn(1, 9, 3))
    with pytest.raises(ValueError, match=r"N=197 tokens, which is not h\*w=14\*14=196.*split_cls"):
        seq2img(torch.randn(1, 197, 4), 14, 14)
    with pytest.raises(
        ValueError, match=r"N=16 tokens, which is not h\*w=3\*4=12; a square grid of 16 tokens is 4x4"
    ) as err:
        seq2img(torch.randn(1, 16, 4), 3, 4)
    assert "split_cls" not in str(err.value)  # 15 is not a square: no class-token hint
    with pytest.raises(ValueError, match="h must be a positive integer, got 0"):
        seq2img(torch.randn(1, 4, 4), 0, 4)
    with pytest.raises(ValueError, match=r"num_prefix must be an integer in \[0, 5\]"):
        split_cls(torch.randn(1, 5, 4), num_prefix=6)
    with pytest.raises(ValueError, match="197 tokens do not form a square grid"):
        square_grid(197)
