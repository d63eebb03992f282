"""DeiT and LocalViT models (vitlocal.models.vit): every variant runs, the published parameter and MAC counts,
the official checkpoint layout, and LocalViT's quirks, each against an independent computation."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.util import randn
from vitlocal.bench import count_macs, count_params
from vitlocal.locality import LocalViTBlock
from vitlocal.models import create_model, list_models
from vitlocal.models.common import param_groups
from vitlocal.models.official import load_official
from vitlocal.models.papers import PUBLISHED
from vitlocal.models.vit import Block, VisionTransformer

NAMES = (
    "deit_tiny",
    "deit_small",
    "deit_base",
    "deit_nano",
    "localvit_tiny",
    "localvit_tiny_se4",
    "localvit_tiny_mlp6_act1",
    "localvit_small",
    "localvit_nano",
)
PUBLISHED_NAMES = ("deit_tiny", "deit_small", "deit_base", "localvit_tiny", "localvit_tiny_se4", "localvit_small")
FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"
seeds = st.integers(0, 2**16)


@functools.cache
def meta_model(name: str, **overrides: object) -> VisionTransformer:
    """A full-size model on the meta device: parameters with shapes but no data (instant to build)."""
    with torch.device("meta"):
        return create_model(name, **overrides)


@functools.cache
def macs(name: str) -> int:
    """count_macs of the full-size model at 224 px (on the meta device: shapes suffice)."""
    return count_macs(meta_model(name), 224)


def real_model(name: str) -> VisionTransformer:
    """A fresh copy of a full-size model at 224 px with its official initialisation (built once)."""
    return copy.deepcopy(_built(name))


@functools.cache
def _built(name: str) -> VisionTransformer:
    torch.manual_seed(0)
    return create_model(name)


def nano(name: str, seed: int, **overrides: object) -> VisionTransformer:
    """A float64 eval-mode CPU preset with random BN statistics, so no BN is accidentally the identity."""
    torch.manual_seed(seed)
    model = create_model(name, **overrides).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=torch.float64) + 0.5)
            bn.weight.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64))
    return model


def explicit_mhsa(x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, heads: int) -> torch.Tensor:
    """Softmax attention written out (no SDPA): ``(B, N, C) -> (B, N, C)``, DeiT's ``(3, heads, d)`` layout."""
    b, n, c = x.shape
    q, k, v = F.linear(x, qkv.weight, qkv.bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (c // heads) ** -0.5, dim=-1)
    return F.linear((attn @ v).transpose(1, 2).reshape(b, n, c), proj.weight, proj.bias)


def attn_weights(block: nn.Module) -> tuple[nn.Linear, nn.Linear, int]:
    """The attention's ``(qkv, proj, heads)``, the arguments of `explicit_mhsa`."""
    return block.attn.qkv, block.attn.proj, block.attn.num_heads


# ---------------------------------------------------------------- every model runs
def test_registered_names():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_every_model_runs_forward_and_backward_at_a_reduced_size(name):
    torch.manual_seed(0)
    model = create_model(name, img_size=32, num_classes=7)  # 2 x 2 grid at patch 16, 8 x 8 for the nano presets
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():  # batch size 1, and each sample independent of the rest of the batch in eval mode
        one = model(x[:1])
        torch.testing.assert_close(one, model(x)[:1], atol=1e-5, rtol=1e-4)
    assert one.shape == (1, 7)


# ---------------------------------------------------------------- published figures
@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_parameter_count_equals_the_published_figure(name):
    # DeiT-Ti 5.7M, LocalViT-T 5.9M and LocalViT-S 22.4M match the official code; DeiT-S/B
    # (22.1M, 86.6M) and LocalViT-T-SE4 (9.4M) too. The papers round to 0.1M, so we do.
    assert round(count_params(meta_model(name)) / 1e6, 1) == PUBLISHED[name].params_m


@pytest.mark.parametrize("name", ["deit_tiny", "localvit_tiny"])
def test_macs_within_ten_percent_of_the_published_gflops(name):
    # The papers print 1.3G rounded to 0.1G (up to 4% rounding alone) and count LN / GELU / softmax
    # differently from count_macs (matmuls and convs only); ours are 1.254G and 1.266G.
    gmacs = macs(name) / 1e9
    assert abs(gmacs - PUBLISHED[name].gmacs) <= 0.1 * PUBLISHED[name].gmacs


def test_localvit_adds_exactly_the_depthwise_and_se_macs_to_deit():
    # By hand, per block: DW 3x3 on 196 pixels of γC = 768 channels, SE 768 -> 4 -> 768, and the two
    # 1x1 convs run on 196 patch tokens where DeiT's Linear layers run on 197 tokens (the class token).
    per_block = 196 * 768 * 9 + 2 * 768 * 4 - 2 * 192 * 768
    assert macs("localvit_tiny") - macs("deit_tiny") == 12 * per_block


# ---------------------------------------------------------------- LocalViT quirks
@settings(max_examples=3)
@given(seed=seeds)
def test_class_token_after_a_locality_block_is_x_plus_the_attention_branch(seed):
    model = nano("localvit_nano", seed)
    x = randn(2, 1 + 64, 64, seed=seed)
    for block in model.blocks:
        out = block(x)
        branch = explicit_mhsa(F.layer_norm(x, (64,), block.norm1.weight, block.norm1.bias, 1e-6), *attn_weights(block))
        # quirk: the class token never sees an FFN, so it is exactly x + attention
        torch.testing.assert_close(out[:, 0], x[:, 0] + branch[:, 0])
        # ... while the patch tokens do go through the FFN (so the check above can fail)
        assert not torch.allclose(out[:, 1:], x[:, 1:] + branch[:, 1:])
        x = out


def test_deit_block_matches_the_explicit_pre_norm_formula():
    model = nano("deit_nano", seed=3)
    block = model.blocks[0]
    x = randn(2, 1 + 64, 64, seed=3)
    # X = X + MHSA(LN_1(X)); X = X + Linear(GELU(Linear(LN_2(X)))), both LNs with eps 1e-6 (quirk)
    y = x + explicit_mhsa(F.layer_norm(x, (64,), block.norm1.weight, block.norm1.bias, 1e-6), *attn_weights(block))
    z = F.layer_norm(y, (64,), block.norm2.weight, block.norm2.bias, 1e-6)
    z = F.linear(
        F.gelu(F.linear(z, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias
    )
    torch.testing.assert_close(block(x), y + z)


def test_locality_blocks_have_no_norm2_and_plain_blocks_do():
    model = meta_model("localvit_tiny", locality_layers="low")
    for i, block in enumerate(model.blocks):
        norms = [name for name, m in block.named_modules() if isinstance(m, nn.LayerNorm)]
        assert norms == (["norm1"] if i < 4 else ["norm1", "norm2"])
        assert all(m.eps == 1e-6 for m in block.modules() if isinstance(m, nn.LayerNorm))


def test_drop_path_never_touches_the_locality_ffn():
    # With the attention branch zeroed, only the FFN branch is left. In training mode LocalViT's output is then
    # deterministic (quirk: no DropPath on its FFN), while DeiT's is not (DropPath on its MLP branch).
    def run(name: str, seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = create_model(name, drop_path_rate=0.9).train()
        with torch.no_grad():
            for block in model.blocks:
                block.attn.proj.weight.zero_()
                block.attn.proj.bias.zero_()
        torch.manual_seed(seed)
        return model.forward_features(randn(4, 3, 32, 32, seed=0, dtype=torch.float32))

    torch.testing.assert_close(run("localvit_nano", 1), run("localvit_nano", 2))
    assert not torch.allclose(run("deit_nano", 1), run("deit_nano", 2))


def test_deit_and_localvit_differ_only_in_the_ffn_and_the_heads():
    deit, local = meta_model("deit_tiny"), meta_model("localvit_tiny")
    ffn = re.compile(r"^blocks\.\d+\.(norm2|mlp|conv)\.")

    def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in model.state_dict().items() if not ffn.match(k)}

    assert shapes(deit) == shapes(local)
    assert [b.attn.num_heads for b in deit.blocks] == [3] * 12
    assert [b.attn.num_heads for b in local.blocks] == [4] * 12  # quirk: LocalViT-T has 4 heads, DeiT-Ti 3
    assert {type(b) for b in deit.blocks} == {Block} and {type(b) for b in local.blocks} == {LocalViTBlock}
    # LocalViT without locality and with DeiT's heads is DeiT, configuration and all
    plain = meta_model("localvit_tiny", locality_layers="none", num_heads=3)
    assert {k: tuple(v.shape) for k, v in plain.state_dict().items()} == {
        k: tuple(v.shape) for k, v in deit.state_dict().items()
    }
    assert dataclasses.replace(plain.config, reduction=deit.config.reduction) == deit.config


PLACEMENTS = {  # by hand, for 12 blocks: the paper's lower / middle / upper thirds
    "all": set(range(12)),
    "none": set(),
    "low": {0, 1, 2, 3},
    "mid": {4, 5, 6, 7},
    "high": {8, 9, 10, 11},
    "low+high": {0, 1, 2, 3, 8, 9, 10, 11},
}


@pytest.mark.parametrize("layers", list(PLACEMENTS))
def test_locality_layers_named_placements(layers):
    model = meta_model("localvit_tiny", locality_layers=layers)
    assert {i for i, b in enumerate(model.blocks) if isinstance(b, LocalViTBlock)} == PLACEMENTS[layers]
    assert {i for i, b in enumerate(model.blocks) if isinstance(b, Block)} == set(range(12)) - PLACEMENTS[layers]


@settings(max_examples=10)
@given(layers=st.sets(st.integers(0, 5)), descending=st.booleans())
def test_locality_layers_as_block_indices(layers, descending):
    with torch.device("meta"):
        model = create_model("localvit_nano", locality_layers=tuple(sorted(layers, reverse=descending)))
    for i, block in enumerate(model.blocks):
        assert isinstance(block, LocalViTBlock if i in layers else Block)
        # plain blocks keep DeiT's norm2 + MLP; locality blocks have the official ``conv`` FFN instead
        assert hasattr(block, "conv") == (i in layers) and hasattr(block, "mlp") == (i not in layers)


@settings(max_examples=6)
@given(layers=st.sets(st.integers(0, 5), max_size=3), depthwise=st.booleans(), row=st.integers(0, 7), seed=seeds)
def test_without_attention_each_locality_block_widens_the_receptive_field_by_one_patch(layers, depthwise, row, seed):
    # Zero every attention branch and drop the (global) SE gate: then a patch token's final state depends only
    # on the input patches within Chebyshev distance (#blocks with a 3x3 depthwise conv), read off the gradient.
    model = nano("localvit_nano", seed, locality_layers=tuple(layers), gate=None, depthwise=depthwise)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.zero_()
            block.attn.proj.bias.zero_()
    image = randn(1, 3, 32, 32, seed=seed).requires_grad_()
    col = (row * 5 + seed) % 8
    # a random read-out: the plain sum of a LayerNorm's output is constant (its gradient is zero)
    model.forward_features(image)[0, 1 + row * 8 + col].dot(randn(64, seed=seed)).backward()
    touched = image.grad.abs().reshape(3, 8, 4, 8, 4).sum(dim=(0, 2, 4)) > 0  # (grid row, grid column)
    radius = len(layers) if depthwise else 0
    expected = torch.tensor([[max(abs(r - row), abs(c - col)) <= radius for c in range(8)] for r in range(8)])
    assert torch.equal(touched, expected)


def test_with_attention_every_patch_sees_every_patch():
    model = nano("deit_nano", seed=0)
    image = randn(1, 3, 32, 32, seed=0).requires_grad_()
    model.forward_features(image)[0, 1].dot(randn(64, seed=0)).backward()
    assert (image.grad.abs().reshape(3, 8, 4, 8, 4).sum(dim=(0, 2, 4)) > 0).all()


# ---------------------------------------------------------------- official initialisation, weight decay
def test_official_initialisation():
    model = real_model("localvit_tiny")
    linear = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Linear)])
    assert abs(linear.std().item() - 0.02) < 0.0005  # trunc-normal 0.02 on every Linear, SE's included
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, nn.Linear))
    for norm in (m for m in model.modules() if isinstance(m, nn.LayerNorm | nn.BatchNorm2d)):
        assert (norm.weight == 1).all() and not norm.bias.any()
    for token in (model.pos_embed, model.cls_token):  # trunc-normal 0.02 (timm 1.0's cls_token std 1e-6 is not)
        assert abs(token.std().item() - 0.02) < 0.004
    # convs keep PyTorch's default kaiming-uniform, |w| <= 1/sqrt(fan_in): 1/3 for the 3x3 depthwise convs
    # (std 0.19, far from 0.02), 1/sqrt(768) = 0.036 for the patch embedding (a trunc-normal 0.02 would exceed it)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= fan_in**-0.5 and conv.weight.abs().max() > 0.9 * fan_in**-0.5
        assert conv.bias is None or conv is model.patch_embed.proj  # quirk: LocalViT's convs have no bias
    depthwise = torch.cat([c.weight.flatten() for c in convs if c.groups > 1])
    assert abs(depthwise.std().item() - 1 / 3 / math.sqrt(3)) < 0.01


