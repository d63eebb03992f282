"""Load released checkpoints into our models (the authors' layout or timm's), and write ours back in either.

Each family file registers, per checkpoint layout it reads, a converter that renames that layout's state-dict keys
(and reorders tensors where a layout differs) onto ours, together with its inverse. Every family has the authors'
layout, ``"official"``; DeiT, CrossViT and Swin also have ``"timm"`` (timm's ``vit_*`` / ``deit_*``,
``crossvit_*`` and ``swin_*`` models, as the hub's timm checkpoints hold them). ``load_official`` recognises the
layout from the keys (`detect_layout`) and is strict: any key left missing or unexpected after conversion is an
error that names the layout and lists them. ``export_official`` is the way back: the model's weights under a
layout's names, with the buffers that layout saves. Nothing is downloaded here; pass a path to a checkpoint you
have, or a state dict.

Most renames are written once, as `Rule` pairs of key templates that `rename_keys` applies in either
direction.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike

import torch
from torch import nn

from vitlocal._checks import load_torch_file
from vitlocal.models.registry import _load_families

__all__ = [
    "Rule",
    "Layout",
    "rename_keys",
    "register_converter",
    "detect_layout",
    "load_official",
    "convert_official",
    "export_official",
]

StateDict = dict[str, torch.Tensor]
Converter = Callable[[StateDict, nn.Module], StateDict]
Rule = tuple[str, str]
"""An ``(official, ours)`` pair of key templates; ``*`` stands for an index (a run of digits), and the n-th ``*``
of one side is the n-th ``*`` of the other: ``("blocks.*.projs.*.0", "blocks.*.fusion.f.*.norm")``."""


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout of a family: its converter to our keys, the inverse, and how to recognise it.

    ``detect(keys)`` says whether a state dict's keys are in this layout. The ``"official"`` layout has none: it
    is what a state dict is read as when no other layout of the family recognises it; another layout without one
    has the official keys (timm's DeiT).
    """

    name: str  # "official" or "timm"
    source: str  # where checkpoints in this layout come from, named in messages
    convert: Converter
    inverse: Converter | None
    detect: Callable[[Collection[str]], bool] | None


_FORMATS: dict[type[nn.Module], dict[str, Layout]] = {}


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


def register_converter(
    *model_types: type[nn.Module],
    inverse: Converter | None = None,
    layout: str = "official",
    source: str = "the authors' released code",
    detect: Callable[[Collection[str]], bool] | None = None,
):
    """Register ``convert(state_dict, model) -> our_state_dict`` for these model classes as the reader of checkpoint
    layout ``layout``, and ``inverse(our_state_dict, model) -> state_dict``, its way back (used by `export_official`).

    ``detect(keys)`` recognises the layout from a state dict's keys (see `Layout`). Stacking the decorator registers
    one converter for several layouts that share their keys (then only the official one is ever recognised).
    """

    def decorator(convert: Converter) -> Converter:
        for model_type in model_types:
            _FORMATS.setdefault(model_type, {})[layout] = Layout(layout, source, convert, inverse, detect)
        return convert

    return decorator


def _layouts(model: nn.Module) -> dict[str, Layout]:
    """The registered layouts of ``model``'s class, by name."""
    _load_families()  # registers every family's converters
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
    # Official checkpoints wrap the weights: DeiT/CrossViT/LocalViT/Swin under "model", some under "state_dict"
    # (timm's train.py too, beside "state_dict_ema").
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            return dict(state[wrapper])
    return state


def _recognise(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Layout:
    layouts = _layouts(model)
    detected = [layout for layout in layouts.values() if layout.detect is not None and layout.detect(state.keys())]
    return detected[0] if detected else layouts["official"]


def detect_layout(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> Layout:
    """The layout `load_official` reads this checkpoint as: the first of ``model``'s family that recognises its
    keys, else the authors' (``"official"``). ``.name`` is ``"official"`` or ``"timm"``; ``.source`` says more."""
    return _recognise(model, _read(path_or_state_dict))


def convert_official(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    """The checkpoint converted to ``model``'s key names, from the layout `detect_layout` recognises (no loading;
    no checks beyond those a converter makes to name a fix, such as Swin's window size)."""
    state = _read(path_or_state_dict)
    return _recognise(model, state).convert(state, model)


def export_official(model: nn.Module, layout: str = "official") -> StateDict:
    """``model``'s weights under ``layout``'s key names and layouts: a state dict `load_official` reads back.

    ``layout`` is ``"official"`` (the authors' code) or, for DeiT, CrossViT and Swin, ``"timm"``. Buffers that
    the layout's modules save and ours rebuild from the configuration (the official Swin's
    ``relative_position_index`` and ``attn_mask``) are included, taken from the model. The tensors are the
    model's own (as in ``state_dict()``); a position embedding keeps the model's grid.
    """
    layouts = _layouts(model)
    if layout not in layouts:
        raise ValueError(f"{type(model).__name__} has no {layout!r} checkpoint layout; it has {sorted(layouts)}")
    inverse = layouts[layout].inverse
    if inverse is None:
        raise ValueError(f"the converter of {type(model).__name__} registers no inverse; export is not supported")
    return inverse(model.state_dict(), model)


def _listed(keys: list[str]) -> str:
    return f"{keys[:20]}{' ...' if len(keys) > 20 else ''}"


def _named_as_read(layout: Layout, state: StateDict, converted: StateDict, model: nn.Module) -> tuple[str, str]:
    """The missing and unexpected keys, listed under ``layout``'s names (the names in the user's file).

    A key counts when its own conversion lands on a missing / unexpected key of ours; so a buffer the converter
    drops (the official Swin's ``attn_mask``: rebuilt from the configuration) is neither missing nor unexpected.
    """
    ours = model.state_dict()
    missing, unexpected = set(ours) - set(converted), set(converted) - set(ours)
    expected = layout.inverse(ours, model) if layout.inverse else ours

    def lands_in(key: str, value: torch.Tensor, keys: set[str]) -> bool:
        return bool(layout.convert({key: value}, model).keys() & keys)

    named_missing = [k for k, v in expected.items() if k not in state and lands_in(k, v, missing)]
    named_unexpected = [k for k, v in state.items() if lands_in(k, v, unexpected)]
    return _listed(sorted(named_missing)), _listed(sorted(named_unexpected))


def load_official(model: nn.Module, path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a released checkpoint (a path or a state dict) into ``model``, strictly; returns ``model``.

    The layout, the authors' or timm's, is recognised from the keys (`detect_layout`); the errors name it, and
    list the missing and unexpected keys under its names.
    """
    state = _read(path_or_state_dict)
    layout = _recognise(model, state)
    converted = layout.convert(state, model)
    ours = model.state_dict()
    read_as = f"read in the {layout.name} layout ({layout.source})"
    if converted.keys() != ours.keys():
        missing, unexpected = _named_as_read(layout, state, converted, model)
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}, {read_as}: missing keys {missing}, unexpected keys "
            f"{unexpected}; is it the checkpoint of this variant?"
        )
    wrong = [
        f"{k}: {tuple(converted[k].shape)} vs ours {tuple(ours[k].shape)}"
        for k in ours
        if converted[k].shape != ours[k].shape
    ]
    if wrong:
        raise ValueError(f"checkpoint shapes differ from {type(model).__name__}, {read_as}, in our names: {wrong[:20]}")
    model.load_state_dict(converted, strict=True)
    return model
