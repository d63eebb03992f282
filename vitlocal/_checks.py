"""Argument checks that fail with a message a learner can act on.

Every public function and module of `vitlocal` validates its inputs with these helpers, so a wrong
shape or an impossible configuration raises a `ValueError` that names the argument, the value it
got and what would work, instead of an opaque error from deep inside a conv or a reshape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def check_rank(x: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    """Raise unless `x` has `ndim` dimensions; `layout` names them, e.g. ``"(B, C, H, W)"``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {layout}, got shape {tuple(x.shape)}; "
            f"add or remove axes (e.g. x.unsqueeze(0) for a missing batch axis)"
        )


def check_channels(x: torch.Tensor, dim: int, expected: int, name: str) -> None:
    """Raise unless axis `dim` of `x` has `expected` entries (the width a module was built for)."""
    if x.shape[dim] != expected:
        raise ValueError(
            f"{name} has {x.shape[dim]} channels on axis {dim} (shape {tuple(x.shape)}), but the module "
            f"was built for {expected}; build it with that width or project the input first"
        )


def check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_odd(kernel_size: int, name: str = "kernel_size") -> None:
    """Raise unless `kernel_size` is a positive odd integer (a window centred on its pixel)."""
    check_positive(kernel_size, name)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"{name} must be odd so that the window is centred on its pixel, got {kernel_size}; "
            f"use {kernel_size - 1} or {kernel_size + 1}"
        )


def check_divides(divisor: int, value: int, divisor_name: str, value_name: str) -> None:
    """Raise unless `divisor` divides `value` exactly (heads into a width, a window into a map)."""
    check_positive(divisor, divisor_name)
    if value % divisor != 0:
        works = [d for d in range(1, value + 1) if value % d == 0]
        raise ValueError(f"{divisor_name}={divisor} must divide {value_name}={value}; values that work: {works}")


def load_torch_file(path: str | os.PathLike, argument: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, failing with a message that names ``argument`` and the file.

    ``weights_only=True`` unpickles tensors and plain containers only, never code, so a checkpoint from
    elsewhere cannot run anything when it is read.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{argument} {path} does not exist (or is not a file); check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, UnpicklingError ... for a bad file
        detail = (str(err).strip().splitlines() or [""])[0][:80]
        raise ValueError(
            f"{argument} {path} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {detail}): it is "
            f"damaged (cut short?), not a checkpoint, or holds Python objects beyond tensors (never unpickled, for "
            f"safety); pass a checkpoint.pt written by vitlocal train or an official released checkpoint"
        ) from err
