"""Helpers for the tests: reproducible tensors from a drawn seed."""

from __future__ import annotations

import torch


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A reproducible normal tensor from a seeded generator (hypothesis draws the seed, not floats)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)
