"""Hidden checks of assignment 06, the capstone: a small locality ViT from the learner's own parts (LocalViT)."""

from __future__ import annotations

import copy

import torch
from hypothesis import strategies as st

from vitlocal import locality
from vitlocal.models import vit

from ._common import DTYPES, SEEDS, call, double, expect_close, for_all, load_reference_weights, randn, reference_parts

RATIOS = st.sampled_from([1, 2, 4])
MODES = st.booleans()  # training mode (BatchNorm normalises with the batch's statistics) or eval mode


def _reference_ffn(dim, hidden_dim, kernel_size=3):
    """vitlocal's FFN with the capstone's signature: Block is checked with it in place of the learner's."""
    return locality.LocalityFeedForward(dim, expand_ratio=hidden_dim / dim, gate=None, kernel_size=kernel_size)


def _reference_block(dim, num_heads, mlp_ratio=4.0, local=False):
    """vitlocal's DeiT / LocalViT block with the capstone's signature: TinyViT is checked with it in place."""
    if local:
        return locality.LocalViTBlock(dim, num_heads, mlp_ratio, gate=None)
    return vit.Block(dim, num_heads, mlp_ratio)


EARLIER = dict(LocalityFeedForward=_reference_ffn, Block=_reference_block)


def _mode(train):
    return "training" if train else "eval"


def check_locality_feed_forward(LocalityFeedForward):
    """``x + BN(1x1(hswish(BN(DW(hswish(BN(1x1(x))))))))`` with the official layer names, in training and eval
    mode, batch 1, float32 and float64, on a non-square map."""

    def prop(dim, ratio, k, train, b, dtype, seed):
        reference = double(locality.LocalityFeedForward(dim, expand_ratio=ratio, gate=None, kernel_size=k), seed)
        what = f"LocalityFeedForward({dim}, {dim * ratio}, {k})"
        ours = call(LocalityFeedForward, "LocalityFeedForward", dim, dim * ratio, k).to(dtype)
        load_reference_weights(ours, reference.to(dtype), what)
        x = randn(b, dim, 5, 4, seed=seed, dtype=dtype)
        with torch.no_grad():
            want = reference.train(train)(x)
            got = call(ours.train(train), what, x)
            expect_close(got, want, f"{what} in {_mode(train)} mode on a 5x4 map, batch {b}, {str(dtype)[6:]}")

    examples = (dict(dim=2, ratio=2, k=3, train=True, b=1, dtype=torch.float32, seed=0),)
    for_all(prop, examples, dim=st.sampled_from([2, 4]), ratio=RATIOS, k=st.sampled_from([1, 3]), train=MODES,
            b=st.integers(1, 2), dtype=DTYPES, seed=SEEDS)  # fmt: skip


def check_block(Block):
    """A DeiT block (``local=False``) or a LocalViT block (``local=True``): no norm2, the class token skips the FFN;
    training and eval mode, batch 1, float32 and float64.

    Checked with the reference LocalityFeedForward in place: a mistake there costs its own points.
    """

    def prop(local, heads, ratio, side, train, b, dtype, seed):
        dim, side = 4, max(side, 2) if train else side  # BatchNorm in training needs more than one value
        kind = locality.LocalViTBlock(dim, heads, ratio, gate=None) if local else vit.Block(dim, heads, ratio)
        reference = double(kind, seed).to(dtype).train(train)
        what = f"Block({dim}, {heads}, {ratio}, local={local})"
        with reference_parts(Block, **EARLIER):
            ours = call(Block, "Block", dim, heads, ratio, local).to(dtype).train(train)
        load_reference_weights(ours, reference, what)
        x = randn(b, 1 + side * side, dim, seed=seed, dtype=dtype)
        with torch.no_grad(), reference_parts(Block, **EARLIER):
            got = call(ours, what, x)
            case = f"a {side}x{side} grid, batch {b}, {_mode(train)} mode, {str(dtype)[6:]}"
            expect_close(got, reference(x), f"{what} on {case}")

    examples = (dict(local=True, heads=2, ratio=2, side=3, train=True, b=1, dtype=torch.float32, seed=0),)
    for_all(prop, examples, local=st.booleans(), heads=st.sampled_from([1, 2]), ratio=RATIOS, side=st.integers(1, 4),
            train=MODES, b=st.integers(1, 2), dtype=DTYPES, seed=SEEDS)  # fmt: skip