def test_no_weight_decay_on_position_embedding_and_class_token():
    model = meta_model("deit_tiny")
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert any(p is model.pos_embed for p in no_decay["params"])
    assert any(p is model.cls_token for p in no_decay["params"])
    assert any(p is model.blocks[0].attn.qkv.weight for p in decay["params"])


# ---------------------------------------------------------------- official checkpoints
def official_keys(fixture: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"{fixture}.json").read_text())["keys"]


@pytest.mark.parametrize("fixture", ["deit_tiny", "localvit_tiny", "localvit_tiny_mlp6_act1"])
def test_converter_loads_the_official_layout(fixture):
    keys = official_keys(fixture)
    state = {k: torch.full(shape, 0.5) if shape else torch.tensor(7) for k, shape in keys.items()}
    model = load_official(real_model(fixture), state)  # strict: no missing / unexpected keys, equal shapes
    ours = model.state_dict()
    assert len(ours) == len(keys)
    assert all((v == 0.5).all() for k, v in ours.items() if not k.endswith("num_batches_tracked"))


def test_converter_moves_the_se_linear_layers_and_resizes_pos_embed():
    keys = official_keys("localvit_tiny")
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) if shape else torch.tensor(0) for k, shape in keys.items()}
    torch.manual_seed(0)
    model = load_official(create_model("localvit_tiny", img_size=160), state)  # pos_embed trained at 224
    se = model.blocks[5].conv.conv[6]  # official SELayer.fc = Sequential(Linear, ReLU, Linear, h_sigmoid)
    assert torch.equal(se.fc1.weight, state["blocks.5.conv.conv.6.fc.0.weight"])
    assert torch.equal(se.fc2.bias, state["blocks.5.conv.conv.6.fc.2.bias"])
    assert model.pos_embed.shape == (1, 1 + 10 * 10, 192)
    assert torch.equal(model.pos_embed[:, 0], state["pos_embed"][:, 0])  # the class token's entry is kept


