"""Hidden checks of assignment 06, the capstone: a small locality ViT from the learner's own parts (LocalViT)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from vitlocal import locality
from vitlocal.models import vit

from ._common import SEEDS, double, expect_close, for_all, load_reference_weights, randn

RATIOS = st.sampled_from([1, 2, 4])


def check_locality_feed_forward(LocalityFeedForward):
    """``x + BN(1x1(hswish(BN(DW(hswish(BN(1x1(x))))))))`` with the official layer names, in train and eval mode."""

    def prop(dim, ratio, k, train, seed):
        reference = double(locality.LocalityFeedForward(dim, expand_ratio=ratio, gate=None, kernel_size=k), seed)
        ours = LocalityFeedForward(dim, dim * ratio, k).double()
        load_reference_weights(ours, reference, f"LocalityFeedForward({dim}, {dim * ratio}, {k})")
        x = randn(2, dim, 5, 4, seed=seed)
        with torch.no_grad():
            want = reference.train(train)(x)
            expect_close(ours.train(train)(x), want, f"LocalityFeedForward in {'train' if train else 'eval'} mode")

    for_all(prop, dim=st.sampled_from([2, 4]), ratio=RATIOS, k=st.sampled_from([1, 3]), train=st.booleans(), seed=SEEDS)


def check_block(Block):
    """A DeiT block (``local=False``) or a LocalViT block (``local=True``): no norm2, the class token skips the FFN."""

    def prop(local, heads, ratio, side, seed):
        dim = 4
        kind = locality.LocalViTBlock(dim, heads, ratio, gate=None) if local else vit.Block(dim, heads, ratio)
        reference = double(kind, seed).eval()
        ours = Block(dim, heads, ratio, local).double().eval()
        load_reference_weights(ours, reference, f"Block(local={local})")
        x = randn(2, 1 + side * side, dim, seed=seed)
        with torch.no_grad():
            expect_close(ours(x), reference(x), f"Block(local={local}) on a {side}x{side} grid")

    for_all(prop, local=st.booleans(), heads=st.sampled_from([1, 2]), ratio=RATIOS, side=st.integers(1, 4), seed=SEEDS)


def check_tiny_vit(TinyViT):
    """The whole model equals the reference DeiT / LocalViT of the same configuration, logits for logits."""

    def prop(local, depth, patch, seed):
        config = vit.ViTConfig(
            num_classes=3, img_size=8, patch_size=patch, embed_dim=4, depth=depth, num_heads=2, drop_path_rate=0.0,
            locality_layers="all" if local else "none", gate=None,
        )  # fmt: skip
        reference = double(vit.VisionTransformer(config), seed).eval()
        ours = TinyViT(8, patch, 3, 4, depth, 2, local).double().eval()
        load_reference_weights(ours, reference, f"TinyViT(local={local})")
        images = randn(2, 3, 8, 8, seed=seed)
        with torch.no_grad():
            expect_close(ours(images), reference(images), f"the logits of TinyViT(local={local}, depth={depth})")

    for_all(prop, local=st.booleans(), depth=st.integers(1, 2), patch=st.sampled_from([2, 4]), seed=SEEDS)
