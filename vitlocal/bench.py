"""Parameters, multiply-accumulates and throughput of a model.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per
multiply-accumulate for matmuls and convolutions) while ``F.scaled_dot_product_attention`` runs on
its math backend: the fused kernels are invisible to the counter, so without this the attention
matmuls ``Q K^T`` and ``A V`` would be missing. Element-wise operations, softmax and normalisation
are not counted, as in the papers.

Throughput is images per second for inference (forward) and training (forward + backward), after
warm-up, synchronised on CUDA.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vitlocal.data import build_data
from vitlocal.data.loader import FileBatches
from vitlocal.models.common import param_groups
from vitlocal.recipes import get_recipe

__all__ = [
    "TIMM_NAMES",
    "timm_model",
    "format_rate",
    "count_params",
    "count_macs",
    "throughput",
    "time_calls",
    "measure_training",
    "measure_loading",
    "zoo_rows",
    "format_zoo_table",
]


# timm's name for our models, for `vitlocal bench` (timm has no LocalViT, CvT, CloFormer or Slide models)
TIMM_NAMES = {
    "deit_tiny": "deit_tiny_patch16_224",
    "deit_small": "deit_small_patch16_224",
    "deit_base": "deit_base_patch16_224",
    "crossvit_tiny": "crossvit_tiny_240",
    "crossvit_small": "crossvit_small_240",
    "crossvit_base": "crossvit_base_240",
    "crossvit_9": "crossvit_9_240",
    "crossvit_15": "crossvit_15_240",
    "crossvit_18": "crossvit_18_240",
    "crossvit_9_dagger": "crossvit_9_dagger_240",
    "crossvit_15_dagger": "crossvit_15_dagger_240",
    "crossvit_18_dagger": "crossvit_18_dagger_240",
    "swin_tiny": "swin_tiny_patch4_window7_224",
}


def timm_model(name: str, img_size: int) -> tuple[nn.Module | None, str]:
    """timm's implementation of ``name`` with drop path 0 and its timm name; or None and the reason there is none."""
    timm_name = TIMM_NAMES.get(name)
    if timm_name is None:
        return None, f"timm has no {name}"
    try:  # broad: on CPU-only machines timm's torchvision import raises RuntimeError, not ImportError
        import timm
    except Exception as err:
        return None, f"timm does not import here ({type(err).__name__}: {str(err)[:120]})"
    try:
        return timm.create_model(timm_name, img_size=img_size, num_classes=1000, drop_path_rate=0.0), timm_name
    except TypeError:  # a model without an img_size argument
        return timm.create_model(timm_name, num_classes=1000, drop_path_rate=0.0), timm_name


def format_rate(value: float) -> str:
    """A rate with at least three significant figures, never rounded to a whole number below 100."""
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (frozen ones too, unless ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one ``(1, in_chans, H, W)`` image (attention included)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with sdpa_kernel(SDPBackend.MATH), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def throughput(
    model: nn.Module,
    img_size: int = 224,
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 3,
    backward: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Images per second for ``steps`` batches after ``warmup`` (``backward=True``: forward + backward).

    ``dtype=torch.bfloat16`` runs under autocast (on CUDA by default, as the training engine does).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).train(backward)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step() -> None:
        with autocast, torch.set_grad_enabled(backward):
            out = model(x)
        if backward:
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)

    return batch_size * steps / time_calls(step, steps, warmup, device)


def time_calls(step: Any, steps: int, warmup: int, device: torch.device) -> float:
    """Wall time of ``steps`` calls of ``step`` after ``warmup`` calls, synchronised on CUDA (whose peak memory
    statistics restart after the warm-up)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_training(
    model: nn.Module,
    img_size: int,
    batch_size: int,
    steps: int = 10,
    warmup: int = 3,
    device: str | torch.device | None = None,
    compile: bool = False,
) -> dict[str, float | None]:
    """Images per second of full training steps (forward, backward, AdamW; bf16 autocast on CUDA) on random
    data, and the peak GPU memory in GiB (``None`` on CPU)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)  # this model's peak, not the process's so far
    model = model.to(dev).train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, fused=True if dev.type == "cuda" else None)
    step_model = torch.compile(model) if compile else model
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext():
            loss = F.cross_entropy(step_model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_calls(step, steps, warmup, dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"img_per_s": batch_size * steps / seconds, "peak_mem_gib": peak}


def measure_loading(
    source: str, img_size: int, batch_size: int = 64, workers: int = 1, steps: int = 20, recipe: str = "deit"
) -> dict[str, float]:
    """Streamed loading of ``source``'s training split: img/s of ``workers`` processes decoding and cropping
    (also per worker), and img/s once the recipe's batch augmentation has run on this machine's device."""
    data = build_data(
        source,
        img_size,
        batch_size,
        augment=get_recipe(recipe).augment,
        workers=workers,
        in_memory=False,
        limit=(None, 1),
    )
    if not isinstance(data.train, FileBatches):
        raise ValueError(
            f"--data {source} is generated in memory: there is nothing to load. Measure a source of image files "
            "(imagenette:PATH, a folder, imagenet:PATH)"
        )

    def rate(batches: Any) -> float:
        it = iter(batches)
        next(it)  # start the workers
        start, n = time.perf_counter(), 0
        for _ in range(steps):
            n += len(next(it)[1])
        return n / (time.perf_counter() - start)

    decode = rate(data.train.loader)
    return {
        "decode_crop_img_per_s": decode,
        "per_worker": decode / max(1, workers),
        "augmented_img_per_s": rate(data.train),
    }


def zoo_rows(names: list[str]) -> list[dict]:
    """One row per model at its paper resolution (presets at their own): params / GMACs beside the papers'.

    The models are built on the ``meta`` device, so the whole zoo is counted in seconds.
    """
    from vitlocal.models.papers import PUBLISHED
    from vitlocal.models.registry import create_model

    rows = []
    for name in names:
        paper = PUBLISHED.get(name)
        overrides = {"img_size": paper.img_size} if paper else {}  # presets: their own input size
        with torch.device("meta"):  # shapes only: counting needs no memory and no arithmetic
            model = create_model(name, **overrides)
        img_size = model.config.img_size
        params_m = count_params(model) / 1e6
        gmacs = count_macs(model, img_size) / 1e9
        rows.append(
            {
                "model": name,
                "img_size": img_size,
                "params_m": params_m,
                "gmacs": gmacs,
                "paper_params_m": paper.params_m if paper else None,
                "paper_gmacs": paper.gmacs if paper else None,
                "paper_top1": paper.top1 if paper else None,
            }
        )
    return rows


def format_zoo_table(rows: list[dict]) -> str:
    """A Markdown table of `zoo_rows`: ours, the paper's, and the difference."""

    def num(value: float | None, digits: int | None = None) -> str:
        """Measured values to ``digits`` decimals; published ones exactly as printed (``None``)."""
        if value is None:
            return "-"
        return f"{value:g}" if digits is None else f"{value:.{digits}f}"

    def diff(ours: float, paper: float | None, digits: int) -> str:
        return "-" if paper is None else f"{ours - paper:+.{digits}f}"

    lines = [
        "| model | input | params (M) | paper params (M) | diff | GMACs | paper GFLOPs | diff | paper top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['img_size']} | {num(r['params_m'], 2)} | {num(r['paper_params_m'])} | "
            f"{diff(r['params_m'], r['paper_params_m'], 2)} | {num(r['gmacs'], 2)} | {num(r['paper_gmacs'])} | "
            f"{diff(r['gmacs'], r['paper_gmacs'], 2)} | {num(r['paper_top1'])} |"
        )
    return "\n".join(lines)
