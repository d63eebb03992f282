"""Wrong answers to assignment 06, the capstone."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal import locality
from vitlocal.models import vit

from . import Wrong, registry

WRONG: list[Wrong] = []
wrong = registry(WRONG)


class _LocalityFeedForward(locality.LocalityFeedForward):
    """The reference FFN with the capstone's signature ``(dim, hidden_dim, kernel_size)``, no gate."""

    def __init__(self, dim, hidden_dim, kernel_size=3):
        super().__init__(dim, expand_ratio=hidden_dim / dim, gate=None, kernel_size=kernel_size)


@wrong(subtle=False)
def ffn_without_residual():
    """The residual left out of the module: ``conv(x)`` instead of ``x + conv(x)``."""

    class LocalityFeedForward(_LocalityFeedForward):
        def forward(self, x):
            return self.conv(x)

    return {"LocalityFeedForward": LocalityFeedForward}


@wrong(subtle=False)
def ffn_with_gelu():
    """GELU where LocalViT has h-swish."""

    class LocalityFeedForward(_LocalityFeedForward):
        def __init__(self, dim, hidden_dim, kernel_size=3):
            super().__init__(dim, hidden_dim, kernel_size)
            self.conv[2], self.conv[5] = nn.GELU(), nn.GELU()

    return {"LocalityFeedForward": LocalityFeedForward}


@wrong(subtle=False)
def ffn_without_depthwise_conv():
    """No depthwise conv (LocalViT's no-locality ablation): a token-wise MLP with BatchNorms."""

    class LocalityFeedForward(locality.LocalityFeedForward):
        def __init__(self, dim, hidden_dim, kernel_size=3):
            super().__init__(dim, expand_ratio=hidden_dim / dim, gate=None, depthwise=False)

    return {"LocalityFeedForward": LocalityFeedForward}


class _Block(nn.Module):
    """A twin that holds the reference block (its parameter names) and runs it as ``forward``."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, local=False):
        super().__init__()
        self.local = local
        reference = (
            locality.LocalViTBlock(dim, num_heads, mlp_ratio, gate=None)
            if local
            else vit.Block(dim, num_heads, mlp_ratio)
        )
        for name, child in reference.named_children():
            self.add_module(name, child)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        if not self.local:
            return x + self.mlp(self.norm2(x))
        return locality.locality_on_tokens(x, self.conv)


@wrong(subtle=False)
def local_block_residual_twice():
    """A residual around the locality FFN, whose residual is already inside: the patch tokens get ``2 T + ...``."""

    class Block(_Block):
        def forward(self, x):
            if not self.local:
                return super().forward(x)
            x = x + self.attn(self.norm1(x))
            cls, patches = x[:, :1], x[:, 1:]
            fmap = rearrange(patches, "b (h w) c -> b c h w", h=math.isqrt(patches.shape[1]))
            return torch.cat([cls, patches + rearrange(self.conv(fmap), "b c h w -> b (h w) c")], dim=1)

    return {"Block": Block}


@wrong(subtle=False)
def layer_norms_default_eps():
    """PyTorch's LayerNorm eps 1e-5 instead of DeiT's 1e-6."""

    class Block(_Block):
        def __init__(self, dim, num_heads, mlp_ratio=4.0, local=False):
            super().__init__(dim, num_heads, mlp_ratio, local)
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = 1e-5

    return {"Block": Block}


@wrong(subtle=False)
def local_block_with_norm2():
    """A LayerNorm before the locality FFN, which LocalViT does not have (its BatchNorms take its place)."""

    class Block(_Block):
        def __init__(self, dim, num_heads, mlp_ratio=4.0, local=False):
            super().__init__(dim, num_heads, mlp_ratio, local)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):
            if not self.local:
                return super().forward(x)
            x = x + self.attn(self.norm1(x))
            return locality.locality_on_tokens(torch.cat([x[:, :1], self.norm2(x[:, 1:])], dim=1), self.conv)

    return {"Block": Block}


class _TinyViT(vit.VisionTransformer):
    """The reference model with the capstone's signature."""

    def __init__(self, img_size, patch_size, num_classes, dim, depth, num_heads, local):
        config = vit.ViTConfig(
            num_classes, img_size, patch_size, embed_dim=dim, depth=depth, num_heads=num_heads, drop_path_rate=0.0,
            locality_layers="all" if local else "none", gate=None,
        )  # fmt: skip
        super().__init__(config)


