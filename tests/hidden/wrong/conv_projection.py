"""Wrong answers to assignment 04, convolutional projection (CvT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


@wrong(subtle=False)
def embedding_normalised_over_the_map():
    """One normalisation over (C, H, W) per image (CloFormer's GroupNorm(1)), not over C per pixel."""

    def conv_token_embedding(x, proj, norm):
        return F.group_norm(proj(x), 1, norm.weight, norm.bias, norm.eps)

    return {"conv_token_embedding": conv_token_embedding}


@wrong(subtle=False)
def embedding_without_norm():
    """The LayerNorm left out."""

    def conv_token_embedding(x, proj, norm):
        return proj(x)

    return {"conv_token_embedding": conv_token_embedding}


@wrong(subtle=False)
def embedding_norm_on_the_last_axis():
    """``norm`` applied to the ``b c h w`` map as is, normalising over the width axis."""

    def conv_token_embedding(x, proj, norm):
        return norm(proj(x))

    return {"conv_token_embedding": conv_token_embedding}


def _conv_projection(x, h, w, projections, with_cls_token, grid="b (h w) c -> b c h w", flat="b c h w -> b (h w) c"):
    prefix = int(with_cls_token)
    cls, fmap = x[:, :prefix], rearrange(x[:, prefix:], grid, h=h, w=w)
    return tuple(torch.cat([cls, rearrange(p(fmap), flat)], dim=1) for p in projections)


@wrong(subtle=False)
def lattice_columns_first():
    """The tokens put on the lattice and read back column-major, ``(w h)``."""

    def conv_projection(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
        projections = (proj_q, proj_k, proj_v)
        return _conv_projection(x, h, w, projections, with_cls_token, "b (w h) c -> b c h w", "b c h w -> b (w h) c")

    return {"conv_projection": conv_projection}


@wrong(subtle=False)
def values_through_the_key_conv():
    """A copy-paste slip: x_v made with the keys' conv and BN."""

    def conv_projection(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
        return _conv_projection(x, h, w, (proj_q, proj_k, proj_k), with_cls_token)

    return {"conv_projection": conv_projection}


@wrong(subtle=False)
def class_token_appended():
    """The class token put back at the end of the sequence instead of the front."""

    def conv_projection(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
        prefix = int(with_cls_token)
        cls, fmap = x[:, :prefix], rearrange(x[:, prefix:], "b (h w) c -> b c h w", h=h, w=w)
        return tuple(
            torch.cat([rearrange(p(fmap), "b c h w -> b (h w) c"), cls], dim=1) for p in (proj_q, proj_k, proj_v)
        )

    return {"conv_projection": conv_projection}


def _attention_with(scale, layout="b t (heads d)"):
    """A ``conv_attention`` whose logits are scaled by ``scale(q)`` and whose heads are split as ``layout``."""

    def conv_attention(x_q, x_k, x_v, proj_q, proj_k, proj_v, proj, num_heads):
        q, k, v = (
            rearrange(lin(t), f"{layout} -> b heads t d", heads=num_heads)
            for lin, t in ((proj_q, x_q), (proj_k, x_k), (proj_v, x_v))
        )
        out = F.scaled_dot_product_attention(q, k, v, scale=scale(q))
        return proj(rearrange(out, f"b heads t d -> {layout}"))

    return conv_attention


@wrong(subtle=False)
def head_width_scale():
    """The usual ``d^-0.5``, where CvT scales by the full width ``C_out^-0.5``."""
    return {"conv_attention": _attention_with(lambda q: q.shape[-1] ** -0.5)}


@wrong(subtle=False)
def no_scale():
    """No scale at all."""
    return {"conv_attention": _attention_with(lambda q: 1.0)}


@wrong(subtle=True)
def heads_interleaved():
    """Heads split as ``(d heads)`` instead of ``(heads d)``."""
    return {"conv_attention": _attention_with(lambda q: (q.shape[1] * q.shape[-1]) ** -0.5, "b t (d heads)")}


@wrong(subtle=False)
def keys_rounded():
    """``round(h / 2)``: Python rounds halves to even, so 5 rows give 2 keys where the conv leaves 3."""

    def kv_tokens(h, w, with_cls_token):
        return int(with_cls_token) + round(h / 2) * round(w / 2)

    return {"kv_tokens": kv_tokens}


@wrong(subtle=False)
def keys_floored():
    """``h // 2``: the padded conv's last, partial window forgotten."""

    def kv_tokens(h, w, with_cls_token):
        return int(with_cls_token) + (h // 2) * (w // 2)

    return {"kv_tokens": kv_tokens}


@wrong(subtle=False)
def test_with_equal_projections():
    """The learner's test, like the colleague's, seeds every projection alike: a mix-up of proj_k and proj_v hides."""

    def test_conv_projection_uses_each_projection(conv_projection):
        projections = []
        for stride in (1, 2, 2):
            torch.manual_seed(0)
            projections.append(nn.Conv2d(2, 2, 3, stride, 1, groups=2, bias=False).double())
        x = torch.randn(1, 9, 2, dtype=torch.float64)
        fmap = x.transpose(1, 2).reshape(1, 2, 3, 3)
        with torch.no_grad():
            for out, projection in zip(conv_projection(x, 3, 3, *projections, False), projections, strict=True):
                assert torch.allclose(out, projection(fmap).flatten(2).transpose(1, 2))

    return {"test_conv_projection_uses_each_projection": test_conv_projection_uses_each_projection}


@wrong(subtle=True)
def test_without_class_token():
    """The learner's test tells the projections apart but never passes a class token: its bypass goes untested."""

    def test_conv_projection_uses_each_projection(conv_projection):
        projections = []
        for seed, stride in enumerate((1, 2, 2)):
            torch.manual_seed(seed)
            projections.append(nn.Conv2d(2, 2, 3, stride, 1, groups=2, bias=False).double())
        x = torch.randn(1, 6, 2, dtype=torch.float64)
        fmap = x.transpose(1, 2).reshape(1, 2, 3, 2)
        with torch.no_grad():
            for out, projection in zip(conv_projection(x, 3, 2, *projections, False), projections, strict=True):
                assert torch.allclose(out, projection(fmap).flatten(2).transpose(1, 2))

    return {"test_conv_projection_uses_each_projection": test_conv_projection_uses_each_projection}


@wrong(subtle=True)
def stride_always_two():
    """CvT's stride 2, whatever the budget: right for its first stage under 400 MMACs, not in general."""

    def choose_stride_kv(h, w, dim, budget):
        return 2

    return {"choose_stride_kv": choose_stride_kv}


@wrong(subtle=True)
def stride_largest():
    """The largest stride is within every budget, but it throws away the most keys: not the smallest that fits."""

    def choose_stride_kv(h, w, dim, budget):
        return 8

    return {"choose_stride_kv": choose_stride_kv}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=True)
def projection_image_by_image():
    """Each image's map projected on its own (a loop over the batch): right in eval mode, but in training mode
    every BatchNorm then normalises with one image's statistics instead of the batch's."""

    def conv_projection(x, h, w, proj_q, proj_k, proj_v, with_cls_token):
        images = [_conv_projection(x[i : i + 1], h, w, (proj_q, proj_k, proj_v), with_cls_token) for i in range(len(x))]
        return tuple(torch.cat(parts, dim=0) for parts in zip(*images, strict=True))

    return {"conv_projection": conv_projection}


@wrong(subtle=True)
def linear_maps_by_hand():
    """The q/k/v maps written out as ``t @ W.T + b``: right with biases, an error for a layer made with
    qkv_bias=False (its Linear layers have no bias)."""

    def conv_attention(x_q, x_k, x_v, proj_q, proj_k, proj_v, proj, num_heads):
        q, k, v = (
            rearrange(t @ lin.weight.T + lin.bias, "b t (heads d) -> b heads t d", heads=num_heads)
            for lin, t in ((proj_q, x_q), (proj_k, x_k), (proj_v, x_v))
        )
        out = F.scaled_dot_product_attention(q, k, v, scale=(q.shape[1] * q.shape[-1]) ** -0.5)
        return proj(rearrange(out, "b heads t d -> b t (heads d)"))

    return {"conv_attention": conv_attention}


@wrong(subtle=True)
def embedding_normalised_in_float32():
    """The LayerNorm applied in float32 (``y.float()``, "for stability"): float64 maps come back as float32."""

    def conv_token_embedding(x, proj, norm):
        y = rearrange(proj(x), "b c h w -> b h w c").float()
        return rearrange(F.layer_norm(y, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps),
                         "b h w c -> b c h w")  # fmt: skip

    return {"conv_token_embedding": conv_token_embedding}
