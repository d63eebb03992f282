"""LocalViT's locality feed-forward and block, each property against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.attention import Attention
from vitlocal.lattice import img2seq, seq2img
from vitlocal.layers import ECA, DropPath, HSigmoid, HSwish, Mlp, QuickGELU, SqueezeExcite
from vitlocal.locality import LocalityFeedForward, LocalViTBlock, locality_on_tokens, official_act

seeds = st.integers(0, 2**16)


# ---------------------------------------------------------------- helpers (independent formulas)
def h_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x + 3, 0, 6) / 6


def h_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x + 3, 0, 6) / 6


def relu6(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0, 6)


def randomize_batchnorms(module: nn.Module, seed: int) -> nn.Module:
    """Generic eval-mode BN statistics and affine parameters, so no layer is accidentally the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            bn.weight.copy_(torch.randn(n, generator=g, dtype=torch.float64))
            bn.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))
    return module.eval()


def identity_batchnorms(module: nn.Module) -> nn.Module:
    """Eval-mode BNs that compute exactly the identity: mean 0, var 1, weight 1, bias 0, eps 0."""
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.eps = 0.0
    return module.eval()


def build_ffn(seed: int, dim: int, **kwargs: object) -> LocalityFeedForward:
    torch.manual_seed(seed)
    return randomize_batchnorms(LocalityFeedForward(dim, **kwargs).double(), seed)


def in_window(i: int, j: int, r: int, c: int, k: int) -> bool:
    return abs(i - r) <= k // 2 and abs(j - c) <= k // 2


def change_per_token(f, x: torch.Tensor, index: int, seed: int) -> torch.Tensor:
    """``|f(x + e) - f(x)|`` per token, for a random perturbation ``e`` of token ``index`` only: ``(B, N)``."""
    bump = torch.zeros_like(x)
    bump[:, index] = randn(x.shape[0], x.shape[2], seed=seed + 1)
    return (f(x + bump) - f(x)).abs().amax(dim=-1)


# ---------------------------------------------------------------- T1: a token-wise Linear is a 1x1 conv
@given(
    batch=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 6),
    seed=seeds,
)
def test_tokenwise_linear_is_a_1x1_conv_on_the_lattice(batch, h, w, c_in, c_out, seed):
    torch.manual_seed(seed)
    linear = nn.Linear(c_in, c_out).double()
    conv = nn.Conv2d(c_in, c_out, 1).double()
    with torch.no_grad():
        conv.weight.copy_(linear.weight[..., None, None])
        conv.bias.copy_(linear.bias)
    tokens = randn(batch, h * w, c_in, seed=seed)
    torch.testing.assert_close(img2seq(conv(seq2img(tokens, h, w))), linear(tokens))
    torch.testing.assert_close(conv(seq2img(tokens, h, w)), seq2img(linear(tokens), h, w))


# ---------------------------------------------------------------- T2: minus locality it is an MLP
@given(
    batch=st.integers(1, 2),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    dim=st.integers(1, 6),
    expand_ratio=st.integers(1, 4),
    num_prefix=st.integers(0, 2),
    activation=st.sampled_from(["hswish", "relu6"]),
    seed=seeds,
)
def test_without_depthwise_conv_the_ffn_is_a_bias_free_tokenwise_mlp(
    batch, h, w, dim, expand_ratio, num_prefix, activation, seed
):
    torch.manual_seed(seed)
    ffn = LocalityFeedForward(dim, expand_ratio=expand_ratio, activation=activation, gate=None, depthwise=False)
    ffn = identity_batchnorms(ffn.double())
    w1 = ffn.conv[0].weight[:, :, 0, 0]  # (γC, C)
    w2 = ffn.conv[3].weight[:, :, 0, 0]  # (C, γC)
    act = h_swish if activation == "hswish" else relu6
    x = randn(batch, num_prefix + h * w, dim, seed=seed)
    patches = x[:, num_prefix:]
    expected_patches = patches + act(patches @ w1.T) @ w2.T  # T + σ(T W_1^T) W_2^T, token by token
    out = locality_on_tokens(x, ffn, h, w, num_prefix=num_prefix)
    torch.testing.assert_close(out[:, num_prefix:], expected_patches)
    assert torch.equal(out[:, :num_prefix], x[:, :num_prefix])


