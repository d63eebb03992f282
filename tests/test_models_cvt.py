"""CvT (vitlocal/models/cvt.py): builds, published counts, the family's quirks, official checkpoint keys.

Full-size models are built once each on the ``meta`` device for everything that depends only on shapes
(parameter counts, MACs at 224 px, stage maps, module layout, checkpoint keys), and once for real at 32 px
for forward/backward (full width and depth; the stage maps are 8, 4, 2 instead of 56, 28, 14).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlocal.bench import count_macs, count_params
from vitlocal.convproj import ConvProjectionAttention, LayerNorm32
from vitlocal.layers import QuickGELU
from vitlocal.models import create_model, list_models
from vitlocal.models.common import param_groups
from vitlocal.models.cvt import CvTConfig, stage_grids
from vitlocal.models.official import convert_official, load_official
from vitlocal.models.papers import PUBLISHED

FULL = ["cvt_13", "cvt_21"]
NAMES = [*FULL, "cvt_nano"]
REDUCED = {"img_size": 32, "num_classes": 10}
FIXTURES = Path(__file__).parent / "fixtures" / "official_keys"


@functools.cache
def meta_model(name: str, **overrides) -> nn.Module:
    """The model at its paper configuration (changed by ``overrides``) on the meta device: shapes only."""
    with torch.device("meta"):
        return create_model(name, **overrides)


@functools.cache
def small_model(name: str) -> nn.Module:
    """A real model at a CPU-friendly size: full width and depth at 32 px (the nano preset as registered)."""
    torch.manual_seed(0)
    return create_model(name, **(REDUCED if name in FULL else {}))


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...] | None]]:
    """The (map shape, class-token shape) each stage returns."""
    shapes = []

    def record(module, inputs, output):
        fmap, cls = output
        shapes.append((tuple(fmap.shape), None if cls is None else tuple(cls.shape)))

    hooks = [stage.register_forward_hook(record) for stage in model.stages]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def test_registered_names():
    assert set(NAMES) <= set(list_models("cvt_*"))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_at_reduced_size(name):
    model = small_model(name).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        # batch 1: the official torch.squeeze bug would return (10,); ours keeps the batch axis
        one, two = model(x[:1]), model(x)
    assert one.shape == (1, 10)
    torch.testing.assert_close(one[0], two[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Published figures (meta device)
# ---------------------------------------------------------------------------------------------------------------------


def _independent_param_count(c: CvTConfig) -> int:
    """The parameter count written out from the paper's layer list (running BN statistics are buffers)."""
    total, c_in = 0, c.in_chans
    for k, dim, depth in zip(c.patch_size, c.embed_dim, c.depth, strict=True):
        total += k * k * c_in * dim + dim + 2 * dim  # embedding conv (bias) + LN
        hidden = int(dim * c.mlp_ratio)
        block = 2 * 2 * dim  # two LNs
        block += 3 * (c.kernel_qkv**2 * dim + 2 * dim)  # q/k/v: depthwise conv (no bias) + BN
        block += 4 * (dim * dim + dim)  # proj_q/k/v (bias) + proj
        block += dim * hidden + hidden + hidden * dim + dim  # MLP
        total += depth * block
        c_in = dim
    dim = c.embed_dim[-1]
    return total + dim + 2 * dim + dim * c.num_classes + c.num_classes  # cls token, final LN, head


@pytest.mark.parametrize("name", FULL)
def test_params_match_published(name):
    # CvT-13: 19.997M (the official code's count, checked by running it) -> 20.0M (±0.5M);
    # CvT-21: 31.62M, published as 32M (rounded to the nearest million)
    model = meta_model(name)
    params = count_params(model)
    assert params == _independent_param_count(model.config)
    published = PUBLISHED[name].params_m
    assert round(params / 1e6) == round(published)
    if name == "cvt_13":
        assert round(params / 1e6, 1) == published
        assert abs(params / 1e6 - published) <= 0.5


