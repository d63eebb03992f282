"""The shipped trained weights: each file is the one the manifest describes, loads strictly into its model, and a
missing or damaged file is a clear error."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import vitlocal
from vitlocal import create_model, pretrained
from vitlocal.pretrained import MAX_FILE_BYTES, WEIGHTS, list_trained, load_trained

MANIFEST = json.loads((WEIGHTS / "manifest.json").read_text())


def test_four_presets_ship_within_the_size_limits():
    assert list_trained() == ["cloformer_nano", "crossvit_nano", "deit_nano", "localvit_nano"]
    sizes = {name: (WEIGHTS / entry["file"]).stat().st_size for name, entry in MANIFEST.items()}
    assert all(size <= MAX_FILE_BYTES for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 10_000_000, sizes
    assert {name: entry["bytes"] for name, entry in MANIFEST.items()} == sizes


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_file_matches_its_manifest_entry(name):
    entry = MANIFEST[name]
    assert hashlib.sha256((WEIGHTS / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert len(entry["classes"]) == 10 and entry["img_size"] == 32 and entry["model"] == name
    assert abs(entry["shipped_val_acc1"] - entry["run_val_acc1"]) <= 0.2, "the shipped file is the trained model"
    tensors = load_file(WEIGHTS / entry["file"])
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {getattr(torch, entry["dtype"])}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_loaded_model_computes_with_the_file_tensors(name):
    entry = MANIFEST[name]
    model = load_trained(name)
    assert not model.training
    by_hand = create_model(name, num_classes=10, img_size=32, **entry["model_args"]).eval()
    by_hand.load_state_dict({k: v.float() for k, v in load_file(WEIGHTS / entry["file"]).items()}, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 10)
        torch.testing.assert_close(logits, by_hand(x), rtol=0, atol=0)


def test_public_api_names_the_loader():
    assert vitlocal.load_trained is load_trained and "load_trained" in vitlocal.__all__


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """A copy of the weights folder that the loader reads instead of the installed one."""
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS, copy)
    monkeypatch.setattr(pretrained, "WEIGHTS", copy)
    return copy


def test_damaged_file_is_a_clear_error(weights_copy):
    path = weights_copy / MANIFEST["deit_nano"]["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"deit_nano\.safetensors is damaged: its sha256 is .*reinstall vitlocal"):
        load_trained("deit_nano")


def test_missing_file_is_a_clear_error(weights_copy):
    (weights_copy / MANIFEST["localvit_nano"]["file"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"localvit_nano\.safetensors is missing.*reinstall vitlocal"):
        load_trained("localvit_nano")


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"name='deit_tiny' has no shipped weights; choose one of"):
        load_trained("deit_tiny")


def test_initial_is_the_seeded_start_and_leaves_the_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, again = load_trained("deit_nano", initial=True), load_trained("deit_nano", initial=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    trained = load_trained("deit_nano").state_dict()
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.state_dict()["head.weight"], trained["head.weight"])
