"""Multi-head self-attention and the shared layers, against torch built-ins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.attention import Attention, attend
from vitlocal.layers import DropPath, Mlp


def _twin_mha(attn: Attention) -> nn.MultiheadAttention:
    """torch's own nn.MultiheadAttention carrying the same weights (an independent implementation)."""
    mha = nn.MultiheadAttention(attn.dim, attn.num_heads, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha.eval()


@given(
    batch=st.integers(1, 3),
    tokens=st.integers(1, 20),
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_attention_equals_torch_multihead_attention(batch, tokens, heads, head_dim, seed):
    torch.manual_seed(seed)
    attn = Attention(heads * head_dim, heads, qkv_bias=True).double().eval()
    x = randn(batch, tokens, heads * head_dim, seed=seed)
    expected, expected_weights = _twin_mha(attn)(x, x, x, need_weights=True, average_attn_weights=False)
    out, weights = attn(x, return_attn=True)
    torch.testing.assert_close(attn(x), expected)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(attn.attention_weights(x).sum(-1), torch.ones(batch, heads, tokens, dtype=x.dtype))


@given(tokens=st.integers(1, 12), dim=st.integers(1, 16), scale=st.floats(0.01, 3.0), seed=st.integers(0, 2**16))
def test_attend_scale_override_matches_explicit_softmax(tokens, dim, scale, seed):
    q, k, v = (randn(2, 3, tokens, dim, seed=seed + i) for i in range(3))
    expected = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    torch.testing.assert_close(attend(q, k, v, scale), expected)
    out, weights = attend(q, k, v, scale, return_attn=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1))


@given(seed=st.integers(0, 2**16))
def test_attend_additive_mask_matches_sdpa(seed):
    q, k, v = (randn(1, 2, 5, 4, seed=seed + i) for i in range(3))
    mask = torch.zeros(5, 5, dtype=torch.float64).masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
    torch.testing.assert_close(attend(q, k, v, 0.5, attn_mask=mask, return_attn=True)[0], expected)
    assert attend(q, k, v, 0.5, attn_mask=mask, return_attn=True)[1].diagonal(dim1=-2, dim2=-1).abs().max() == 0


def test_attention_scale_defaults_to_head_dim_and_can_be_overridden():
    assert Attention(64, 4).scale == pytest.approx(16**-0.5)
    assert Attention(64, 4, scale=64**-0.5).scale == pytest.approx(0.125)
    assert Attention(64, 4, qkv_bias=False).qkv.bias is None


def test_attention_is_permutation_equivariant_without_position_information():
    """A plain ViT block has no idea where a token sits: permuting tokens permutes the output."""
    attn = Attention(12, 3).double().eval()
    x = randn(2, 9, 12, seed=0)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(attn(x[:, perm]), attn(x)[:, perm])


def test_drop_path_drops_whole_samples_and_preserves_the_mean():
    drop = DropPath(0.25)
    x = torch.ones(4000, 3, 5, dtype=torch.float64)
    y = drop(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 1 / 0.75}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # one decision per sample
    assert abs(y.mean().item() - 1.0) < 0.05
    assert torch.equal(drop.eval()(x), x)


def test_mlp_equals_functional_linear_gelu_linear():
    mlp = Mlp(6, 10, 4).double()
    x = randn(2, 5, 6, seed=3)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Attention(10, 3), "num_heads=3 must divide dim=10; values that work: \\[1, 2, 5, 10\\]"),
        (lambda: Attention(0, 1), "dim must be a positive integer"),
        (lambda: DropPath(1.0), "drop_prob must lie in"),
    ],
)
def test_bad_configuration_is_explained(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_input_is_explained():
    attn = Attention(8, 2)
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(B, N, C\), got shape \(8,\)"):
        attn(torch.randn(8))
    with pytest.raises(ValueError, match="x has 6 channels on axis -1"):
        attn(torch.randn(1, 4, 6))
