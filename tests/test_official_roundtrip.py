"""Checkpoint converters round-trip: official (or timm) -> ours -> official (or timm) (vitlocal/models/official.py).

Key layout: for every fixture of official key names and shapes (tests/fixtures/official_keys), the fixture is
converted, loaded strictly, and exported again, which must give exactly its keys and shapes (on the meta device:
shapes suffice). Values: on a small real model of each family, random official-layout tensors come back
identical, and ours -> official -> ours is the identity. timm's layouts (tests/fixtures/timm_keys, enumerated from
timm's source) likewise, and a small model's weights exported in timm's layout and loaded back give identical
logits. (Logits against timm itself, with timm's random weights: `vitlocal.gpu_report`, where timm imports.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitlocal.models import create_model
from vitlocal.models.official import convert_official, detect_layout, export_official, load_official
from vitlocal.models.swin import relative_position_index, shifted_window_mask

FIXTURES = Path(__file__).parent / "fixtures" / "official_keys"
TIMM_FIXTURES = Path(__file__).parent / "fixtures" / "timm_keys"
# every fixture with a released format; each is named after its create_model name (cloformer_xxs: layout only)
LAYOUTS = [
    "deit_tiny",
    "localvit_tiny",
    "localvit_tiny_mlp6_act1",
    "swin_tiny",
    "slide_swin_tiny",
    "cvt_13",
    "crossvit_9",
    "crossvit_9_dagger",
]
# small real models: every family, every rename (LocalViT's SE, Swin's buffers, Slide-Swin's stages, CrossViT's
# fusion with L = 0 and L > 0)
SMALL = [
    ("deit_nano", {}),
    ("localvit_nano", {}),
    ("swin_nano", {}),
    ("slide_swin_nano", {}),
    ("cvt_nano", {}),
    ("crossvit_nano", {}),
    ("crossvit_nano", {"depth": ((1, 2, 2), (1, 2, 0))}),
]
# timm's layouts (fixtures named after the create_model name), and the layout each is recognised as: timm's DeiT
# has the official keys
TIMM_LAYOUTS = {"deit_tiny": "official", "crossvit_tiny": "timm", "swin_tiny": "timm"}
# small real models of the families timm has (CrossViT's fusion with L = 0 and L > 0)
TIMM_SMALL = [
    ("deit_nano", {}),
    ("swin_nano", {}),
    ("crossvit_nano", {}),
    ("crossvit_nano", {"depth": ((1, 2, 2), (1, 2, 0))}),
]
# Swin's buffers that the official modules save and ours rebuild from the configuration
REBUILT = ("relative_position_index", "attn_mask")


def official_keys(name: str, folder: Path = FIXTURES) -> dict[str, tuple[int, ...]]:
    """The fixture's key names and shapes (the official layout's, or timm's from ``TIMM_FIXTURES``)."""
    keys = json.loads((folder / f"{name}.json").read_text())["keys"]
    return {key: tuple(shape) for key, shape in keys.items()}


