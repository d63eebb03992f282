"""The lattice view (LocalViT): tokens are the pixels of a 2-D map.

A ViT cuts an ``H x W`` image into an ``h x w`` grid of patches and flattens the grid row by row
into a sequence of ``N = h * w`` tokens. Token ``i`` therefore sits at row ``i // w`` and column
``i % w`` of the grid. Putting the tokens back on that lattice,

    seq2img:  X[b, c, i // w, i % w] = T[b, i, c]        einops: ``b (h w) c -> b c h w``
    img2seq:  T[b, i, c] = X[b, c, i // w, i % w]        einops: ``b c h w -> b (h w) c``

turns every token-wise operation into a per-pixel one (a token-wise Linear is a 1x1 conv) and
lets a depthwise ``k x k`` conv mix each token with its lattice neighbours, which is LocalViT's
locality. The class token (and DeiT's distillation token) have no place on the lattice: they are
split off before the map is built and joined back afterwards.
"""

from __future__ import annotations

import torch
from einops import rearrange

from vitlocal._checks import check_positive, check_rank

__all__ = ["seq2img", "img2seq", "split_cls", "join_cls", "square_grid"]


def seq2img(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Lay a token sequence on its ``h x w`` lattice, row-major.

    Args:
        tokens: ``(B, N, C)`` patch tokens (no class token), ``N == h * w``.
        h, w: grid height and width.
    Returns:
        ``(B, C, h, w)`` map with ``out[b, :, i // w, i % w] == tokens[b, i]``.
    """
    check_rank(tokens, 3, "tokens", "(B, N, C)")
    check_positive(h, "h")
    check_positive(w, "w")
    n = tokens.shape[1]
    if n != h * w:
        hint = f"; a square grid of {n} tokens is {square_grid(n)}x{square_grid(n)}" if _is_square(n) else ""
        extra = " (split the class token off first with split_cls)" if _is_square(n - 1) else ""
        raise ValueError(f"tokens has N={n} tokens, which is not h*w={h}*{w}={h * w}{hint}{extra}")
    # X[b, c, y, x] = T[b, y * w + x, c]
    return rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)


def img2seq(x: torch.Tensor) -> torch.Tensor:
    """Flatten a ``(B, C, h, w)`` map into ``(B, h * w, C)`` tokens, row-major (inverse of `seq2img`)."""
    check_rank(x, 4, "x", "(B, C, h, w)")
    # T[b, y * w + x, c] = X[b, c, y, x]
    return rearrange(x, "b c h w -> b (h w) c")


def split_cls(tokens: torch.Tensor, num_prefix: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the leading class (and distillation) tokens off a sequence.

    Args:
        tokens: ``(B, num_prefix + N, C)``.
        num_prefix: 1 for a class token, 2 for DeiT's class + distillation tokens, 0 for none.
    Returns:
        ``(prefix, patches)`` of shapes ``(B, num_prefix, C)`` and ``(B, N, C)``.
    """
    check_rank(tokens, 3, "tokens", "(B, N, C)")
    if not isinstance(num_prefix, int) or num_prefix < 0 or num_prefix > tokens.shape[1]:
        raise ValueError(
            f"num_prefix must be an integer in [0, {tokens.shape[1]}] (the sequence length), got {num_prefix!r}"
        )
    return tokens[:, :num_prefix], tokens[:, num_prefix:]


def join_cls(prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Join prefix tokens ``(B, P, C)`` back in front of patch tokens ``(B, N, C)`` -> ``(B, P + N, C)``."""
    check_rank(prefix, 3, "prefix", "(B, P, C)")
    check_rank(patches, 3, "patches", "(B, N, C)")
    if prefix.shape[0] != patches.shape[0] or prefix.shape[2] != patches.shape[2]:
        raise ValueError(
            f"prefix {tuple(prefix.shape)} and patches {tuple(patches.shape)} must agree in batch and channels"
        )
    return torch.cat([prefix, patches], dim=1)


def square_grid(n: int) -> int:
    """Side of the square grid holding ``n`` tokens; a clear error if ``n`` is not a square.

    LocalViT recovers the grid as ``int(sqrt(N))``, so its token grids must be square.
    """
    if not _is_square(n):
        raise ValueError(
            f"{n} tokens do not form a square grid; pass h and w explicitly "
            f"(or use an image size that is a multiple of the patch size in both directions)"
        )
    return round(n**0.5)


def _is_square(n: int) -> bool:
    return n > 0 and round(n**0.5) ** 2 == n
