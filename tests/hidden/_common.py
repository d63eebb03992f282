"""What every hidden check shares: hypothesis settings, reproducible tensors, learner-facing comparisons."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

# A fixed, small, derandomised set of examples: a graded cell must finish in well under nbgrader's 30 s.
# No shrinking: the first failing example is reported, and a wrong answer fails fast.
HIDDEN = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
SEEDS = st.integers(0, 2**16 - 1)
SIDES = st.integers(1, 5)


def for_all(prop: Callable[..., None], **strategies: st.SearchStrategy) -> None:
    """Check ``prop`` on hypothesis-drawn keyword arguments now (a check, not a test to collect)."""
    HIDDEN(given(**strategies)(prop))()


def randn(*shape: int, seed: int) -> torch.Tensor:
    """A reproducible float64 normal tensor from a drawn seed."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def expect_close(got: object, want: torch.Tensor, what: str, hint: str = "") -> None:
    """Raise unless ``got`` is a tensor with ``want``'s shape and values (tight in float64); ``what`` names it."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what} must return a torch.Tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    got = got.to(want.dtype)
    rtol, atol = (1e-6, 1e-9) if want.dtype == torch.float64 else (1e-4, 1e-5)
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        worst = (got - want).abs().max().item()
        raise AssertionError(f"{what} differs from the reference (largest difference {worst:.3g}){hint}")


def load_reference_weights(learner: nn.Module, reference: nn.Module, what: str) -> None:
    """Copy the reference's weights into the learner's module; the names and shapes must match exactly."""
    if not isinstance(learner, nn.Module):
        raise AssertionError(f"{what} must be an nn.Module, got {type(learner).__name__}")
    ours, theirs = learner.state_dict(), reference.state_dict()
    missing, unexpected = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    if missing or unexpected:
        raise AssertionError(
            f"{what} does not hold the official parameters: missing {missing or 'none'}, unexpected "
            f"{unexpected or 'none'}; name the layers as the docstring says"
        )
    for name, value in theirs.items():
        if ours[name].shape != value.shape:
            raise AssertionError(f"{what}: {name} has shape {tuple(ours[name].shape)}, expected {tuple(value.shape)}")
    learner.load_state_dict(theirs)


def double(module: nn.Module, seed: int) -> nn.Module:
    """``module`` in float64 with its floating-point parameters and buffers redrawn from ``seed`` (BN stats too)."""
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=g, dtype=tensor.dtype) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=g, dtype=tensor.dtype) * 0.5)
    return module
