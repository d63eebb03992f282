"""Small layers shared by the mechanisms and the models.

Activations and gates as the official repositories define them (LocalViT's h-sigmoid / h-swish,
CvT's QuickGELU), stochastic depth, the token-wise MLP, and the two channel gates LocalViT studies
(squeeze-and-excitation and ECA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal._checks import check_positive, check_rank

__all__ = ["DropPath", "HSigmoid", "HSwish", "QuickGELU", "Mlp", "SqueezeExcite", "ECA", "eca_kernel_size"]


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples, rescale the rest.

    ``out = x * keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)`` drawn once per sample; the identity
    in eval mode or when ``p == 0``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1), got {drop_prob!r}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class HSigmoid(nn.Module):
    """``h_sigmoid(x) = ReLU6(x + 3) / 6``, the piecewise-linear sigmoid of MobileNetV3 and LocalViT."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class HSwish(nn.Module):
    """``h_swish(x) = x * h_sigmoid(x)`` (LocalViT's default activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: CvT's MLP activation (quirk: not the erf GELU of ``nn.GELU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    """Token-wise feed-forward ``Linear(C, hidden) -> act -> drop -> Linear(hidden, C_out) -> drop``.

    Shapes: ``(..., C) -> (..., C_out)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SqueezeExcite(nn.Module):
    """LocalViT's squeeze-and-excitation gate on a ``(B, C, H, W)`` map.

    ``s = h_sigmoid(W2 ReLU(W1 avgpool(x) + b1) + b2)``, ``out = x * s`` per channel, with
    ``W1: C -> C // reduction``. Quirks of the official ``SELayer``: the gate is **h_sigmoid**, not
    sigmoid, and ``reduction`` divides the width the gate sits on (LocalViT-T's ``r192`` on its
    768-wide hidden layer leaves 4 units).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        check_positive(channels, "channels")
        check_positive(reduction, "reduction")
        if channels // reduction < 1:
            raise ValueError(
                f"reduction={reduction} leaves no hidden unit for channels={channels}; use reduction <= {channels}"
            )
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)
        self.gate = HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rank(x, 4, "x", "(B, C, H, W)")
        s = x.mean(dim=(2, 3))  # squeeze: (B, C)
        s = self.gate(self.fc2(F.relu(self.fc1(s))))  # excite: (B, C)
        return x * rearrange(s, "b c -> b c 1 1")


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: ``t = int(|log2(C) + b| / gamma)``, made odd by adding 1 if even."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention: a bias-free 1-D conv across the pooled channels, then a gate.

    ``s = gate(conv1d_k(avgpool(x)))``, ``out = x * s``; ``k = eca_kernel_size(C)``. LocalViT's
    ``act=4`` uses a sigmoid gate, any larger ``act`` an h-sigmoid gate (``hard_gate=True``).
    """

    def __init__(self, channels: int, hard_gate: bool = False) -> None:
        super().__init__()
        check_positive(channels, "channels")
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        self.gate = HSigmoid() if hard_gate else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rank(x, 4, "x", "(B, C, H, W)")
        s = rearrange(x.mean(dim=(2, 3)), "b c -> b 1 c")  # channels become the 1-D signal
        s = self.gate(self.conv(s))
        return x * rearrange(s, "b 1 c -> b c 1 1")