@pytest.mark.parametrize("name", FULL)
def test_macs_near_published(name):
    # Within 5%: counters differ in what they include (ours: every conv and matmul, attention products too, no
    # element-wise ops); measured 4.57 G (CvT-13) and 7.18 G (CvT-21) vs 4.5 / 7.1 (+1.5%, +1.1%)
    assert count_macs(meta_model(name), 224) / 1e9 == pytest.approx(PUBLISHED[name].gmacs, rel=0.05)


def test_macs_at_384_and_without_squeezed_kv():
    # README: CvT-13 @384 16.3 GFLOPs (ours 16.27). Paper Table 7 (unverified): stride_kv 1 costs 6.55 G vs 4.53 G
    # (ours 6.64 vs 4.57, +1.4%): "squeezing" K/V by stride 2 saves about 30% of CvT-13's FLOPs.
    assert count_macs(meta_model("cvt_13"), 384) / 1e9 == pytest.approx(16.3, rel=0.05)
    unsqueezed = count_macs(meta_model("cvt_13", stride_kv=1), 224) / 1e9
    assert unsqueezed == pytest.approx(6.55, rel=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Quirks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_no_position_embedding_anywhere(name):
    model = meta_model(name)
    assert not any("pos_embed" in key for key in model.state_dict())
    # every parameter belongs to a conv, a norm, a linear map or the class token: nothing is added to the tokens
    owners = {type(m) for m in model.modules() if any(True for _ in m.parameters(recurse=False))}
    assert owners <= {nn.Conv2d, nn.BatchNorm2d, LayerNorm32, nn.Linear, type(model.stages[-1])}


@pytest.mark.parametrize("name", NAMES)
def test_class_token_only_in_the_last_stage(name):
    model = meta_model(name)
    assert [n for n, _ in model.named_parameters() if "cls" in n] == ["stage2.cls_token"]
    assert [stage.cls_token is None for stage in model.stages] == [True, True, False]
    flags = [[block.attn.with_cls_token for block in stage.blocks] for stage in model.stages]
    assert [set(f) for f in flags] == [{False}, {False}, {True}]


@pytest.mark.parametrize("name", NAMES)
def test_quickgelu_in_every_mlp_and_fp32_layernorms(name):
    model = meta_model(name)
    blocks = [block for stage in model.stages for block in stage.blocks]
    assert len(blocks) == sum(model.config.depth)
    assert all(type(block.mlp.act) is QuickGELU for block in blocks)
    assert not any(isinstance(m, nn.GELU) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert all(type(m) is LayerNorm32 and m.eps == 1e-5 for m in norms)
    assert len(norms) == 3 + 2 * len(blocks) + 1  # one per embedding, two per block, the final LN


def test_stage_maps_56_28_14_at_224():
    model = meta_model("cvt_13")  # CvT-21 differs only in depth
    shapes = stage_outputs(model, torch.empty(1, 3, 224, 224, device="meta"))
    assert shapes == [((1, 64, 56, 56), None), ((1, 192, 28, 28), None), ((1, 384, 14, 14), (1, 1, 384))]
    assert model.grids == stage_grids(model.config) == [56, 28, 14]
    assert stage_grids(model.config, 384) == [96, 48, 24]


def test_stage_maps_at_reduced_size():
    # the same arithmetic on a real model: 32 px is 224 / 7, so the maps are 56 / 7, 28 / 7, 14 / 7
    shapes = stage_outputs(small_model("cvt_13").eval(), torch.randn(1, 3, 32, 32))
    assert shapes == [((1, 64, 8, 8), None), ((1, 192, 4, 4), None), ((1, 384, 2, 2), (1, 1, 384))]


def test_squeezed_kv_token_counts_at_224():
    # stage 3 at 224: Q keeps 1 + 14*14 = 197 tokens, stride-2 K/V have 1 + 7*7 = 50
    attn = meta_model("cvt_13").stage2.blocks[0].attn
    q, k, v = attn.forward_conv(torch.empty(1, 197, 384, device="meta"), 14, 14)
    assert (q.shape[1], k.shape[1], v.shape[1]) == (197, 50, 50)
    q, k, v = meta_model("cvt_13", stride_kv=1).stage2.blocks[0].attn.forward_conv(q, 14, 14)
    assert (q.shape[1], k.shape[1], v.shape[1]) == (197, 197, 197)


@pytest.mark.parametrize("name", NAMES)
def test_attention_scale_is_the_full_width(name):
    # quirk: C^-0.5 over the stage width, not head_dim^-0.5 (T9 in tests/test_convproj.py proves what it means)
    model = meta_model(name)
    for stage, dim, heads in zip(model.stages, model.config.embed_dim, model.config.num_heads, strict=True):
        for block in stage.blocks:
            assert isinstance(block.attn, ConvProjectionAttention)
            assert block.attn.scale == dim**-0.5 and block.attn.num_heads == heads


@pytest.mark.parametrize("name", FULL)
def test_drop_path_schedule_is_per_stage(name):
    # official: linspace(0, DROP_PATH_RATE[i], DEPTH[i]) inside each stage (HuggingFace: one rate per stage)
    model = meta_model(name)
    depths = model.config.depth
    rates = [[block.drop_path.drop_prob for block in stage.blocks] for stage in model.stages]
    assert rates == [[0.0] * depths[0], [0.0] * depths[1], torch.linspace(0, 0.1, depths[2]).tolist()]


def test_drop_path_overrides():
    # a single float is the official pattern (stochastic depth in the last stage only); a tuple sets every stage
    one = meta_model("cvt_13", drop_path_rate=0.2)
    assert [[b.drop_path.drop_prob for b in s.blocks] for s in one.stages] == [
        [0.0],
        [0.0, 0.0],
        torch.linspace(0, 0.2, 10).tolist(),
    ]
    each = meta_model("cvt_13", drop_path_rate=(0.1, 0.2, 0.3))
    assert [s.blocks[-1].drop_path.drop_prob for s in each.stages] == pytest.approx([0.0, 0.2, 0.3])
    assert each.stage1.blocks[0].drop_path.drop_prob == 0.0


def test_official_init():
    model = small_model("cvt_nano")
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "head":
            assert torch.all(module.bias == 0), name
        if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
    linear = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Linear)])
    assert linear.std().item() == pytest.approx(0.02, rel=0.1)  # trunc-normal(0.02), the head's weight included
    # quirk: the head's bias keeps PyTorch's default uniform(+-1/sqrt(fan_in)) init (official: only head.weight)
    bound = model.config.embed_dim[-1] ** -0.5
    assert model.head.bias.abs().max() <= bound and model.head.bias.abs().sum() > 0
    cls = model.stage2.cls_token
    assert 0 < cls.abs().max() < 0.1  # trunc-normal(0.02), not zeros