def check_tiny_vit(TinyViT):
    """The whole model equals the reference DeiT / LocalViT of the same configuration, logits for logits; batch 1
    and 2, training and eval mode.

    Checked with the reference Block and LocalityFeedForward in place: a mistake there costs its own points.
    """

    def prop(local, depth, patch, train, b, seed):
        config = vit.ViTConfig(
            num_classes=3, img_size=8, patch_size=patch, embed_dim=4, depth=depth, num_heads=2, drop_path_rate=0.0,
            locality_layers="all" if local else "none", gate=None,
        )  # fmt: skip
        reference = double(vit.VisionTransformer(config), seed).train(train)
        what = f"TinyViT(8, {patch}, 3, 4, {depth}, 2, local={local})"
        with reference_parts(TinyViT, **EARLIER):
            ours = call(TinyViT, "TinyViT", 8, patch, 3, 4, depth, 2, local).double().train(train)
        load_reference_weights(ours, reference, what)
        images = randn(b, 3, 8, 8, seed=seed)
        with torch.no_grad(), reference_parts(TinyViT, **EARLIER):
            got = call(ours, what, images)
            expect_close(got, reference(images), f"the logits of {what}, batch {b}, {_mode(train)} mode")

    examples = (dict(local=True, depth=1, patch=4, train=False, b=2, seed=0),)
    for_all(prop, examples, local=st.booleans(), depth=st.integers(1, 2), patch=st.sampled_from([2, 4]), train=MODES,
            b=st.integers(1, 2), seed=SEEDS)  # fmt: skip


def check_extra_params(extra_params):
    """``C_h k^2 + 4 C_h + 2 C - (C_h + C) - 2 C``: the depthwise conv and BNs, minus the biases and norm2."""

    def prop(dim, ratio, k):
        local = sum(p.numel() for p in locality.LocalViTBlock(dim, 1, ratio, gate=None, kernel_size=k).parameters())
        plain = sum(p.numel() for p in vit.Block(dim, 1, ratio).parameters())
        got = extra_params(dim, int(dim * ratio), k)
        if got != local - plain:
            raise AssertionError(f"extra_params({dim}, {int(dim * ratio)}, {k}) is {got}, expected {local - plain}")

    for_all(prop, dim=st.integers(1, 48), ratio=st.sampled_from([1.0, 2.0, 4.0]), k=st.sampled_from([1, 3, 5]))


def _reference_train(model, images, labels, steps, batch, lr, seed):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    order = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(labels), (batch,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_train(train):
    """AdamW with fresh gradients every step, the batches drawn from ``seed``, in training mode (BN, dropout)."""

    def prop(batch, seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3)).double()
        twin = copy.deepcopy(model)
        images, labels = randn(12, 4, seed=seed), torch.arange(12) % 3
        model.eval()  # train must switch to training mode itself
        got = train(model, images, labels, 3, batch, 0.05, seed)
        want = _reference_train(twin, images, labels, 3, batch, 0.05, seed)
        expect_close(torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), "the losses")
        for name, value in twin.state_dict().items():
            expect_close(model.state_dict()[name].double(), value.double(), f"{name} after three steps")

    for_all(prop, batch=st.integers(2, 6), seed=SEEDS)


def _no_step(model, images, labels, steps, batch, lr, seed):
    return _reference_train(model, images, labels, steps, batch, 0.0, seed)


def _adam_without_decay(model, images, labels, steps, batch, lr, seed):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (batch,), generator=order)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
        optimizer.step()
    return []


def check_train_test(test_train):
    """The learner's test passes on a correct loop and fails on each plausible bug."""
    test_train(_reference_train)
    for bug, implementation in (("no update at all", _no_step), ("Adam without weight decay", _adam_without_decay)):
        try:
            test_train(implementation)
        except AssertionError:
            continue
        raise AssertionError(f"your test passes a training loop with a bug: {bug}")


def check_report(report, config, fingerprint):
    """The record was made by the submitted code: its config is my_config(), its fingerprint is reproduced now."""
    recorded = report.get("config")
    if recorded != config:
        keys = sorted(set(recorded or {}) | set(config))
        diff = [f"{k}: {(recorded or {}).get(k)!r} in the report, {config.get(k)!r} now" for k in keys
                if (recorded or {}).get(k) != config.get(k)]  # fmt: skip
        raise AssertionError(
            "my_report() was made with another design than my_config() returns (" + "; ".join(diff) + "): "
            "run the study again with the code you hand in"
        )
    got, want = fingerprint(config), report.get("fingerprint", [])
    if len(got) != len(want):
        raise AssertionError(f"fingerprint(my_config()) has {len(got)} losses, the report's has {len(want)}")
    got, want = torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
        i = int(((got - want).abs() > 1e-6 + 1e-4 * want.abs()).nonzero()[0])
        raise AssertionError(
            f"your submitted code does not reproduce the record's fingerprint (its first losses on a fixed batch): "
            f"loss {i} is {got[i].item():.6g} now, {want[i].item():.6g} in the report (max difference "
            f"{(got - want).abs().max().item():.3g}); my_report() must return the line your study printed, with "
            "the code you hand in"
        )
    for row in report["rows"]:
        if not 0 <= row["val_acc"] <= 1:
            raise AssertionError(f"an accuracy outside [0, 1] in the report: {row}")
