"""One registry for every model: ``create_model(name, **overrides)`` and ``list_models()``.

A model family file defines a plain dataclass config and registers one small builder per
published variant:

    @register_model
    def deit_tiny(**overrides) -> nn.Module:
        return VisionTransformer(configure(ViTConfig(embed_dim=192, depth=12, num_heads=3), overrides))

`configure` applies keyword overrides (``num_classes``, ``img_size``, ``drop_path_rate`` and any
other field of the config) and rejects a name the config does not have, listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "configure"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
Config = TypeVar("Config")


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name (a decorator); names must be unique."""
    name = builder.__name__
    if name in _MODELS:
        raise ValueError(f"model name {name!r} is registered twice")
    _MODELS[name] = builder
    return builder


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with the paper's configuration, changed by ``overrides``.

    Example: ``create_model("localvit_tiny", num_classes=10, img_size=128, drop_path_rate=0.0)``.
    """
    _load_families()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model name {name!r}{hint} (vitlocal.list_models() lists all {len(_MODELS)})")
    return _MODELS[name](**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """The registered model names matching a shell-style ``pattern`` (e.g. ``"crossvit_*"``), sorted."""
    _load_families()
    return sorted(fnmatch.filter(_MODELS, pattern))


def configure(config: Config, overrides: dict[str, Any]) -> Config:
    """Return ``config`` with ``overrides`` applied; an unknown field is an error naming the valid ones."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field(s) {unknown}; overridable fields: {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


def _load_families() -> None:
    """Import every module of ``vitlocal.models`` once, so that their ``@register_model`` decorators have run."""
    import vitlocal.models

    for module in pkgutil.iter_modules(vitlocal.models.__path__):
        importlib.import_module(f"vitlocal.models.{module.name}")
