"""Load the authors' released checkpoints into our models, and write our weights back in their format.

Each family file registers a converter that renames the official state-dict keys (and reorders
tensors where a layout differs) onto ours, together with its inverse. ``load_official`` is strict: any
key left missing or unexpected after conversion is an error that lists them. ``export_official`` is the
way back: the model's weights under the official names, with the buffers the official modules save.
Nothing is downloaded here; pass a path to a checkpoint you have, or a state dict.

Most renames are written once, as `Rule` pairs of key templates that `rename_keys` applies in either
direction.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from os import PathLike

import torch
from torch import nn

from vitlocal._checks import load_torch_file
from vitlocal.models.registry import _load_families

__all__ = ["Rule", "rename_keys", "register_converter", "load_official", "convert_official", "export_official"]

StateDict = dict[str, torch.Tensor]
Converter = Callable[[StateDict, nn.Module], StateDict]
Rule = tuple[str, str]
"""An ``(official, ours)`` pair of key templates; ``*`` stands for an index (a run of digits), and the n-th ``*``
of one side is the n-th ``*`` of the other: ``("blocks.*.projs.*.0", "blocks.*.fusion.f.*.norm")``."""

_FORMATS: dict[type[nn.Module], tuple[Converter, Converter | None]] = {}


@functools.cache
def _template_regex(template: str) -> re.Pattern[str]:
    """``template`` as a regex matching a key's first whole dot-separated components, one group per ``*``."""
    return re.compile(r"(\d+)".join(map(re.escape, template.split("*"))) + r"(?=\.|$)")


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[Rule], *, inverse: bool = False) -> StateDict:
    """``state`` with its keys renamed official -> ours by ``rules`` (ours -> official with ``inverse=True``).

    The first rule whose template matches the start of a key, up to a ``.`` or the key's end, replaces that
    start by the other template with the same indices; a key no rule matches keeps its name. Values are kept.
    """
    renamed = {}
    for key, value in state.items():
        for official, ours in rules:
            source, target = (ours, official) if inverse else (official, ours)
            match = _template_regex(source).match(key)
            if match:
                first, *rest = target.split("*")
                start = first + "".join(i + piece for i, piece in zip(match.groups(), rest, strict=True))
                key = start + key[match.end() :]
                break
        renamed[key] = value
    return renamed


def register_converter(*model_types: type[nn.Module], inverse: Converter | None = None):
    """Register ``convert(official_state_dict, model) -> our_state_dict`` for these model classes, and
    ``inverse(our_state_dict, model) -> official_state_dict``, its way back (used by `export_official`)."""

    def decorator(convert: Converter) -> Converter:
        for model_type in model_types:
            _FORMATS[model_type] = (convert, inverse)
        return convert

    return decorator


def _format(model: nn.Module) -> tuple[Converter, Converter | None]:
    """The registered ``(convert, inverse)`` pair of ``model``'s class."""
    _load_families()  # registers every family's converter
    if type(model) not in _FORMATS:
        known = sorted(t.__name__ for t in _FORMATS)
        raise ValueError(
            f"no official checkpoint format is known for {type(model).__name__}; families with released "
            f"weights: {known} (CloFormer's authors released none)"
        )
    return _FORMATS[type(model)]


def _read(path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    if isinstance(path_or_state_dict, Mapping):
        state = dict(path_or_state_dict)
    else:
        state = load_torch_file(path_or_state_dict, "checkpoint")
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint holds a {type(state).__name__}, not a state dict; pass an official checkpoint")
    # Official checkpoints wrap the weights: DeiT/CrossViT/LocalViT/Swin under "model", some under "state_dict".
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            return dict(state[wrapper])
    return state


def convert_official(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    """The official checkpoint converted to ``model``'s key names (no loading, no checks)."""
    convert, _ = _format(model)
    return convert(_read(path_or_state_dict), model)


def export_official(model: nn.Module) -> StateDict:
    """``model``'s weights under the official key names and layouts: a state dict `load_official` reads back.

    Buffers that the official modules save and ours rebuild from the configuration (Swin's
    ``relative_position_index`` and ``attn_mask``) are included, taken from the model. The tensors are the
    model's own (as in ``state_dict()``); a position embedding keeps the model's grid.
    """
    _, inverse = _format(model)
    if inverse is None:
        raise ValueError(f"the converter of {type(model).__name__} registers no inverse; export is not supported")
    return inverse(model.state_dict(), model)


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
