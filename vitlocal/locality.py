"""LocalViT's locality feed-forward: a depthwise conv between the FFN's two token-wise layers.

Paper: Y. Li, K. Zhang, J. Cao, R. Timofte, L. Van Gool, "LocalViT: Bringing Locality to Vision
Transformers" (arXiv 2104.05707; v2 "LocalViT: Analyzing Locality in Vision Transformers").
Official code: https://github.com/ofsoundof/LocalViT, ``models/localvit.py`` (``LocalityFeedForward``,
``SELayer``, ``ECALayer``, ``h_swish``, ``Block``).

The idea. A ViT's MLP treats every token on its own. Put the ``N = h * w`` patch tokens back on
their lattice (`vitlocal.lattice.seq2img`, ``b (h w) c -> b c h w``): the MLP's Linear layers become
1x1 convs, and a depthwise ``k x k`` conv between them lets every token mix with its lattice
neighbours. The FFN becomes MobileNetV2's inverted residual on a ``(B, C, h, w)`` map ``M``:

    A   = σ(BN(W_1 ⊛ M))                 W_1: 1x1 conv C -> γC, no bias (a token-wise Linear)
    A   = σ(BN(D_k ⊛ A))                 D_k: k x k depthwise conv on γC channels (the locality)
    A   = G(A)                           optional channel gate: SE or ECA
    LFF(M) = M + BN(W_2 ⊛ A)             W_2: 1x1 conv γC -> C, no bias

with ``σ = h_swish(x) = x * ReLU6(x + 3) / 6`` (or ReLU6), and the gates

    SE:  G(A) = A ⊙ h_sigmoid(W_b ReLU(W_a avgpool(A) + b_a) + b_b),   W_a: γC -> γC / r
    ECA: G(A) = A ⊙ gate(conv1d_t(avgpool(A))),   t = int(|log2(γC) + 1| / 2), made odd.

Without a gate, output pixel ``(i, j)`` depends only on input pixels with ``|i' - i| <= k // 2`` and
``|j' - j| <= k // 2``: that is the locality. SE and ECA pool over the whole map, so with a gate every
output pixel also depends (through one scalar per channel) on every input pixel.

In a LocalViT block (DeiT back-end) the FFN runs on the patch tokens only:

    X = X + DropPath(MHSA(LN(X)))                         all 1 + N tokens
    [x_cls | T] = X                                       split_cls
    X = [x_cls | img2seq(LFF(seq2img(T, h, w)))]          the class token skips the FFN

Quirks of the official code, matched here: the FFN's residual lives inside the module; there is no
``norm2`` before it and no DropPath on it; the class token never sees an FFN; SE's ``r`` divides the
hidden width ``γC`` (LocalViT-T's ``r192`` on 768 channels leaves 4 units) and SE gates with h_sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlocal._checks import check_channels, check_odd, check_positive, check_rank
from vitlocal.attention import Attention
from vitlocal.lattice import img2seq, join_cls, seq2img, split_cls, square_grid
from vitlocal.layers import ECA, DropPath, HSwish, SqueezeExcite

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "OFFICIAL_ACTS",
    "LocalityFeedForward",
    "official_act",
    "locality_on_tokens",
    "LocalViTBlock",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"hswish": HSwish, "relu6": nn.ReLU6}
GATES: tuple[str | None, ...] = (None, "se", "eca", "eca_hard")
# The official ``act`` strings -> (activation, gate); the integers 1..4 name the first four.
OFFICIAL_ACTS: dict[str, tuple[str, str | None]] = {
    "relu6": ("relu6", None),
    "hs": ("hswish", None),
    "hs+se": ("hswish", "se"),
    "hs+eca": ("hswish", "eca"),
    "hs+ecah": ("hswish", "eca_hard"),
}


class LocalityFeedForward(nn.Module):
    """LocalViT's feed-forward on a map: ``(B, C, H, W) -> (B, C, H, W)``, residual included.

    Layer order (official ``LocalityFeedForward.conv``, so official state-dict keys line up):
    ``Conv1x1(C -> γC) -> BN -> σ -> DWConv k x k -> BN -> σ -> [gate] -> Conv1x1(γC -> C) -> BN``,
    output ``x + that``.

    Args:
        dim: input channels ``C``.
        out_dim: output channels; must equal ``dim`` because of the inner residual (official docstring:
            "The input and output dimension should be the same"). ``None`` means ``dim``.
        stride: stride of the depthwise conv; must be 1, since the inner residual needs the input's map size.
        expand_ratio: ``γ``; the hidden width is ``int(dim * expand_ratio)``.
        activation: ``"hswish"`` (default) or ``"relu6"``; replaces **both** activations.
        gate: ``None``, ``"se"`` (squeeze-excite, h_sigmoid), ``"eca"`` (ECA, sigmoid) or ``"eca_hard"``
            (ECA, h_sigmoid). Official default ``"se"``.
        reduction: SE reduction ``r``; quirk: it divides the **hidden** width ``γC``, not ``C``.
        depthwise: ``False`` drops the depthwise conv with its BN and activation (official
            ``wo_dp_conv=True``, the no-locality control: then it is a token-wise MLP with BNs).
        depthwise_first: move DWConv + BN + σ in front of the first 1x1 (official ``dp_first``).
        kernel_size: odd ``k`` of the depthwise conv (official: 3), zero padding ``k // 2``.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        stride: int = 1,
        expand_ratio: float = 4.0,
        activation: str = "hswish",
        gate: str | None = "se",
        reduction: int = 4,
        depthwise: bool = True,
        depthwise_first: bool = False,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_odd(kernel_size, "kernel_size")
        check_positive(stride, "stride")
        out_dim = dim if out_dim is None else out_dim
        if out_dim != dim:
            raise ValueError(
                f"out_dim={out_dim} must equal dim={dim}: the residual inside LocalityFeedForward adds the input "
                f"to the output (the official code fails the same way); use out_dim=None"
            )
        if stride != 1:
            raise ValueError(
                f"stride={stride} must be 1: the residual inside LocalityFeedForward adds the input to the output, "
                f"so the depthwise conv may not shrink the map (the official code fails the same way)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; valid names: {list(ACTIVATIONS)}")
        if gate not in GATES:
            raise ValueError(f"gate={gate!r} is unknown; valid names: {list(GATES)}")
        hidden = int(dim * expand_ratio)
        if hidden < 1:
            raise ValueError(f"expand_ratio={expand_ratio} leaves int(dim * expand_ratio)={hidden} hidden channels")
        if gate == "se":
            check_positive(reduction, "reduction")
            if reduction > hidden:
                raise ValueError(
                    f"reduction={reduction} divides the hidden width int(dim * expand_ratio)={hidden} (quirk: not "
                    f"dim) and leaves no SE unit; use reduction <= {hidden}"
                )
        if depthwise_first and not depthwise:
            raise ValueError("depthwise_first=True needs depthwise=True (there is no depthwise conv to move)")
        if depthwise_first and hidden != dim:
            raise ValueError(
                f"depthwise_first=True puts the official hidden-width ({hidden}) depthwise conv in front of the "
                f"first 1x1, where the map has only dim={dim} channels (the official dp_first fails the same way); "
                f"use expand_ratio=1"
            )
        self.dim, self.hidden_dim, self.kernel_size = dim, hidden, kernel_size
        act = ACTIVATIONS[activation]

        # A = σ(BN(W_1 ⊛ M)): the first token-wise Linear as a 1x1 conv
        expand = [nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        # A = σ(BN(D_k ⊛ A)): the k x k depthwise conv, the only layer that mixes neighbouring tokens
        local = [
            nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
        ]
        layers = (local + expand if depthwise_first else expand + local) if depthwise else expand
        if gate == "se":
            layers.append(SqueezeExcite(hidden, reduction))  # quirk: r divides γC; h_sigmoid gate
        elif gate is not None:
            layers.append(ECA(hidden, hard_gate=gate == "eca_hard"))
        # BN(W_2 ⊛ A): the second token-wise Linear as a 1x1 conv
        layers += [nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim)]
        self.conv = nn.Sequential(*layers)

    @classmethod
    def from_official_act(cls, act: str | int, dim: int, **kwargs: object) -> LocalityFeedForward:
        """Build from the official ``act`` switch: a string of `OFFICIAL_ACTS` or an integer.

        Integers as in the official ``LocalVisionTransformer``: 1 = ``"relu6"``, 2 = ``"hs"``,
        3 = ``"hs+se"``, 4 = ``"hs+eca"``, any other integer = ``"hs+ecah"`` (quirk: a catch-all).
        ``kwargs`` are the other `LocalityFeedForward` arguments (``expand_ratio``, ``reduction``, ...).
        """
        activation, gate = official_act(act)
        return cls(dim, activation=activation, gate=gate, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        check_rank(x, 4, "x", "(B, C, H, W)")
        check_channels(x, 1, self.dim, "x")
        return x + self.conv(x)  # quirk: the residual lives inside the module


def official_act(act: str | int) -> tuple[str, str | None]:
    """The official ``act`` switch (string or integer) as ``(activation, gate)``."""
    if isinstance(act, int) and not isinstance(act, bool):
        act = {1: "relu6", 2: "hs", 3: "hs+se", 4: "hs+eca"}.get(act, "hs+ecah")  # quirk: other ints -> hs+ecah
    if act not in OFFICIAL_ACTS:
        raise ValueError(f"act={act!r} is unknown; valid: {list(OFFICIAL_ACTS)} or an integer (1..4, other = hs+ecah)")
    return OFFICIAL_ACTS[act]


def locality_on_tokens(
    tokens: torch.Tensor, ffn: nn.Module, h: int | None = None, w: int | None = None, num_prefix: int = 1
) -> torch.Tensor:
    """Apply a map-to-map FFN to the patch tokens of a sequence; the prefix tokens pass unchanged.

    Args:
        tokens: ``(B, num_prefix + h * w, C)``: ``[cls | (dist) | patches]``.
        ffn: a module ``(B, C, h, w) -> (B, C, h, w)``, e.g. `LocalityFeedForward`.
        h, w: the patch grid; both ``None`` means a square grid (official: ``int(sqrt(N))``).
        num_prefix: 1 for a class token, 2 for class + distillation tokens, 0 for none (Swin).
    Returns:
        ``(B, num_prefix + h * w, C)``.
    """
    prefix, patches = split_cls(tokens, num_prefix)  # [x_cls | T] = X
    if (h is None) != (w is None):
        raise ValueError(f"pass both h and w, or neither for a square grid; got h={h}, w={w}")
    if h is None:
        h = w = square_grid(patches.shape[1])
    m = seq2img(patches, h, w)  # M[b, c, i // w, i % w] = T[b, i, c]: b (h w) c -> b c h w
    patches = img2seq(ffn(m))  # b c h w -> b (h w) c
    return join_cls(prefix, patches)  # quirk: the class token never sees an FFN


class LocalViTBlock(nn.Module):
    """A LocalViT transformer block (official ``Block``): ``(B, num_prefix + h * w, C)`` -> same shape.

    ``X = X + DropPath(MHSA(LN(X)))``, then `LocalityFeedForward` on the patch tokens only.
    Quirks: no ``norm2``; no DropPath on the FFN branch (its residual is inside the FFN).

    Args:
        dim, num_heads, qkv_bias: the attention (every LocalViT model: ``qkv_bias=True``).
        mlp_ratio: the FFN's expand ratio ``γ``.
        drop, attn_drop: dropout on the attention output / weights; drop_path: stochastic depth rate.
        activation, gate, reduction, depthwise, depthwise_first, kernel_size: see `LocalityFeedForward`.
        num_prefix: leading tokens that skip the FFN (1 class token; 2 with DeiT's distillation token).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        activation: str = "hswish",
        gate: str | None = "se",
        reduction: int = 4,
        depthwise: bool = True,
        depthwise_first: bool = False,
        kernel_size: int = 3,
        num_prefix: int = 1,
    ) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        # quirk: no norm2; the BNs inside the FFN take its place
        self.conv = LocalityFeedForward(
            dim,
            expand_ratio=mlp_ratio,
            activation=activation,
            gate=gate,
            reduction=reduction,
            depthwise=depthwise,
            depthwise_first=depthwise_first,
            kernel_size=kernel_size,
        )

    def forward(self, x: torch.Tensor, h: int | None = None, w: int | None = None) -> torch.Tensor:
        """``x``: ``(B, num_prefix + h * w, C)``; ``h, w`` default to a square grid."""
        check_rank(x, 3, "x", "(B, N, C)")
        x = x + self.drop_path(self.attn(self.norm1(x)))  # X = X + DropPath(MHSA(LN(X)))
        # quirk: no DropPath on the FFN branch, whose residual lives inside LocalityFeedForward
        return locality_on_tokens(x, self.conv, h, w, self.num_prefix)