@pytest.mark.parametrize("name", ["cvt_13", "cvt_nano"])
def test_no_weight_decay_matches_the_official_groups(name):
    # official: no_weight_decay() = {stage2.cls_token} + WITHOUT_WD_LIST ['bn', 'bias', 'ln'] (the depthwise convs
    # ARE decayed); a comparison run against the official code found our groups identical to the official set_wd's
    model = meta_model(name)
    assert model.no_weight_decay() == {"stage2.cls_token"}
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    norms_and_biases = {
        f"{prefix}.{pname}"
        for prefix, m in model.named_modules()
        for pname, _ in m.named_parameters(recurse=False)
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) or pname == "bias"
    }
    assert skipped == norms_and_biases | {"stage2.cls_token"}
    assert "stage0.blocks.0.attn.conv_proj_q.conv.weight" in {names[id(p)] for p in decay["params"]}


# ---------------------------------------------------------------------------------------------------------------------
# Official checkpoints: the key names and shapes of the official module's state_dict() (microsoft/CvT)
# ---------------------------------------------------------------------------------------------------------------------


def _official_keys() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "cvt_13.json").read_text())["keys"]


def test_converter_loads_official_keys():
    keys = _official_keys()
    fake = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    model = meta_model("cvt_13")
    load_official(model, fake)  # strict: raises on any missing / unexpected key or shape mismatch
    assert list(convert_official(model, fake)) == list(keys)  # the official names are ours
    assert {"stage0.patch_embed.proj.weight", "stage2.cls_token", "head.weight"} <= keys.keys()
    # a DistributedDataParallel checkpoint, wrapped as the official trainer saves it
    load_official(model, {"state_dict": {f"module.{k}": v for k, v in fake.items()}})