def test_converter_rejects_the_other_family_layout():
    state = {k: torch.zeros(shape) for k, shape in official_keys("deit_tiny").items()}
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.0\.conv"):
        load_official(real_model("localvit_tiny"), state)


# ---------------------------------------------------------------- errors a learner can act on
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"img_size": 100}, r"img_size=100 must be a multiple of 16 .*96, 112"),
        ({"img_size": (224, 192)}, r"img_size=\(224, 192\) must be one integer \(square images\)"),
        ({"image_size": 224}, r"no field\(s\) \['image_size'\]"),
        ({"locality_layers": "bottom"}, r"locality_layers='bottom' is unknown; use 'all', 'none'"),
        ({"locality_layers": (0, 12)}, r"distinct block indices in \[0, 12\).*bad: \[12\]"),
        ({"locality_layers": (1, 1)}, r"distinct block indices"),
        ({"num_heads": 5}, r"num_heads=5 must divide dim=192"),
        ({"gate": "sigmoid"}, r"gate='sigmoid' is unknown"),
        ({"reduction": 1000}, r"reduction=1000 .*use reduction <= 768"),
        ({"num_classes": 0}, r"num_classes must be a positive integer"),
    ],
)
def test_bad_overrides_raise_a_helpful_value_error(overrides, match):
    with pytest.raises(ValueError, match=match), torch.device("meta"):
        create_model("localvit_tiny", **overrides)


def test_wrong_image_size_at_forward_names_the_built_size():
    model = create_model("localvit_nano")
    with pytest.raises(ValueError, match=r"built for img_size=32 .*build it with img_size=64"):
        model(torch.zeros(1, 3, 64, 64))