# ---------------------------------------------------------------- the whole FFN with functional ops
def functional_ffn(ffn: LocalityFeedForward, x: torch.Tensor, reduction: int) -> torch.Tensor:
    """The official hs+se order written with F.conv2d / F.batch_norm / F.linear (eval mode)."""
    conv1, bn1, dw, bn2, se, conv2, bn3 = (ffn.conv[i] for i in (0, 1, 3, 4, 6, 7, 8))
    hidden = conv1.out_channels

    def bn(m: nn.BatchNorm2d, a: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(a, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    a = h_swish(bn(bn1, F.conv2d(x, conv1.weight)))
    k = dw.kernel_size[0]
    a = h_swish(bn(bn2, F.conv2d(a, dw.weight, padding=k // 2, groups=hidden)))
    assert se.fc1.out_features == hidden // reduction
    s = h_sigmoid(
        F.linear(F.relu(F.linear(a.mean(dim=(2, 3)), se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias)
    )
    a = a * s[:, :, None, None]
    return x + bn(bn3, F.conv2d(a, conv2.weight))


@given(
    batch=st.integers(1, 2),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    dim=st.integers(1, 4),
    expand_ratio=st.integers(1, 4),
    kernel_size=st.sampled_from([1, 3, 5]),
    reduction=st.integers(1, 4),
    seed=seeds,
)
def test_ffn_matches_functional_ops_with_depthwise_conv_and_se(
    batch, h, w, dim, expand_ratio, kernel_size, reduction, seed
):
    reduction = min(reduction, dim * expand_ratio)
    ffn = build_ffn(seed, dim, expand_ratio=expand_ratio, gate="se", reduction=reduction, kernel_size=kernel_size)
    x = randn(batch, dim, h, w, seed=seed)
    torch.testing.assert_close(ffn(x), functional_ffn(ffn, x, reduction))


# ---------------------------------------------------------------- layer order = the official one
CONV, BN, HS = nn.Conv2d, nn.BatchNorm2d, HSwish
OFFICIAL_ORDER = {
    # (depthwise, depthwise_first, gate) -> the official nn.Sequential, by layer type
    (True, False, "se"): [CONV, BN, HS, CONV, BN, HS, SqueezeExcite, CONV, BN],
    (True, True, None): [CONV, BN, HS, CONV, BN, HS, CONV, BN],
    (False, False, "eca"): [CONV, BN, HS, ECA, CONV, BN],
}


@pytest.mark.parametrize(("depthwise", "depthwise_first", "gate"), list(OFFICIAL_ORDER))
def test_layer_order_is_the_official_one(depthwise, depthwise_first, gate):
    ffn = LocalityFeedForward(8, expand_ratio=1, gate=gate, depthwise=depthwise, depthwise_first=depthwise_first)
    assert [type(m) for m in ffn.conv] == OFFICIAL_ORDER[(depthwise, depthwise_first, gate)]
    depthwise_convs = [m for m in ffn.conv if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise_convs) == int(depthwise)
    if depthwise_first:
        assert ffn.conv[0].groups == 8 and ffn.conv[3].kernel_size == (1, 1)
    assert all(m.bias is None for m in ffn.conv if isinstance(m, nn.Conv2d))  # official convs: bias=False


@given(h=st.integers(1, 4), w=st.integers(1, 4), dim=st.integers(1, 4), seed=seeds)
def test_depthwise_first_applies_the_depthwise_conv_before_the_first_1x1(h, w, dim, seed):
    ffn = build_ffn(seed, dim, expand_ratio=1, gate=None, depthwise_first=True)
    dw, bn1, conv1, bn2, conv2, bn3 = (ffn.conv[i] for i in (0, 1, 3, 4, 6, 7))

    def bn(m: nn.BatchNorm2d, a: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(a, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    x = randn(2, dim, h, w, seed=seed)
    a = h_swish(bn(bn1, F.conv2d(x, dw.weight, padding=1, groups=dim)))
    a = h_swish(bn(bn2, F.conv2d(a, conv1.weight)))
    torch.testing.assert_close(ffn(x), x + bn(bn3, F.conv2d(a, conv2.weight)))


# ---------------------------------------------------------------- the thesis: locality
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    dim=st.integers(3, 5),
    kernel_size=st.sampled_from([1, 3, 5]),
    depthwise_first=st.booleans(),
    data=st.data(),
    seed=seeds,
)
def test_locality_ffn_changes_exactly_the_kxk_neighbourhood(h, w, dim, kernel_size, depthwise_first, data, seed):
    r, c = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    expand_ratio = 1 if depthwise_first else 4  # depthwise_first needs γ = 1 (official dp_first)
    ffn = build_ffn(
        seed, dim, expand_ratio=expand_ratio, gate=None, kernel_size=kernel_size, depthwise_first=depthwise_first
    )
    x = randn(2, h * w, dim, seed=seed)
    change = change_per_token(lambda t: locality_on_tokens(t, ffn, h, w, num_prefix=0), x, r * w + c, seed)
    for i in range(h):
        for j in range(w):
            if in_window(i, j, r, c, kernel_size):
                assert (change[:, i * w + j] > 1e-9).all(), f"token ({i}, {j}) next to ({r}, {c}) did not change"
            else:
                assert (change[:, i * w + j] == 0).all(), f"token ({i}, {j}) far from ({r}, {c}) changed"


@given(n=st.integers(1, 12), dim=st.integers(1, 6), data=st.data(), seed=seeds)
def test_tokenwise_mlp_changes_only_the_perturbed_token(n, dim, data, seed):
    index = data.draw(st.integers(0, n - 1))
    torch.manual_seed(seed)
    mlp = Mlp(dim, 2 * dim, act_layer=HSwish).double()
    change = change_per_token(mlp, randn(2, n, dim, seed=seed), index, seed)
    assert (change[:, index] > 0).all()
    assert (change[:, torch.arange(n) != index] == 0).all()


@given(n=st.integers(1, 12), heads=st.integers(1, 3), data=st.data(), seed=seeds)
def test_self_attention_changes_every_token(n, heads, data, seed):
    index = data.draw(st.integers(0, n - 1))
    torch.manual_seed(seed)
    attn = Attention(2 * heads, heads).double().eval()
    change = change_per_token(attn, randn(2, n, 2 * heads, seed=seed), index, seed)
    assert (change > 1e-12).all()


@settings(max_examples=10)
@given(h=st.integers(4, 6), w=st.integers(4, 6), gate=st.sampled_from(["se", "eca", "eca_hard"]), seed=seeds)
def test_a_channel_gate_makes_the_ffn_global(h, w, gate, seed):
    """SE and ECA pool the whole map, so a change anywhere reaches every token: the official module is not local."""
    ffn = build_ffn(seed, 4, expand_ratio=4, gate=gate, reduction=1, kernel_size=3)
    x = randn(2, h * w, 4, seed=seed)
    change = change_per_token(lambda t: locality_on_tokens(t, ffn, h, w, num_prefix=0), x, 0, seed)
    far = torch.tensor([not in_window(i, j, 0, 0, 3) for i in range(h) for j in range(w)])
    assert (change[:, far] > 0).all()


# ---------------------------------------------------------------- the gates' widths
@given(dim=st.integers(1, 32), expand_ratio=st.integers(1, 6), data=st.data())
def test_se_reduction_divides_the_hidden_width(dim, expand_ratio, data):
    reduction = data.draw(st.integers(1, dim * expand_ratio))
    ffn = LocalityFeedForward(dim, expand_ratio=expand_ratio, gate="se", reduction=reduction)
    se = ffn.conv[6]
    assert se.fc1.in_features == dim * expand_ratio
    assert se.fc1.out_features == (dim * expand_ratio) // reduction


def test_published_se_widths():
    """LocalViT-T r192 and LocalViT-S r384 keep 4 SE units; T-SE4 keeps 192."""
    assert LocalityFeedForward(192, expand_ratio=4, reduction=192).conv[6].fc1.out_features == 4
    assert LocalityFeedForward(384, expand_ratio=4, reduction=384).conv[6].fc1.out_features == 4
    assert LocalityFeedForward(192, expand_ratio=4, reduction=4).conv[6].fc1.out_features == 192


@pytest.mark.parametrize(
    ("channels", "kernel"),
    # t = int(|log2 C + 1| / 2), then +1 if even. By hand:
    # 768: log2 = 9.58 -> 10.58 / 2 = 5.29 -> 5      192: 7.58 -> 8.58 / 2 = 4.29 -> 4 -> 5
    # 64: 6 -> 7 / 2 = 3.5 -> 3                      128: 7 -> 8 / 2 = 4 -> 5
    # 16: 4 -> 5 / 2 = 2.5 -> 2 -> 3                 2: 1 -> 2 / 2 = 1 -> 1        4096: 12 -> 13 / 2 = 6.5 -> 6 -> 7
    [(768, 5), (192, 5), (64, 3), (128, 5), (16, 3), (2, 1), (4096, 7)],
)
def test_eca_kernel_size_by_hand(channels, kernel):
    assert ECA(channels).conv.kernel_size == (kernel,)
    if channels % 4 == 0:
        ffn = LocalityFeedForward(channels // 4, expand_ratio=4, gate="eca")
        assert ffn.conv[6].conv.kernel_size == (kernel,)


def test_eca_gates_sigmoid_and_hard_sigmoid():
    assert isinstance(LocalityFeedForward(8, gate="eca").conv[6].gate, nn.Sigmoid)
    assert isinstance(LocalityFeedForward(8, gate="eca_hard").conv[6].gate, HSigmoid)
    assert isinstance(LocalityFeedForward(8, gate="se").conv[6].gate, HSigmoid)  # quirk: SE gates with h_sigmoid


# ---------------------------------------------------------------- the official act switch
@pytest.mark.parametrize(
    ("act", "activation", "gate"),
    [
        (1, nn.ReLU6, None),
        ("relu6", nn.ReLU6, None),
        (2, HSwish, None),
        ("hs", HSwish, None),
        (3, HSwish, SqueezeExcite),
        ("hs+se", HSwish, SqueezeExcite),
        (4, HSwish, nn.Sigmoid),
        ("hs+eca", HSwish, nn.Sigmoid),
        (5, HSwish, HSigmoid),
        (0, HSwish, HSigmoid),
        ("hs+ecah", HSwish, HSigmoid),
    ],
)
def test_from_official_act(act, activation, gate):
    ffn = LocalityFeedForward.from_official_act(act, 8, expand_ratio=2, reduction=4)
    acts = [m for m in ffn.conv if isinstance(m, (nn.ReLU6, HSwish))]
    assert [type(m) for m in acts] == [activation, activation]  # quirk: relu6 replaces both activations
    gates = [m for m in ffn.conv if isinstance(m, (SqueezeExcite, ECA))]
    if gate is None:
        assert gates == []
    elif gate is SqueezeExcite:
        assert [type(m) for m in gates] == [SqueezeExcite] and gates[0].fc1.out_features == 4
    else:
        assert [type(m) for m in gates] == [ECA] and isinstance(gates[0].gate, gate)


def test_official_act_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"act='gelu'.*'relu6', 'hs', 'hs\+se', 'hs\+eca', 'hs\+ecah'"):
        official_act("gelu")


# ---------------------------------------------------------------- the block
def attention_by_hand(block: LocalViTBlock, x: torch.Tensor) -> torch.Tensor:
    """``x + MHSA(LN(x))`` with plain matmuls (eps 1e-6, qkv split as (3, heads, d), scale d^-0.5)."""
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-6) * block.norm1.weight + block.norm1.bias
    b, n, c = x.shape
    heads = block.attn.num_heads
    d = c // heads
    qkv = (y @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (a @ v).transpose(1, 2).reshape(b, n, c)
    return x + out @ block.attn.proj.weight.T + block.attn.proj.bias


def build_block(seed: int, dim: int, heads: int, **kwargs: object) -> LocalViTBlock:
    torch.manual_seed(seed)
    block = LocalViTBlock(dim, heads, mlp_ratio=2, reduction=2, **kwargs).double()
    with torch.no_grad():  # generic LayerNorm affine parameters
        block.norm1.weight.copy_(randn(dim, seed=seed + 2))
        block.norm1.bias.copy_(randn(dim, seed=seed + 3))
    return randomize_batchnorms(block, seed)


@given(
    batch=st.integers(1, 2),
    side=st.integers(1, 4),
    heads=st.integers(1, 2),
    num_prefix=st.integers(1, 2),
    seed=seeds,
)
def test_block_prefix_tokens_skip_the_ffn(batch, side, heads, num_prefix, seed):
    dim = 2 * heads
    block = build_block(seed, dim, heads, num_prefix=num_prefix)
    x = randn(batch, num_prefix + side * side, dim, seed=seed)
    z = attention_by_hand(block, x)
    out = block(x)
    torch.testing.assert_close(out[:, :num_prefix], z[:, :num_prefix])  # the class (and dist) token: no FFN
    patches = seq2img(z[:, num_prefix:], side, side)
    torch.testing.assert_close(out[:, num_prefix:], img2seq(functional_ffn(block.conv, patches, 2)))


def test_block_has_no_norm2_and_no_droppath_on_the_ffn():
    block = LocalViTBlock(8, 2, drop_path=0.3)
    assert not hasattr(block, "norm2")
    assert [m for m in block.modules() if isinstance(m, nn.LayerNorm)] == [block.norm1]
    assert block.norm1.eps == 1e-6
    assert [m for m in block.modules() if isinstance(m, DropPath)] == [block.drop_path]
    assert not any(isinstance(m, DropPath) for m in block.conv.modules())


@settings(max_examples=10)
@given(side=st.integers(1, 3), seed=seeds)
def test_block_drop_path_never_touches_the_ffn_branch(side, seed):
    """Train-mode DropPath (p = 0.5) scales a kept branch by 2; the FFN's own residual output is never scaled."""
    block = build_block(seed, 4, 2, drop_path=0.5).train()
    block.conv.eval()  # BN on running statistics, so samples are independent
    x = randn(8, 1 + side * side, 4, seed=seed)
    torch.manual_seed(seed)
    out = block(x)
    attn = attention_by_hand(block, x) - x
    for b in range(x.shape[0]):
        kept = not torch.equal(out[b, 0], x[b, 0])
        z = x[b : b + 1] + (2 * attn[b : b + 1] if kept else 0)
        torch.testing.assert_close(out[b, 0], z[0, 0])
        patches = seq2img(z[:, 1:], side, side)
        torch.testing.assert_close(out[b : b + 1, 1:], img2seq(functional_ffn(block.conv, patches, 2)))


def test_block_non_square_grid_with_explicit_h_w():
    block = build_block(0, 4, 2)
    x = randn(2, 1 + 2 * 3, 4, seed=0)
    z = attention_by_hand(block, x)
    out = block(x, h=2, w=3)
    torch.testing.assert_close(out[:, 1:], img2seq(functional_ffn(block.conv, seq2img(z[:, 1:], 2, 3), 2)))
    with pytest.raises(ValueError, match="square grid"):
        block(x)


# ---------------------------------------------------------------- activations
@given(n=st.integers(1, 30), seed=seeds)
def test_activations_match_their_formulas_and_gradcheck(n, seed):
    x = 3 * randn(n, seed=seed)
    torch.testing.assert_close(HSigmoid()(x), torch.clamp(x + 3, 0, 6) / 6)
    torch.testing.assert_close(HSwish()(x), x * torch.clamp(x + 3, 0, 6) / 6)
    torch.testing.assert_close(QuickGELU()(x), x / (1 + torch.exp(-1.702 * x)))
    for act in (HSigmoid(), HSwish(), QuickGELU()):
        assert torch.autograd.gradcheck(act, (x.clone().requires_grad_(),))


@settings(max_examples=5)
@given(h=st.integers(1, 3), w=st.integers(1, 3), num_prefix=st.integers(0, 2), seed=seeds)
def test_locality_on_tokens_gradcheck(h, w, num_prefix, seed):
    ffn = build_ffn(seed, 2, expand_ratio=1, gate=None)
    x = randn(1, num_prefix + h * w, 2, seed=seed).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: locality_on_tokens(t, ffn, h, w, num_prefix), (x,))


# ---------------------------------------------------------------- bad input
def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match=r"kernel_size must be odd.*got 4; use 3 or 5"):
        LocalityFeedForward(8, kernel_size=4)
    with pytest.raises(ValueError, match=r"activation='gelu' is unknown; valid names: \['hswish', 'relu6'\]"):
        LocalityFeedForward(8, activation="gelu")
    with pytest.raises(ValueError, match=r"gate='cbam' is unknown; valid names: \[None, 'se', 'eca', 'eca_hard'\]"):
        LocalityFeedForward(8, gate="cbam")
    with pytest.raises(ValueError, match=r"reduction=33 divides the hidden width.*=32.*use reduction <= 32"):
        LocalityFeedForward(8, expand_ratio=4, gate="se", reduction=33)
    with pytest.raises(ValueError, match="stride=2 must be 1"):
        LocalityFeedForward(8, stride=2)
    with pytest.raises(ValueError, match="out_dim=16 must equal dim=8"):
        LocalityFeedForward(8, out_dim=16)
    with pytest.raises(ValueError, match=r"depthwise_first=True .* use expand_ratio=1"):
        LocalityFeedForward(8, expand_ratio=4, depthwise_first=True)
    with pytest.raises(ValueError, match="depthwise_first=True needs depthwise=True"):
        LocalityFeedForward(8, expand_ratio=1, depthwise=False, depthwise_first=True)
    with pytest.raises(ValueError, match="num_heads=3 must divide dim=8"):
        LocalViTBlock(8, 3)


def test_bad_inputs_raise_clear_errors():
    ffn = LocalityFeedForward(8, gate=None).eval()
    with pytest.raises(ValueError, match=r"x has 4 channels.*built for 8"):
        ffn(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(B, C, H, W\)"):
        ffn(torch.randn(4, 8, 3))
    with pytest.raises(ValueError, match=r"N=10 tokens, which is not h\*w=3\*4=12"):
        locality_on_tokens(torch.randn(1, 11, 8), ffn, 3, 4)
    with pytest.raises(ValueError, match="6 tokens do not form a square grid; pass h and w"):
        locality_on_tokens(torch.randn(1, 7, 8), ffn)
    with pytest.raises(ValueError, match="pass both h and w"):
        locality_on_tokens(torch.randn(1, 7, 8), ffn, h=2)
    with pytest.raises(ValueError, match=r"split the class token off first with split_cls"):
        locality_on_tokens(torch.randn(1, 10, 8), ffn, 3, 3, num_prefix=0)
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(B, N, C\)"):
        LocalViTBlock(8, 2)(torch.randn(8, 10))
