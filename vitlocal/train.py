"""The training engine: one loop for a CPU, one GPU, or many GPUs / processes (DDP under ``torchrun``).

    recipe (the papers')    AdamW on `param_groups` (no decay on biases, norms, position embeddings,
                            class tokens); peak lr = base_lr x global_batch / 512; per step, linear
                            warm-up from warmup_lr, then cosine down to min_lr; drop path; optional EMA
    every step              bf16 autocast on CUDA (fp32 on CPU), soft-target cross-entropy (label
                            smoothing and mixup / cutmix live in the targets), gradient accumulation
                            (``no_sync`` on all but the last micro-batch), gradient clipping
    every epoch             evaluate (loss, top-1, top-5; all-reduced over processes), write the
                            checkpoint atomically (it holds the metrics of every epoch so far), then
                            rewrite ``metrics.jsonl`` from it, atomically too

``--batch-size`` is the *global* batch: W processes with ``--accum-steps k`` each run micro-batches of
B / (W k), so a run means the same thing on 1 or 8 GPUs. A checkpoint holds the model, optimizer,
schedule, EMA, epoch, every process's RNG states and the configuration, and loads with
``weights_only=True``; ``--resume`` continues bit-exactly on CPU (data order and augmentation are
seeded by (seed, epoch, rank), the RNG states are restored). A ``kill -9`` at any point loses at most the
epoch in progress; Ctrl-C stops after saying where the last checkpoint is (``tests/test_train.py`` kills
runs at seven points and resumes them).

``VITLOCAL_SMOKE=1`` (or nbgrader's ``NBGRADER_EXECUTION``) shrinks a run to a few tiny steps: the
same code, smaller sizes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vitlocal._checks import check_positive, load_torch_file
from vitlocal.data import Batches, build_data, parse_source, soft_cross_entropy
from vitlocal.models import create_model
from vitlocal.models.common import param_groups
from vitlocal.recipes import Recipe, default_recipe, get_recipe
from vitlocal.records import read_metrics, save_atomically, write_jsonl, write_text_atomically

__all__ = [
    "TrainConfig",
    "smoke_mode",
    "WarmupCosine",
    "Ema",
    "train",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_model",
]


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is global (all processes and accumulation steps together)."""

    model: str
    data: str = "synthetic"
    epochs: int = 10
    batch_size: int = 128
    img_size: int = 224
    out: str = "runs/train"
    device: str | None = None  # None: $VITLOCAL_DEVICE, else CUDA when present, else CPU
    seed: int = 0
    resume: bool = False
    compile: bool = False
    recipe: str | None = None  # None: the model family's (`default_recipe`)
    lr: float | None = None  # peak LR; None: the recipe's base_lr x batch_size / 512
    overrides: dict[str, Any] = field(default_factory=dict)  # recipe / augment fields, e.g. {"mixup": 0.0}
    model_args: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. {"locality_layers": "low"}
    accum_steps: int = 1
    workers: int | None = None  # data-loading processes per training process; None: the cores, shared
    in_memory: bool | None = None  # None: decide from the data size
    channels_last: bool = False  # NHWC activations, for conv-heavy models on GPU
    stop_after: int | None = None  # end this invocation after this many epochs; the schedule still spans `epochs`
    limit_train: int | None = None  # use at most this many training / validation images
    limit_val: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "img_size", "accum_steps"):
            check_positive(getattr(self, name), name)
        for name in ("stop_after", "limit_train", "limit_val"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be 0 (load in the training process) or more, got {self.workers!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}; e.g. 1e-3, or None for the recipe's")


# fields a resumed run must share with its checkpoint
_RUN_IDENTITY = (
    "model",
    "model_args",
    "data",
    "batch_size",
    "img_size",
    "seed",
    "recipe",
    "lr",
    "overrides",
    "accum_steps",
)


def smoke_mode() -> bool:
    """True under ``VITLOCAL_SMOKE=1`` or nbgrader's ``NBGRADER_EXECUTION``."""
    return os.environ.get("VITLOCAL_SMOKE", "0") not in ("", "0") or "NBGRADER_EXECUTION" in os.environ


def _smoke(cfg: TrainConfig, world: int) -> TrainConfig:
    """The same run, tiny: at most 2 epochs of 2 steps, small batches, no downloads, no worker processes."""
    batch = min(cfg.batch_size, 8 * world * cfg.accum_steps)
    name, path = parse_source(cfg.data)
    data = "synthetic" if name in ("imagenette", "cifar10") and path is None else cfg.data
    return replace(
        cfg,
        data=data,
        epochs=min(cfg.epochs, 2),
        batch_size=batch,
        workers=0,
        limit_train=2 * batch,
        limit_val=batch,
    )


# ---------------------------------------------------------------- schedule, EMA
class WarmupCosine:
    """Per-step learning rate: linear from ``warmup_lr`` to ``peak`` over ``warmup_steps``, then
    ``min_lr + (peak - min_lr) (1 + cos(pi t)) / 2`` with t going from 0 to 1 at ``total_steps``.

    (DeiT's timm scheduler steps per epoch; per step is the same curve, smoother, and works for short runs.)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        peak: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_lr: float = 0.0,
        min_lr: float = 0.0,
    ) -> None:
        self.optimizer, self.peak, self.total, self.warmup = optimizer, peak, total_steps, warmup_steps
        self.warmup_lr, self.min_lr, self.steps = warmup_lr, min_lr, 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_lr + (self.peak - self.warmup_lr) * step / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.peak - self.min_lr) * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.steps)

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps = state["steps"]
        self._apply()


class Ema:
    """Exponential moving average of a model's weights and buffers: ``w_ema = decay w_ema + (1 - decay) w``
    after every optimizer step (DeiT: decay 0.99996, no warm-up; timm ``ModelEma``).

    The tensor lists are gathered once (state-dict tensors share storage with the modules), so a step is one
    fused ``_foreach_lerp_`` over the floating-point tensors and a copy of the integer buffers.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._source: nn.Module | None = None  # the model the lists below were gathered from
        self._floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # (EMA, model) tensors
        self._others: list[tuple[torch.Tensor, torch.Tensor]] = []  # integer buffers, copied

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        if self._source is not model:
            pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
            floats = [pair for pair in pairs if pair[0].dtype.is_floating_point]
            self._floats = ([e for e, _ in floats], [n for _, n in floats])
            self._others = [pair for pair in pairs if not pair[0].dtype.is_floating_point]
            self._source = model
        torch._foreach_lerp_(*self._floats, 1 - self.decay)
        for ema, new in self._others:  # e.g. BatchNorm's num_batches_tracked
            ema.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


# ---------------------------------------------------------------- processes and devices
@dataclass
class _Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _pick_device(name: str | None) -> torch.device:
    name = name or os.environ.get("VITLOCAL_DEVICE")
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r} is unknown; use cpu or cuda")
    return torch.device(name)