def random_official(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in ``model``'s official layout (the rebuilt buffers keep the model's values)."""
    g = torch.Generator().manual_seed(seed)

    def draw(like: torch.Tensor) -> torch.Tensor:
        if like.is_floating_point():
            return torch.randn(like.shape, generator=g, dtype=like.dtype)
        return torch.randint(0, 1000, like.shape, generator=g, dtype=like.dtype)  # num_batches_tracked

    return {
        key: value.clone() if key.endswith(REBUILT) else draw(value) for key, value in export_official(model).items()
    }


def test_every_released_fixture_is_covered():
    assert set(LAYOUTS) == {path.stem for path in FIXTURES.glob("*.json")} - {"cloformer_xxs"}


@pytest.mark.parametrize("name", LAYOUTS)
def test_official_key_layout_round_trips(name):
    keys = official_keys(name)
    with torch.device("meta"):
        model = create_model(name)
        load_official(model, {key: torch.zeros(shape) for key, shape in keys.items()})  # strict
    exported = export_official(model)
    assert {key: tuple(value.shape) for key, value in exported.items()} == keys


@pytest.mark.parametrize(("name", "overrides"), SMALL, ids=[f"{n}{'-L2' if o else ''}" for n, o in SMALL])
def test_official_values_round_trip(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    official = random_official(model, seed=1)
    exported = export_official(load_official(model, official))
    assert exported.keys() == official.keys()
    for key, value in official.items():
        assert torch.equal(exported[key], value), key
    ours, state = convert_official(model, exported), model.state_dict()  # and back: ours -> official -> ours
    assert ours.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_swin_export_rebuilds_the_saved_buffers():
    model = create_model("swin_nano")  # maps 16, 8, 4, 2 with window 4: stages 1-2 alternate W-MSA / SW-MSA
    exported = export_official(model)
    assert torch.equal(exported["layers.0.blocks.0.attn.relative_position_index"], relative_position_index(4))
    assert torch.equal(exported["layers.0.blocks.1.attn_mask"], shifted_window_mask(16, 4, 2))  # on the block
    # W-MSA blocks, and the 4x4 map of stage 3 (one window, no shift), have no mask
    assert "layers.0.blocks.0.attn_mask" not in exported and "layers.2.blocks.1.attn_mask" not in exported


def test_crossvit_export_wraps_the_fusion_layers_only_when_l_is_positive():
    with torch.device("meta"):
        model = create_model("crossvit_nano", depth=((1, 2, 2), (1, 2, 0)))
    exported = export_official(model)
    # official: fusion.i is a Sequential of L layers when L > 0, the one layer itself when L = 0
    assert {"blocks.0.fusion.1.1.norm1.weight", "blocks.1.fusion.1.attn.wq.weight"} <= exported.keys()
    assert not any(key.startswith(("blocks.0.fusion.1.norm1", "blocks.1.fusion.1.0.")) for key in exported)


def test_export_refuses_a_family_without_released_weights():
    with torch.device("meta"):
        model = create_model("cloformer_nano")
    with pytest.raises(ValueError, match="no official checkpoint format is known for CloFormer"):
        export_official(model)


# ---------------------------------------------------------------- timm's layouts


def test_every_timm_fixture_is_covered():
    assert set(TIMM_LAYOUTS) == {path.stem for path in TIMM_FIXTURES.glob("*.json")}


@pytest.mark.parametrize("name", TIMM_LAYOUTS)
def test_timm_key_layout_round_trips(name):
    keys = official_keys(name, TIMM_FIXTURES)
    state = {key: torch.zeros(shape, device="meta") for key, shape in keys.items()}
    with torch.device("meta"):
        model = create_model(name)
    assert detect_layout(model, state).name == TIMM_LAYOUTS[name]
    load_official(model, state)  # strict
    exported = export_official(model, layout="timm")
    assert {key: tuple(value.shape) for key, value in exported.items()} == keys


@pytest.mark.parametrize(("name", "overrides"), TIMM_SMALL, ids=[f"{n}{'-L2' if o else ''}" for n, o in TIMM_SMALL])
def test_timm_layout_gives_identical_logits(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    with torch.no_grad():  # no weight left at its init's 0 or 1, so a swapped pair of names would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    timm_state = export_official(model, layout="timm")
    torch.manual_seed(1)
    loaded = load_official(create_model(name, **overrides).eval(), timm_state)
    size = model.config.img_size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_timm_swin_moves_patch_merging_and_head():
    with torch.device("meta"):
        model = create_model("swin_nano")
    exported = export_official(model, layout="timm")
    assert {
        "layers.1.downsample.reduction.weight",
        "layers.3.downsample.norm.bias",
        "head.fc.weight",
    } <= exported.keys()
    assert not any(key.startswith(("layers.0.downsample", "head.weight")) or key.endswith(REBUILT) for key in exported)
    headless = {key: value for key, value in exported.items() if not key.startswith("head.")}  # timm's features
    assert detect_layout(model, headless).name == "timm"  # told by its patch merging alone


def test_timm_swin_buffers_of_timm_0_9_are_dropped():
    # timm 0.9.0 - 0.9.5 saved relative_position_index and attn_mask, under the official names
    model = create_model("swin_nano")
    buffers = {key: value for key, value in export_official(model).items() if key.endswith(REBUILT)}
    state = export_official(model, layout="timm") | buffers
    assert detect_layout(model, state).name == "timm"
    load_official(model, state)


def test_a_timm_checkpoint_that_does_not_fit_names_its_layout_and_keys():
    model = create_model("swin_nano")
    state = export_official(model, layout="timm")
    state["head.fc.extra"] = state.pop("layers.1.downsample.reduction.weight")
    with pytest.raises(
        ValueError,
        match=r"read in the timm layout \(timm >= 0\.9 swin_\*.*missing keys \['layers\.1\.downsample\.reduction"
        r"\.weight'\], unexpected keys \['head\.fc\.extra'\]",
    ):
        load_official(model, state)


# ---------------------------------------------------------------- Swin checkpoints of another window


@pytest.mark.parametrize(
    ("name", "window_size", "says"),
    [
        # the released Slide-Swin configs: WINDOW_SIZE 56, so stage 3 attends over its whole 14x14 map: 729 rows
        ("slide_swin_tiny", 56, r"729 rows .* window_size=56\); any window_size >= 14 builds the same model"),
        (
            "swin_nano",
            8,
            r"225 rows .* create_model\(\.\.\., window_size=8\)$",
        ),  # stage 1's map is 16: the window is 8 exactly
    ],
)
def test_a_checkpoint_of_another_window_names_the_override(name, window_size, says):
    with torch.device("meta"):
        checkpoint = export_official(create_model(name, window_size=window_size))
        with pytest.raises(ValueError, match=r"relative_position_bias_table of the checkpoint has " + says):
            load_official(create_model(name), checkpoint)
        load_official(create_model(name, window_size=window_size), checkpoint)  # the override named fits
