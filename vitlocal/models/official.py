"""Load the authors' released checkpoints into our models.

Each family file registers a converter that renames the official state-dict keys (and reorders
tensors where a layout differs) onto ours. ``load_official`` is strict: any key left missing or
unexpected after conversion is an error that lists them. Nothing is downloaded here; pass a path
to a checkpoint you have, or a state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from os import PathLike

import torch
from torch import nn

from vitlocal.models.registry import _load_families

__all__ = ["register_converter", "load_official", "convert_official"]

StateDict = dict[str, torch.Tensor]
_CONVERTERS: dict[type[nn.Module], Callable[[StateDict, nn.Module], StateDict]] = {}


def register_converter(*model_types: type[nn.Module]):
    """Register ``convert(official_state_dict, model) -> our_state_dict`` for these model classes."""

    def decorator(convert: Callable[[StateDict, nn.Module], StateDict]) -> Callable[[StateDict, nn.Module], StateDict]:
        for model_type in model_types:
            _CONVERTERS[model_type] = convert
        return convert

    return decorator


def _read(path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    if isinstance(path_or_state_dict, Mapping):
        state = dict(path_or_state_dict)
    else:
        state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    # Official checkpoints wrap the weights: DeiT/CrossViT/LocalViT/Swin under "model", some under "state_dict".
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            return dict(state[wrapper])
    return state


def convert_official(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    """The official checkpoint converted to ``model``'s key names (no loading, no checks)."""
    _load_families()  # registers every family's converter

    convert = _CONVERTERS.get(type(model))
    if convert is None:
        known = sorted(t.__name__ for t in _CONVERTERS)
        raise ValueError(
            f"no official checkpoint format is known for {type(model).__name__}; families with released "
            f"weights: {known} (CloFormer's authors released none)"
        )
    return convert(_read(path_or_state_dict), model)


def load_official(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load an official checkpoint (a path or a state dict) into ``model``, strictly; returns ``model``."""
    state = convert_official(model, path_or_state_dict)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: missing keys {missing[:20]}"
            f"{' ...' if len(missing) > 20 else ''}, unexpected keys {unexpected[:20]}"
            f"{' ...' if len(unexpected) > 20 else ''}; is it the checkpoint of this variant?"
        )
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs ours {tuple(ours[k].shape)}" for k in ours if state[k].shape != ours[k].shape
    ]
    if wrong:
        raise ValueError(f"checkpoint shapes differ from {type(model).__name__}: {wrong[:20]}")
    model.load_state_dict(state, strict=True)
    return model