def _start_processes(device: str | None) -> _Processes:
    """One process, or (under torchrun: ``WORLD_SIZE`` > 1) a DDP process group: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = _pick_device(device)
    if world == 1:
        return _Processes(0, 1, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return _Processes(dist.get_rank(), world, dev)


def _quiet(procs: _Processes) -> dict[str, bool]:
    """tqdm arguments: bars on rank 0 only, and not under ``TQDM_DISABLE=1`` (read now, not at import)."""
    return {"disable": not procs.main or os.environ.get("TQDM_DISABLE", "0") not in ("", "0")}


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaler needed: bf16 has fp32's exponent range); fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# ---------------------------------------------------------------- checkpoints and metrics
CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "ema", "epoch", "rng", "config", "classes")


def load_checkpoint(path: str | Path, argument: str = "--checkpoint") -> dict[str, Any]:
    """A checkpoint written by `train`, read with ``weights_only=True``; anything else is a clear error."""
    state = load_torch_file(path, argument)
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{argument} {path} is a plain state dict (weights only), not a checkpoint of vitlocal train; load it "
            f"with model.load_state_dict(torch.load(path)), or an official one with vitlocal.load_official"
        )
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(
            f"{argument} {path} is not a checkpoint of vitlocal train (or one of another version): it lacks "
            f"{missing}; pass the checkpoint.pt of a run folder (official weights load with vitlocal.load_official)"
        )
    return state


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``; weights of another architecture are a clear error."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # missing / unexpected keys or other shapes, listed by torch
        detail = str(err).strip().splitlines()[1:3]
        raise ValueError(
            f"{path}: its weights do not fit {type(model).__name__} ({' '.join(d.strip() for d in detail)[:300]}); "
            f"it was written by another version of vitlocal or for other --model-set settings"
        ) from err


def _check_model(name: str, img_size: int, model_args: dict[str, Any]) -> None:
    """Fail fast, before any data is decoded: an unknown model or config field, an img_size the model cannot take."""
    with torch.device("meta"):
        create_model(name, img_size=img_size, **model_args)


def _check_out(out: Path) -> None:
    """``--out`` must be a folder, or a path where one can be made."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(
                    f"--out {out}: {path} is a file, but --out names the run folder (checkpoint.pt, metrics.jsonl, "
                    f"config.json); choose another --out"
                )
            return


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _all_rng_states(procs: _Processes) -> list[dict[str, torch.Tensor]]:
    """Every process's RNG states (gathered to all; rank 0 writes them)."""
    mine = _rng_state(procs.device)
    if procs.world == 1:
        return [mine]
    states: list[Any] = [None] * procs.world
    dist.all_gather_object(states, mine)
    return states


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, world: int = 1, channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (%) over ``batches`` (summed over all processes).

    The sums stay on the device; the host reads them once, at the end.
    """
    model.eval()
    device = batches.device
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, top-1 hits, top-5 hits
    images = 0  # counted on the host: a batch's size is known without reading the device
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(x).float()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        sums += torch.stack(
            [F.cross_entropy(logits, y, reduction="sum"), (top[:, 0] == y).sum(), (top == y[:, None]).any(-1).sum()]
        ).double()
        images += len(y)
    totals = torch.cat([sums, torch.tensor([images], dtype=torch.float64).to(device)])
    if world > 1:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    if n == 0:
        raise ValueError(f"no validation image could be read ({batches.skipped} unreadable); check --data")
    return {"val_loss": loss / n, "val_acc1": 100 * top1 / n, "val_acc5": 100 * top5 / n}


# ---------------------------------------------------------------- training
def _train_epoch(
    step_model: nn.Module,
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    ema: Ema | None,
    recipe: Recipe,
    cfg: TrainConfig,
    steps: int,
    procs: _Processes,
    epoch: int,
) -> dict[str, float]:
    """``steps`` optimizer steps of ``cfg.accum_steps`` micro-batches each -> mean loss, img/s, seconds.

    Streamed data may run out a little early (a batch whose every image is unreadable is dropped); the epoch then
    ends after its last whole step. (Under DDP every process must drop the same number of batches, or the others
    wait for it: a whole unreadable batch is assumed not to happen there.)
    """
    step_model.train()
    loss_sum = torch.zeros((), device=procs.device)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, **_quiet(procs))
    start, done = time.perf_counter(), 0

    def mean_loss() -> float:
        mean = loss_sum.item() / done
        if not math.isfinite(mean):
            raise FloatingPointError(f"the training loss is {mean} at epoch {epoch + 1}; lower --lr")
        return mean

    for k, (x, target) in enumerate(batches):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        last = (k + 1) % cfg.accum_steps == 0
        # DDP all-reduces gradients only on the last micro-batch of an accumulation group
        sync = nullcontext() if last or procs.world == 1 else step_model.no_sync()
        with sync:
            with _autocast(procs.device):
                loss = soft_cross_entropy(step_model(x), target) / cfg.accum_steps
            loss.backward()
        loss_sum += loss.detach()
        if not last:
            continue
        if recipe.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if ema is not None:
            ema.update(model)
        bar.update()
        done += 1
        if done % 10 == 0:  # a host sync only every 10 steps
            bar.set_postfix(loss=f"{mean_loss():.3f}", lr=f"{schedule.lr_at(schedule.steps):.2e}")
        if done == steps:
            break
    bar.close()
    optimizer.zero_grad(set_to_none=True)  # the gradients of an accumulation group the data did not complete
    if done == 0:
        raise ValueError(
            f"epoch {epoch + 1}: no training batch could be read ({batches.skipped} unreadable images); check --data"
        )
    if procs.device.type == "cuda":
        torch.cuda.synchronize(procs.device)
    seconds = time.perf_counter() - start
    if procs.world > 1:
        dist.all_reduce(loss_sum)
        loss_sum /= procs.world
    return {"train_loss": mean_loss(), "img_per_s": done * cfg.batch_size / seconds, "train_seconds": seconds}


def train(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Run (or resume) ``cfg`` and return its metrics, one dict per epoch (also in ``cfg.out/metrics.jsonl``).

    Under ``torchrun`` every process calls this; rank 0 prints, checkpoints and writes the metrics.
    """
    procs = _start_processes(cfg.device)
    try:
        metrics = _train(cfg, procs)
        if procs.world > 1:
            # No process tears the group down while another still works (rank 0 writes the last checkpoint
            # after the last collective): a gloo peer whose connections close under it can abort the process.
            dist.barrier()
        return metrics
    finally:
        if procs.world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, procs: _Processes) -> list[dict[str, Any]]:
    say = tqdm.write if procs.main else lambda *_: None
    if smoke_mode():
        cfg = _smoke(cfg, procs.world)
        say(f"smoke mode: {cfg.epochs} epochs of at most 2 steps, batch {cfg.batch_size}, data {cfg.data}")
    group = procs.world * cfg.accum_steps
    if cfg.batch_size % group:
        raise ValueError(
            f"--batch-size {cfg.batch_size} must be a multiple of processes x --accum-steps = {group}; "
            f"use {max(group, cfg.batch_size // group * group)}"
        )
    recipe = get_recipe(cfg.recipe or default_recipe(cfg.model), cfg.overrides)
    out = Path(cfg.out)
    _check_out(out)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    _check_model(cfg.model, cfg.img_size, cfg.model_args)
    data = build_data(
        cfg.data,
        cfg.img_size,
        cfg.batch_size // group,
        augment=recipe.augment,
        crop_pct=recipe.crop_pct,
        device=procs.device,
        seed=cfg.seed,
        rank=procs.rank,
        world=procs.world,
        workers=cfg.workers,
        in_memory=cfg.in_memory,
        limit=(cfg.limit_train, cfg.limit_val),
    )
    steps = len(data.train) // cfg.accum_steps
    if steps == 0:
        raise ValueError(f"--batch-size {cfg.batch_size} exceeds the {data.train.num_images} training images; lower it")
    # the same initial weights in every process (drop path draws nothing at initialisation)
    model_args = {**cfg.model_args, "drop_path_rate": recipe.drop_path}
    model = initial_model(cfg.model, data.num_classes, cfg.img_size, model_args, cfg.seed)
    torch.manual_seed(cfg.seed + procs.rank)  # but different drop-path draws
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if procs.world > 1 and procs.device.type == "cuda" and has_bn:  # SyncBN only where BatchNorm exists
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # (LocalViT, CvT); torch has no CPU SyncBN
    model.to(procs.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)

    peak = cfg.lr if cfg.lr is not None else recipe.base_lr * cfg.batch_size / 512
    scale = cfg.batch_size / 512 if recipe.scale_schedule_lr else 1.0
    optimizer = torch.optim.AdamW(
        param_groups(model, recipe.weight_decay), lr=peak, fused=True if procs.device.type == "cuda" else None
    )
    schedule = WarmupCosine(
        optimizer,
        peak,
        total_steps=cfg.epochs * steps,
        warmup_steps=round(recipe.warmup_epochs * steps),
        warmup_lr=recipe.warmup_lr * scale,
        min_lr=recipe.min_lr * scale,
    )
    ema = Ema(model, recipe.ema_decay) if recipe.ema_decay else None

    start, history = 0, []
    if cfg.resume and not checkpoint.exists():
        say(f"{out} holds no checkpoint to resume from: starting at epoch 1")
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, "--resume:")
        changed = [k for k in _RUN_IDENTITY if state["config"].get(k, {}) != asdict(cfg)[k]]
        if changed:
            raise ValueError(f"--resume: {out} was trained with other {changed}; keep them or choose another --out")
        _load_weights(model, state["model"], checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if len(state["rng"]) != procs.world:  # each process resumes its own random streams
            raise ValueError(
                f"--resume: {out} was trained with {len(state['rng'])} processes, not {procs.world}; "
                f"resume with --nproc_per_node={len(state['rng'])} (an exact resume needs the same process count)"
            )
        rng = state["rng"][procs.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], procs.device)
        start = state["epoch"]
        # the metrics travel inside the checkpoint: metrics.jsonl may lag it by an epoch after a crash
        history = state["history"] if "history" in state else [r for r in read_metrics(out) if r["epoch"] <= start]
        if procs.main:
            write_jsonl(out / "metrics.jsonl", history)
            for leftover in out.glob("*.tmp[0-9]*"):  # a write that a crash cut short
                leftover.unlink()
        say(f"resumed {out} after epoch {start}")
    elif procs.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(
            out / "config.json", json.dumps({"config": asdict(cfg), "recipe": asdict(recipe)}, indent=1)
        )

    step_model = model
    if procs.world > 1:
        devices = [procs.device.index] if procs.device.type == "cuda" else None
        step_model = DistributedDataParallel(
            model,
            device_ids=devices,
            gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets (no copy in and out of them)
            # buffers are the same in every process (constants, or SyncBN's statistics of the global batch), so
            # none is broadcast before each forward; without SyncBN (CPU), BatchNorm's running statistics would
            # drift apart per process: there rank 0's are broadcast, as by default
            broadcast_buffers=has_bn and procs.device.type != "cuda",
            # every model of the zoo uses the same parameters at every step (drop path masks samples, it never
            # skips a branch), so the graph is static; but torch's reducer asserts when no_sync() meets a static
            # graph (pytorch #143580): with gradient accumulation the graph is left dynamic
            static_graph=cfg.accum_steps == 1,
        )
    if procs.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv kernels once
    # compiled once: evaluation mode (and the last, smaller validation batch) are new graphs the first time only
    compiled = torch.compile if cfg.compile else lambda module: module
    step_model, eval_model = compiled(step_model), compiled(model)
    eval_ema = compiled(ema.module) if ema is not None else None

    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    epoch = saved = start  # `saved`: the epoch the checkpoint on disk holds
    try:
        for epoch in tqdm(range(start, end), desc="epochs", initial=start, total=cfg.epochs, **_quiet(procs)):
            data.train.set_epoch(epoch)
            t0 = time.perf_counter()
            trained = _train_epoch(
                step_model, model, data.train, optimizer, schedule, ema, recipe, cfg, steps, procs, epoch
            )
            row: dict[str, Any] = {"epoch": epoch + 1, "step": schedule.steps, **trained}
            row["lr"] = schedule.lr_at(schedule.steps - 1)
            row.update(evaluate(eval_model, data.val, procs.world, cfg.channels_last))
            if eval_ema is not None:
                ema_metrics = evaluate(eval_ema, data.val, procs.world, cfg.channels_last)
                row.update({f"ema_{k}": v for k, v in ema_metrics.items()})
            row["skipped"] = data.train.skipped + data.val.skipped  # unreadable images met this epoch
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch + 1,
                "rng": _all_rng_states(procs),
                "config": asdict(cfg),
                "classes": data.classes,
            }
            row["epoch_seconds"] = time.perf_counter() - t0
            history.append(row)
            state["history"] = history  # the run record lives in the checkpoint; metrics.jsonl is its copy
            if procs.main:
                save_atomically(state, checkpoint)
                saved = epoch + 1
                write_jsonl(out / "metrics.jsonl", history)
                skipped = f"  skipped {row['skipped']} unreadable image(s)" if row["skipped"] else ""
                say(
                    f"epoch {epoch + 1}/{cfg.epochs}  lr {row['lr']:.2e}  train {row['train_loss']:.3f}  "
                    f"val {row['val_loss']:.3f}  acc1 {row['val_acc1']:.1f}%  acc5 {row['val_acc5']:.1f}%  "
                    f"{row['img_per_s']:.0f} img/s  {row['epoch_seconds']:.1f} s{skipped}"
                )
    except KeyboardInterrupt:
        if procs.main:
            where = f"the last checkpoint is {checkpoint} (epoch {saved})" if saved else "no checkpoint was written yet"
            print(f"interrupted in epoch {epoch + 1}; {where}; continue with --resume", file=sys.stderr)
        raise
    return history