def test_converter_rejects_other_checkpoints():
    fake = {k: torch.empty(shape, device="meta") for k, shape in _official_keys().items()}
    with pytest.raises(ValueError, match="missing keys"):
        load_official(meta_model("cvt_21"), fake)  # CvT-13 weights into CvT-21
    with pytest.raises(ValueError, match="HuggingFace"):
        load_official(meta_model("cvt_13"), {"cvt.encoder.stages.0.embedding.convolution_embeddings.projection": 0})


# ---------------------------------------------------------------------------------------------------------------------
# Overrides, image sizes and errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"img_size": 2}, "every size from 3 px up works"),
        ({"img_size": (224, 224)}, "positive integer"),
        ({"img_size": 0}, "positive integer"),
        ({"depth": (1, 2)}, "same"),
        ({"patch_stride": (4, 0, 2)}, "patch_stride"),
        ({"patch_padding": (2, -1, 1)}, "patch_padding"),
        ({"num_heads": (1, 3, 5)}, "must divide"),
        ({"drop_path_rate": 1.0}, r"\[0, 1\)"),
        ({"drop_path_rate": (0.1, 0.2)}, "one per stage"),
        ({"method": "linear"}, "broken"),
        ({"stride_kv": 0}, "stride_kv"),
        ({"num_classes": -1}, "num_classes"),
        ({"position_embedding": True}, "overridable fields"),
    ],
)
def test_bad_overrides_raise_helpful_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        meta_model("cvt_13", **overrides)


def test_any_image_size_works_without_position_embedding():
    model = small_model("cvt_nano").eval()
    with torch.no_grad():
        for h, w in ((32, 32), (20, 20), (24, 40), (3, 3)):
            assert model(torch.randn(1, 3, h, w)).shape == (1, 10)
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 2, 2))
    assert meta_model("cvt_13", img_size=3).grids == [1, 1, 1]  # the smallest size that works


def test_ablations_build_and_run():
    # non-overlapping patch embedding (k = s, p = 0) instead of the conv token embedding: the same maps
    patchy = meta_model("cvt_13", patch_size=(4, 2, 2), patch_stride=(4, 2, 2), patch_padding=(0, 0, 0))
    assert patchy.grids == [56, 28, 14]
    for overrides in ({"method": "avg"}, {"stride_kv": 1}, {"num_classes": 0}):
        model = create_model("cvt_nano", **overrides).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == ((2, 128) if overrides.get("num_classes") == 0 else (2, 10))
        assert torch.isfinite(out).all()


def test_position_embedding_ablation_adds_one_table_per_stage_exempt_from_decay():
    """Table 5's ablation: ``pos_embed=True`` adds a learned (1, h_i w_i, C_i) table to each stage; the released
    model has none, and the ablation refuses an input size its tables do not fit."""
    plain = create_model("cvt_nano")
    model = create_model("cvt_nano", pos_embed=True)
    assert not any("pos_embed" in name for name, _ in plain.named_parameters())
    tables = {name: p.shape for name, p in model.named_parameters() if "pos_embed" in name}
    assert tables == {
        "stage0.pos_embed": (1, 64, 32),
        "stage1.pos_embed": (1, 16, 64),
        "stage2.pos_embed": (1, 4, 128),
    }
    assert set(tables) <= model.no_weight_decay()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="position embedding for 64 tokens"):
        model(torch.randn(1, 3, 64, 64))
