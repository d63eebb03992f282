"""CloFormer (vitlocal/models/cloformer.py): builds, counts, in-block downsampling, GN(1), 49 global keys.

Full-size models are built once each on the ``meta`` device for everything that depends only on shapes
(parameter counts, MACs and maps at 224 px, module layout, the official key layout), and once for real at a
reduced size for forward/backward: 64 px keeps the 224 px geometry (maps 16, 8, 4, 2 = 224's 56, 28, 14, 7
divided by 3.5, each divisible by its pool window 8, 4, 2, 1).
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlocal.attnconv import AttnConv, ConvFFN, PooledGlobalAttention
from vitlocal.bench import count_macs, count_params
from vitlocal.models import create_model, list_models
from vitlocal.models.cloformer import CloFormerConfig, global_keys, stage_maps
from vitlocal.models.common import param_groups
from vitlocal.models.official import load_official
from vitlocal.models.papers import PUBLISHED

FULL = ["cloformer_xxs", "cloformer_xs", "cloformer_s"]
ABLATIONS = ["cloformer_global", "cloformer_no_global"]
NANO = ["cloformer_nano"]
REDUCED = {"img_size": 64, "num_classes": 10}
FIXTURES = Path(__file__).parent / "fixtures" / "official_keys"


@functools.cache
def meta_model(name: str) -> nn.Module:
    """The model at its paper configuration, on the meta device (shapes only, built in milliseconds)."""
    with torch.device("meta"):
        return create_model(name)


@functools.cache
def small_model(name: str) -> nn.Module:
    """A real model at a CPU-friendly size: full width and depth at 64 px (nano: as registered, 32 px)."""
    torch.manual_seed(0)
    return create_model(name, **({} if name in NANO else REDUCED))


def input_size(name: str) -> int:
    return small_model(name).config.img_size


def record_shapes(modules: list[nn.Module], run, inputs: bool = False) -> list[tuple[int, ...]]:
    """Run ``run()`` and return the input (or output) shape of each module in ``modules``, in call order."""
    shapes = []

    def hook(module, args, out):
        shapes.append(tuple((args[0] if inputs else out).shape))

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_registered_names():
    assert set(FULL + ABLATIONS + NANO) == set(list_models("cloformer*"))


@pytest.mark.parametrize("name", FULL + ABLATIONS + NANO)
def test_forward_backward_at_reduced_size(name):
    model = small_model(name).train()
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    one = model(x[:1])  # batch size 1 in training mode (BN uses the batch statistics over the map)
    assert one.shape == (1, 10) and torch.isfinite(one).all()
    one.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], model(x[:1]))  # eval: each image's logits do not depend on the batch


# ---------------------------------------------------------------------------------------------------------------------
# Published figures (meta device, 224 px)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FULL)
def test_params_match_published(name):
    # XXS's 4.2M matches the official code; XS and S also match at the paper's 0.1M rounding
    # (4.167M, 7.172M, 12.346M: the official modules have exactly the same counts)
    assert round(count_params(meta_model(name)) / 1e6, 1) == PUBLISHED[name].params_m


@pytest.mark.parametrize("name", FULL)
def test_macs_near_published(name):
    # Ours 0.661 / 1.219 / 2.170 G vs the paper's 0.6 / 1.1 / 2.0 G: 8.5-11% above. The official modules give the
    # SAME count under this counter (checked with random weights), so the gap is the paper's counter, which is
    # unknown. Counted here: every conv (stem, AttnConv's 1x1 and DW convs, the downsampling shortcut's full 5x5
    # conv, ConvFFN), the head, and the global branch's Q K^T and A V products. Not counted: AttnConv's
    # element-wise products (Q * K, A * V), tanh, softmax, the norms and the average pooling.
    gmacs = count_macs(meta_model(name), 224) / 1e9
    published = PUBLISHED[name].gmacs
    assert published < gmacs < published * 1.12


# ---------------------------------------------------------------------------------------------------------------------
# Layout quirks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FULL + ABLATIONS)
def test_group_norm_everywhere_batch_norm_only_in_stem_and_shortcuts(name):
    model = meta_model(name)
    norm_types = (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm, nn.BatchNorm1d, nn.InstanceNorm2d, nn.LocalResponseNorm)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, norm_types)}
    group_norms = [n for n, m in norms.items() if type(m) is nn.GroupNorm]
    assert all(norms[n].num_groups == 1 for n in group_norms)  # GN(1, C): statistics over (C, H, W)
    assert len(group_norms) == 1 + 2 * sum(model.config.depths) + 1  # stem, norm1 + norm2 per block, head
    last_blocks = [f"layers.{i}.blocks.{d - 1}" for i, d in enumerate(model.config.depths[:-1])]
    expected_bn = [f"patch_embed.conv{i}.1" for i in range(1, 5)] + [f"{b}.downsample.1" for b in last_blocks]
    assert sorted(n for n, m in norms.items() if type(m) is nn.BatchNorm2d) == sorted(expected_bn)
    assert len(norms) == len(group_norms) + len(expected_bn)  # no LayerNorm, no other norm


@pytest.mark.parametrize("name", FULL)
def test_downsampling_lives_in_the_last_block_of_stages_1_to_3(name):
    model = meta_model(name)
    dims = model.config.embed_dims
    assert [n for n, _ in model.named_children()] == ["patch_embed", "layers", "norm", "head"]  # no patch merging
    for i, stage in enumerate(model.layers):
        assert [n for n, _ in stage.named_children()] == ["blocks"]
        for j, block in enumerate(stage.blocks):
            assert isinstance(block.mlp, ConvFFN)
            down = j == len(stage.blocks) - 1 and i < len(dims) - 1
            assert block.mlp.dwconv.stride == ((2, 2) if down else (1, 1))
            assert block.mlp.dwconv.kernel_size == (5, 5) and block.mlp.fc1.out_channels == 4 * dims[i]
            assert block.mlp.fc2.out_channels == (dims[i + 1] if down else dims[i])
            if not down:
                assert isinstance(block.downsample, nn.Identity)
                continue
            conv, bn, proj = block.downsample
            assert (conv.in_channels, conv.out_channels, conv.groups) == (dims[i], dims[i], 1)  # a full conv
            assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 5), (2, 2), (2, 2))
            assert isinstance(bn, nn.BatchNorm2d) and (proj.kernel_size, proj.out_channels) == ((1, 1), dims[i + 1])


def test_stage_maps_56_28_14_7_at_224():
    model = meta_model("cloformer_xxs")
    assert model.maps == stage_maps(model.config, 224) == [56, 28, 14, 7]
    first_blocks = [stage.blocks[0] for stage in model.layers]
    shapes = record_shapes(first_blocks, lambda: model(torch.empty(1, 3, 224, 224, device="meta")), inputs=True)
    assert shapes == [(1, 32, 56, 56), (1, 64, 28, 28), (1, 128, 14, 14), (1, 256, 7, 7)]


def test_stage_maps_at_reduced_size():
    # 64 px: 16, 8, 4, 2 (224 / 3.5), the last block of stages 1-3 halving the map and widening to the next stage
    model = small_model("cloformer_xxs").eval()
    last_blocks = [stage.blocks[-1] for stage in model.layers]
    shapes = record_shapes(last_blocks, lambda: model(torch.randn(1, 3, 64, 64)))
    assert shapes == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2), (1, 256, 2, 2)]


@pytest.mark.parametrize("name", [*FULL, "cloformer_global"])
def test_49_global_keys_in_every_stage_at_224(name):
    model = meta_model(name)
    assert [a.window for a in model.modules() if isinstance(a, PooledGlobalAttention)] == [
        w for w, d in zip((8, 4, 2, 1), model.config.depths, strict=True) for _ in range(d)
    ]
    assert global_keys(model.config) == [49] * 4  # 56/8 = 28/4 = 14/2 = 7/1 = 7
    kv = [stage.blocks[0].attn.global_attn.kv for stage in model.layers]  # K, V come from the pooled map
    shapes = record_shapes(kv, lambda: model(torch.empty(1, 3, 224, 224, device="meta")))
    assert [s[-2:] for s in shapes] == [(7, 7)] * 4


def test_head_splits_and_kernels_xxs():
    attns = [stage.blocks[0].attn for stage in meta_model("cloformer_xxs").layers]
    assert [(a.local[0].num_heads, a.global_attn.num_heads) for a in attns] == [(3, 1), (2, 2), (4, 4), (4, 12)]
    assert [a.local[0].kernel_size for a in attns] == [3, 5, 7, 9]
    assert [a.head_dim for a in attns] == [8, 16, 16, 16]  # d = C / heads


def test_ablations_are_all_global_and_all_local():
    all_global, all_local = meta_model("cloformer_global"), meta_model("cloformer_no_global")
    assert not any(isinstance(m, AttnConv) for m in all_global.modules())
    assert all(
        block.attn.global_attn.num_heads == block.attn.num_heads for s in all_global.layers for block in s.blocks
    )
    assert not any(isinstance(m, PooledGlobalAttention) for m in all_local.modules())
    assert all(
        sum(a.num_heads for a in block.attn.local) == block.attn.num_heads
        for s in all_local.layers
        for block in s.blocks
    )
    # with no pooled branch, sizes the pool windows would refuse work (48 px: maps 12, 6, 3, 2)
    model = create_model("cloformer_no_global", img_size=48, num_classes=3).eval()
    assert model.maps == [12, 6, 3, 2]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)


def test_block_computes_the_official_residuals():
    # x1 = x + Attn(GN(x)); out = shortcut(x1) + FFN(GN(x1)), for a plain and a downsampling block (float64, eval)
    model = small_model("cloformer_nano").double().eval()
    try:
        stage = model.layers[1]
        x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
        with torch.no_grad():
            for block in stage.blocks:
                x1 = x + block.attn(block.norm1(x))
                shortcut = x1 if isinstance(block.downsample, nn.Identity) else block.downsample(x1)
                expected = shortcut + block.mlp(block.norm2(x1))
                torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)
                x = expected
        assert x.shape == (2, 128, 2, 2)
    finally:
        model.float()


# ---------------------------------------------------------------------------------------------------------------------
# Initialisation, weight decay, stochastic depth
# ---------------------------------------------------------------------------------------------------------------------


def test_pytorch_default_init_as_official():
    # the official code initialises nothing: Kaiming-uniform(a=sqrt(5)) weights lie in +-1/sqrt(fan_in), and the
    # head is far wider than the trunc-normal(0.02) of the ViT families
    model = small_model("cloformer_xxs")
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-6, name
        elif isinstance(m, nn.GroupNorm | nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all(), name
    assert model.head.weight.std() > 0.03


def test_no_weight_decay_is_empty_and_param_groups_skip_norms_and_biases():
    model = meta_model("cloformer_xxs")
    assert model.no_weight_decay() == set()
    decay, no_decay = param_groups(model, 0.05)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_drop_path_rises_linearly_over_all_blocks():
    model = meta_model("cloformer_xs")
    rates = [block.drop_path.drop_prob for stage in model.layers for block in stage.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.06, 12))
    assert meta_model("cloformer_xxs").config.drop_path_rate == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Official code: no checkpoints; the layout matches the official module's state dict
# ---------------------------------------------------------------------------------------------------------------------


def test_load_official_refuses_cloformer():
    with pytest.raises(ValueError, match="no official checkpoint format is known for CloFormer"):
        load_official(small_model("cloformer_nano"), {})


def _group(key: str) -> str:
    """``patch_embed`` / ``layers.i.blocks.j.attn`` / ``layers.i.blocks.j`` / ``norm`` / ``head``."""
    parts = key.split(".")
    if parts[0] != "layers":
        return parts[0]
    return ".".join(parts[:4] + (["attn"] if parts[4] == "attn" else []))


def test_state_dict_layout_matches_the_official_module():
    # fixture: the official cloformer_xxs().state_dict() key names and shapes (from a run of the official code).
    # Same number of tensors; outside the stem and the attention the names are the official ones; inside them
    # (official ``conv1.conv.0``/``layernorm``, ``qkvs.0``/``convs.0``/``act_blocks.0``/``global_q``) the same
    # shapes per module.
    official = json.loads((FIXTURES / "cloformer_xxs.json").read_text())["keys"]
    ours = {k: list(v.shape) for k, v in meta_model("cloformer_xxs").state_dict().items()}
    assert len(ours) == len(official) == 351
    renamed = {k for k in official if _group(k) == "patch_embed" or _group(k).endswith(".attn")}
    assert {k: official[k] for k in official if k not in renamed} == {k: ours[k] for k in official if k not in renamed}
    shapes = {}
    for which, keys in (("official", official), ("ours", ours)):
        for key, shape in keys.items():
            shapes.setdefault(which, Counter())[(_group(key), tuple(shape))] += 1
    assert shapes["official"] == shapes["ours"]


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------


def test_image_size_rule_and_errors():
    config = CloFormerConfig()
    assert stage_maps(config, 64) == [16, 8, 4, 2] and stage_maps(config, 32) == [8, 4, 2, 1]
    assert stage_maps(config, 221) == [56, 28, 14, 7]  # the stride-2 convs round up: ceil(221 / 4) = 56
    with pytest.raises(ValueError, match=r"img_size=100 .* stage 1's 25x25 map .* pool window 8.*nearby: 96, 128"):
        create_model("cloformer_xxs", img_size=100)
    with pytest.raises(ValueError, match=r"img_size=16 .*nearby: 32"):
        create_model("cloformer_xxs", img_size=16)
    with pytest.raises(ValueError, match="positive integer"):
        create_model("cloformer_xxs", img_size=224.0)
    with pytest.raises(ValueError, match=r"window_sizes\[1\] must be a positive integer"):
        create_model("cloformer_xxs", window_sizes=(8, 0, 2, 1))
    model = small_model("cloformer_nano").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 64)).shape == (1, 10)  # non-square maps 8x16, 4x8, 2x4 fit the windows
    with pytest.raises(ValueError, match=r"img_size=36 .* pool window 2"):
        model(torch.randn(1, 3, 36, 36))  # ceil(36 / 4) = 9 is not divisible by the nano's first window


def test_bad_overrides():
    with pytest.raises(ValueError, match=r"has no field.*overridable fields"):
        create_model("cloformer_xxs", window_size=7)
    with pytest.raises(ValueError, match=r"same .* number of stages"):
        create_model("cloformer_xxs", depths=(2, 2, 6))
    with pytest.raises(ValueError, match="group_split"):
        create_model("cloformer_xxs", group_splits=((3, 1), (2, 2), (4, 4), (4, 4)))
    with pytest.raises(ValueError, match="num_classes"):
        create_model("cloformer_xxs", num_classes=-1)
    with pytest.raises(ValueError, match="drop_prob"):
        create_model("cloformer_nano", drop_path_rate=1.5)
    assert isinstance(create_model("cloformer_nano", num_classes=0).head, nn.Identity)