# ---------------------------------------------------------------- evaluation of a run, and its model
def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    model: str | None = None,
    img_size: int | None = None,
    batch_size: int = 256,
    device: str | None = None,
    use_ema: bool = False,
) -> dict[str, float]:
    """Evaluate a training checkpoint (its model, or the EMA weights) on ``data``'s validation split."""
    check_positive(batch_size, "--batch-size")
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    name, size = model or cfg["model"], img_size or cfg["img_size"]
    if model is not None and model != cfg["model"]:
        raise ValueError(f"{checkpoint} holds a {cfg['model']}, not a {model}; pass --model {cfg['model']}")
    if use_ema and state["ema"] is None:
        raise ValueError(f"{checkpoint} has no EMA weights (its recipe had ema_decay=None); evaluate without --ema")
    dev = _pick_device(device)
    recipe = get_recipe(cfg["recipe"] or default_recipe(name), cfg["overrides"])
    _check_model(name, size, cfg.get("model_args", {}))
    source = build_data(data, size, batch_size, crop_pct=recipe.crop_pct, device=dev, limit=(1, None))
    trained = state["classes"]
    if len(source.classes) != len(trained):
        raise ValueError(
            f"{checkpoint} was trained on {len(trained)} classes, but --data {data} has {len(source.classes)}; "
            f"evaluate it on data with its classes ({', '.join(trained[:5])}{' ...' if len(trained) > 5 else ''})"
        )
    if source.classes != trained:
        warnings.warn(
            f"--data {data} names its classes differently from {checkpoint}'s; label i is compared to class i",
            stacklevel=2,
        )
    return evaluate(_model_from(state, checkpoint, use_ema, img_size=size).to(dev), source.val)


