"""What every hidden check shares: hypothesis settings, reproducible tensors, learner-facing comparisons."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from torch import nn

from vitlocal.check import describe, explain_error, mismatch, reference_parts

__all__ = ["reference_parts"]  # the checks of answers that build on earlier ones import it from here

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
# What a correct answer must handle and a plausible wrong one gets wrong by accident: the input's dtype kept
# (no float32 hard-coded), any memory layout (no .view on a transposed input), batch 1, non-square maps.
DTYPES = st.sampled_from([torch.float64, torch.float32])
LAYOUTS = st.sampled_from(["contiguous", "column-major"])


def for_all(prop: Callable[..., None], examples: tuple[dict, ...] = (), **strategies: st.SearchStrategy) -> None:
    """Check ``prop`` now on every explicit example (run first), then on hypothesis-drawn keyword arguments."""
    test = given(**strategies)(prop)
    for values in reversed(examples):
        test = example(**values)(test)
    HIDDEN(test)()


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64, layout: str = "contiguous") -> torch.Tensor:
    """A reproducible normal tensor from a drawn seed (float64 unless told); ``layout="column-major"`` gives the same
    values laid out in memory with the first axis fastest (non-contiguous, see `strided`)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    return strided(x, layout)


def strided(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` itself or, for ``"column-major"``, the same values with every axis's stride reversed (as a transposed
    view has): no two neighbouring axes of size > 1 can then be merged by ``.view``, only by ``reshape``/einops."""
    if layout == "contiguous" or x.dim() < 2:
        return x
    axes = tuple(reversed(range(x.dim())))
    return x.permute(axes).contiguous().permute(axes)


def call(function: Callable, name: str, *args: object, **kwargs: object) -> object:
    """``function(*args, **kwargs)``; an error inside it becomes an AssertionError naming ``name`` and the inputs.

    A stub's ``NotImplementedError`` passes through unchanged (an untouched exercise fails as such).
    """
    try:
        return function(*args, **kwargs)
    except (AssertionError, NotImplementedError):
        raise
    except Exception as error:
        inputs = ", ".join([describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()])
        raise AssertionError(f"{name}({inputs}) raised {explain_error(error)}") from None


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return {torch.float64: (1e-6, 1e-9), torch.bfloat16: (2e-2, 2e-2)}.get(dtype, (1e-4, 1e-5))


def expect_close(got: object, want: torch.Tensor, what: str, hint: str = "") -> None:
    """Raise unless ``got`` is a tensor with ``want``'s shape, dtype and values (tight in float64).

    ``what`` names the function and its input; a failure says where the first mismatch is (got and expected
    there) and the largest difference.
    """
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what} must return a torch.Tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}{hint}")
    if got.dtype != want.dtype:
        raise AssertionError(
            f"{what} returns {str(got.dtype).removeprefix('torch.')}, expected "
            f"{str(want.dtype).removeprefix('torch.')}: keep the input's dtype (no float32 hard-coded, no .float())"
        )
    rtol, atol = _tolerance(want.dtype)
    got = got.detach()
    close = torch.isclose(got, want, rtol=rtol, atol=atol)
    if not close.all():
        raise AssertionError(f"{what} differs from the reference: {mismatch(got, want, close)}{hint}")


def load_reference_weights(learner: nn.Module, reference: nn.Module, what: str) -> None:
    """Copy the reference's weights into the learner's module; the names and shapes must match exactly."""
    if not isinstance(learner, nn.Module):
        raise AssertionError(f"{what} must be an nn.Module, got {type(learner).__name__}")
    ours, theirs = learner.state_dict(), reference.state_dict()
    missing, unexpected = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    if (missing or unexpected) and all(name.endswith(".bias") for name in missing + unexpected):
        raise AssertionError(
            f"{what} has biases the reference does not ({unexpected or 'none'}) or lacks some it has "
            f"({missing or 'none'}): follow the bias options (bias=False, qkv_bias=False)"
        )
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