@wrong(subtle=False)
def head_on_mean_token():
    """The head reads the mean of all tokens instead of the class token's final state."""

    class TinyViT(_TinyViT):
        def forward(self, images):
            return self.head(self.forward_features(images).mean(1))

    return {"TinyViT": TinyViT}


@wrong(subtle=False)
def position_embedding_forgotten():
    """``pos_embed`` created but never added."""

    class TinyViT(_TinyViT):
        def forward(self, images):
            x = self.patch_embed(images)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    return {"TinyViT": TinyViT}


@wrong(subtle=False)
def no_final_norm():
    """The final LayerNorm left out."""

    class TinyViT(_TinyViT):
        def __init__(self, *args):
            super().__init__(*args)
            self.norm = nn.Identity()

    return {"TinyViT": TinyViT}


@wrong(subtle=False)
def extra_params_forgets_norm2():
    """The depthwise conv, the BatchNorms and the dropped biases counted, but not the dropped second LayerNorm."""

    def extra_params(dim, hidden, kernel_size):
        return hidden * kernel_size**2 + 4 * hidden + 2 * dim - (hidden + dim)

    return {"extra_params": extra_params}


@wrong(subtle=False)
def extra_params_counts_running_statistics():
    """BatchNorm's running mean and variance counted as parameters (they are buffers)."""

    def extra_params(dim, hidden, kernel_size):
        return hidden * kernel_size**2 + 8 * hidden + 4 * dim - (hidden + dim) - 2 * dim

    return {"extra_params": extra_params}


def _loop(zero_grad: bool, train_mode: bool):
    def train(model, images, labels, steps, batch, lr, seed):
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        order = torch.Generator().manual_seed(seed)
        model.train(train_mode)
        losses = []
        for _ in range(steps):
            index = torch.randint(0, len(labels), (batch,), generator=order)
            loss = F.cross_entropy(model(images[index]), labels[index])
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    return train


@wrong(subtle=False)
def train_without_zero_grad():
    """The colleague's bug kept: every step's gradient is summed into the next."""
    return {"train": _loop(zero_grad=False, train_mode=True)}


@wrong(subtle=True)
def train_in_eval_mode():
    """``model.eval()`` instead of ``model.train()``: BatchNorm uses its running statistics and never updates them
    (invisible on the visible check's Linear model)."""
    return {"train": _loop(zero_grad=True, train_mode=False)}


@wrong(subtle=False)
def test_checks_the_loss_goes_down():
    """The learner's test checks that the loss decreases: the buggy loop's does too."""

    def test_train_matches_adamw(train):
        torch.manual_seed(0)
        losses = train(torch.nn.Linear(3, 2), torch.randn(32, 3), torch.arange(32) % 2, 30, 8, 0.05, 0)
        assert losses[-1] < losses[0]

    return {"test_train_matches_adamw": test_train_matches_adamw}


@wrong(subtle=True)
def config_changed_after_the_run():
    """my_config changed after the study ran (a wider model): the report no longer comes from the submitted code."""
    config = dict(
        img_size=32, patch_size=4, dim=96, depth=4, num_heads=4, steps=600, batch=64, lr=2e-3, train_images=8000
    )
    return {"my_config": lambda: config}


# ---------------------------------------------------------------- what a correct answer handles by construction
@wrong(subtle=True)
def class_token_not_expanded():
    """``torch.cat([self.cls_token, x], dim=1)`` without expanding the class token over the batch: right for one
    image, an error for two."""

    class TinyViT(_TinyViT):
        def forward(self, images):
            x = self.patch_embed(images)
            x = torch.cat([self.cls_token, x], dim=1) + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    return {"TinyViT": TinyViT}


@wrong(subtle=False)
def ffn_with_dropout():
    """A dropout after the FFN's activations ("an FFN has dropout"): eval mode is right, training mode is not."""

    class LocalityFeedForward(_LocalityFeedForward):
        def __init__(self, dim, hidden_dim, kernel_size=3):
            super().__init__(dim, hidden_dim, kernel_size)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            return x + self.drop(self.conv(x))

    return {"LocalityFeedForward": LocalityFeedForward}