def load_model(run: str | Path, ema: bool = False, initial: bool = False) -> nn.Module:
    """The trained model of a run folder (or of its ``checkpoint.pt``), in eval mode on the CPU.

    Built as the run built it (model, image size, model config changes, number of classes), then given the
    checkpoint's weights, or its EMA weights with ``ema=True``. ``initial=True``: the weights the run started
    from instead (its seed's initialisation, drawn without disturbing the caller's random state).
    """
    path = Path(run)
    path = path / "checkpoint.pt" if path.is_dir() else path
    state = load_checkpoint(path, argument="run")
    if ema and state["ema"] is None:
        raise ValueError(f"{path} has no EMA weights (its recipe had ema_decay=None); load it with ema=False")
    return _model_from(state, path, ema, initial=initial)


def initial_model(name: str, num_classes: int, img_size: int, model_args: dict[str, Any], seed: int) -> nn.Module:
    """The model `train` builds for these settings, with the initial weights its ``seed`` draws; the caller's
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, num_classes=num_classes, img_size=img_size, **model_args)


def _model_from(
    state: dict[str, Any], path: str | Path, ema: bool, initial: bool = False, img_size: int | None = None
) -> nn.Module:
    cfg = state["config"]
    net = initial_model(
        cfg["model"], len(state["classes"]), img_size or cfg["img_size"], cfg.get("model_args", {}), cfg["seed"]
    )
    if not initial:
        _load_weights(net, state["ema"]["module"] if ema else state["model"], path)
    return net.eval()
