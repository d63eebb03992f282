"""Studies: several configurations trained the same way, side by side, with the papers' claims beside them.

A `Study` is a list of `Arm`s (a model and its config changes) and the settings they all share: the data,
resolution, epochs, batch, recipe and seeds. `run_study` trains every (arm, seed) with `vitlocal.train`, each
in its own resumable run folder, and appends one row per finished run to a results file (JSON lines, written
atomically). A run already in the results file with the same settings is not trained again, so a study that
was interrupted (or whose results file was committed) continues where it stopped.

    vitlocal study families --data imagenette:PATH --out runs/study-families --results results/cpu/families.jsonl

`compare` (the main job, ``vitlocal compare``) is the smallest study: a few models, one seed, no results file.
"""

from __future__ import annotations

import platform
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch

from vitlocal.bench import count_macs, count_params, measure_training
from vitlocal.data import parse_source
from vitlocal.data.sources import _sha256
from vitlocal.models import create_model
from vitlocal.records import read_jsonl, write_jsonl
from vitlocal.train import TrainConfig, smoke_mode, train

__all__ = ["Arm", "Study", "STUDIES", "run_study", "study_table", "measure_arms", "compare", "format_results"]


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: ``create_model(model, **model_args)``, shown as ``label``."""

    label: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    paper: str = ""  # what the paper reports for this configuration (PAPERS.md), "" when it has no figure


@dataclass(frozen=True)
class Study:
    """Arms trained the same way. ``claim`` is what the papers say the study should show."""

    name: str
    claim: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1)
    epochs: int = 12
    img_size: int = 32
    batch_size: int = 128
    recipe: str = "small"


# The CPU presets (``*_nano``) are NOT from the papers: each family's smallest shape that trains on two CPU cores
# at 32 px (an 8x8 token grid for the plain ViTs). Their MACs differ (4 to 23 M), so the tables report
# accuracy against MACs and minutes, never accuracy alone.
STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study(
            "families",
            "each family's locality mechanism helps a small ViT learn from few images (no paper compares them "
            "at one scale; their ImageNet top-1 is in `vitlocal zoo`)",
            (
                Arm("DeiT", "deit_nano", paper="DeiT-Ti 72.2"),
                Arm("LocalViT", "localvit_nano", paper="LocalViT-T 74.8"),
                Arm("CrossViT", "crossvit_nano", paper="CrossViT-Ti 73.4"),
                Arm("CvT", "cvt_nano", paper="CvT-13 81.6"),
                Arm("CloFormer", "cloformer_nano", paper="CloFormer-XXS 77.0"),
                Arm("Swin", "swin_nano", paper="Swin-T 81.3"),
                Arm("Slide-Swin", "slide_swin_nano", paper="Slide-Swin-T 82.3"),
            ),
        ),
        Study(
            "localvit",
            "LocalViT: a depthwise conv in the FFN helps (+2.6 on DeiT-T); h-swish beats ReLU6, and an SE gate "
            "helps more; locality matters most in the low layers",
            (
                Arm("DeiT (token-wise MLP)", "deit_nano", paper="DeiT-T 72.2"),
                Arm("no depthwise conv", "localvit_nano", {"depthwise": False, "gate": None}),
                Arm("DW conv, ReLU6", "localvit_nano", {"activation": "relu6", "gate": None}),
                Arm("DW conv, h-swish", "localvit_nano", {"gate": None}),
                Arm("DW conv, h-swish + SE", "localvit_nano", paper="LocalViT-T 74.8"),
                Arm("DW conv, h-swish + ECA", "localvit_nano", {"gate": "eca"}),
                Arm("low layers only (+SE)", "localvit_nano", {"locality_layers": "low"}),
                Arm("mid layers only (+SE)", "localvit_nano", {"locality_layers": "mid"}),
                Arm("high layers only (+SE)", "localvit_nano", {"locality_layers": "high"}),
            ),
        ),
        Study(
            "crossvit-fusion",
            "CrossViT (Table 4, CrossViT-S): cross-attention fusion is best (81.0), the others within 1 point of "
            "no fusion (80.0-80.3)",
            (
                Arm("no fusion", "crossvit_nano", {"fusion": "none"}, paper="80.2"),
                Arm("all-attention", "crossvit_nano", {"fusion": "all_attention"}, paper="80.0"),
                Arm("class token", "crossvit_nano", {"fusion": "class_token"}, paper="80.3"),
                Arm("pairwise", "crossvit_nano", {"fusion": "pairwise"}, paper="80.3"),
                Arm("cross-attention", "crossvit_nano", {"fusion": "cross_attention"}, paper="81.0"),
            ),
        ),
        Study(
            "cvt-pos",
            "CvT (Table 5, CvT-13): with convolutional projections the position embedding can go "
            "(81.5 with it, 81.6 without)",
            (
                Arm("no position embedding", "cvt_nano", paper="81.6"),
                Arm("position embedding", "cvt_nano", {"pos_embed": True}, paper="81.5"),
            ),
            seeds=(0, 1, 2),
        ),
    )
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _machine() -> str:
    """The CPU or GPU the runs use, in words (never a host name)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    threads = torch.get_num_threads()
    return f"{threads} CPU thread{'s' if threads > 1 else ''} ({model})"


def describe_data(data: str) -> dict[str, str]:
    """The source as a learner would name it (no folders) and, for a local archive, its sha256."""
    name, path = parse_source(data)
    if path is None:
        return {"data": name}
    file = Path(path)
    shown = file.name if name == "folder" else f"{name}:{file.name}"
    return {"data": shown} | ({"data_sha256": _sha256(file)} if file.is_file() else {})


def _settings(study: Study, epochs: int) -> dict[str, Any]:
    return {"epochs": epochs, "img_size": study.img_size, "batch_size": study.batch_size, "recipe": study.recipe}


def _result_row(
    study: Study, arm: Arm, seed: int, history: list[dict[str, Any]], settings: dict[str, Any], num_classes: int
) -> dict[str, Any]:
    net = create_model(arm.model, num_classes=num_classes, img_size=study.img_size, **arm.model_args)
    best = max(history, key=lambda r: r["val_acc1"])
    last = history[-1]
    return {
        "study": study.name,
        "arm": arm.label,
        "model": arm.model,
        "model_args": arm.model_args,
        "seed": seed,
        **settings,
        "classes": num_classes,
        "params_m": round(count_params(net) / 1e6, 4),
        "mmacs": round(count_macs(net, study.img_size) / 1e6, 2),
        "final_acc1": round(last["val_acc1"], 2),
        "final_acc5": round(last["val_acc5"], 2),
        "final_val_loss": round(last["val_loss"], 4),
        "best_acc1": round(best["val_acc1"], 2),
        "best_epoch": best["epoch"],
        "best_acc5": round(max(r["val_acc5"] for r in history), 2),
        "train_img_per_s": round(statistics.mean(r["img_per_s"] for r in history), 1),
        "minutes": round(sum(r["epoch_seconds"] for r in history) / 60, 2),
        "curve": [
            [r["epoch"], round(r["train_loss"], 4), round(r["val_loss"], 4), round(r["val_acc1"], 2)] for r in history
        ],
        "paper": arm.paper,
    }


def run_study(
    name: str,
    data: str,
    out: str | Path,
    results: str | Path | None = None,
    epochs: int | None = None,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    device: str | None = None,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Train every arm of study ``name`` for every seed and return the results rows (one per run).

    Run folders are ``out/<arm>-s<seed>``; the rows go to ``results`` (default ``out/results.jsonl``) as each run
    finishes. A row already there with the same arm, seed and settings is kept and its run skipped; an
    interrupted run resumes from its last checkpoint. ``epochs``, ``seeds`` and ``arms`` (labels) narrow the
    study. In smoke mode every run is tiny and the results go to ``out``, never to ``results``.
    """
    if name not in STUDIES:
        raise ValueError(f"study {name!r} is unknown; studies: {', '.join(STUDIES)}")
    study = STUDIES[name]
    epochs = study.epochs if epochs is None else epochs
    seeds = tuple(study.seeds if seeds is None else seeds)
    chosen = list(study.arms)
    if arms is not None:
        labels = {arm.label for arm in study.arms}
        unknown = [a for a in arms if a not in labels]
        if unknown:
            raise ValueError(f"--arms {unknown} not in study {name!r}; its arms: {sorted(labels)}")
        chosen = [arm for arm in study.arms if arm.label in arms]
    if epochs < 1 or not seeds:
        raise ValueError(f"a study needs --epochs >= 1 and at least one --seeds value (got {epochs}, {seeds})")
    out = Path(out)
    results = out / "results.jsonl" if results is None or smoke_mode() else Path(results)
    settings = _settings(study, epochs)
    provenance = {
        **describe_data(data),
        "machine": _machine(),
        "torch": torch.__version__.split("+")[0],
        "command": command or f"vitlocal study {name}",
    }
    rows = read_jsonl(results)

    def done(arm: Arm, seed: int) -> bool:
        return any(
            r["arm"] == arm.label and r["seed"] == seed and all(r[k] == v for k, v in settings.items()) for r in rows
        )

    for seed in seeds:
        for arm in chosen:
            if done(arm, seed):
                continue
            run = out / f"{_slug(arm.label)}-s{seed}"
            cfg = TrainConfig(
                model=arm.model,
                model_args=dict(arm.model_args),
                data=data,
                seed=seed,
                out=str(run),
                resume=True,
                device=device,
                **settings,
            )
            history = train(cfg)
            classes = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["classes"]
            row = _result_row(study, arm, seed, history, settings, len(classes))
            row |= provenance | {"date": date.today().isoformat()}
            rows.append(row)
            results.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(results, rows)
    return [r for r in rows if any(r["arm"] == a.label for a in chosen) and r["seed"] in seeds]


def study_table(rows: list[dict[str, Any]], throughput: list[dict[str, Any]] | None = None) -> str:
    """A Markdown table, one line per arm (in the order first seen): mean final top-1 over seeds with each seed's
    value, best top-1, params, MACs, training img/s and minutes per run, and the paper's figure.

    img/s and minutes are the runs' own unless ``throughput`` (`measure_arms` rows) gives the side-by-side
    figures: then minutes are the study's epochs of training at the side-by-side rate, evaluation excluded.
    """
    arms: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    speed = {r["arm"]: r for r in throughput or []}
    lines = [
        "| arm | model | params (M) | MMACs | seeds | final top-1 (%) | per seed | best top-1 (%) | "
        f"img/s{' (side by side)' if speed else ''} | min/run | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, group in arms.items():
        group = sorted(group, key=lambda r: r["seed"])
        finals = [r["final_acc1"] for r in group]
        spread = f" ± {(max(finals) - min(finals)) / 2:.1f}" if len(finals) > 1 else ""
        if label in speed:
            img_s = speed[label]["img_per_s"]
            minutes = group[0]["epochs"] * speed[label]["minutes_per_epoch_imagenette"]
        else:
            img_s = statistics.mean(r["train_img_per_s"] for r in group)
            minutes = statistics.mean(r["minutes"] for r in group)
        lines.append(
            f"| {label} | {group[0]['model']} | {group[0]['params_m']:.2f} | {group[0]['mmacs']:.1f} | {len(group)} | "
            f"{statistics.mean(finals):.1f}{spread} | {' / '.join(f'{a:.1f}' for a in finals)} | "
            f"{statistics.mean(r['best_acc1'] for r in group):.1f} | {img_s:.0f} | "
            f"{minutes:.1f} | {group[0]['paper'] or '-'} |"
        )
    if rows:
        chance = 100 / rows[0]["classes"]
        first = rows[0]
        lines.append(
            f"\n{first['data']}, {first['img_size']} px, {first['epochs']} epochs, batch {first['batch_size']}, "
            f"recipe `{first['recipe']}`; chance {chance:.0f}%. ± is half the range over seeds; min/run is "
            + (
                "the training time of one run at the side-by-side rate, evaluation excluded."
                if speed
                else "each run's own wall time, evaluation included."
            )
        )
    return "\n".join(lines)


def measure_arms(name: str, steps: int = 20, rounds: int = 3, device: str | None = None) -> list[dict[str, Any]]:
    """Training-step img/s of every arm of study ``name`` at its size and batch, measured side by side in one
    process on random data (forward, backward, AdamW): the fair cost axis, since the study's own runs may have
    shared the machine with other work. The arms take turns, ``rounds`` times ``steps`` steps each, and each
    keeps its median round, so a slow spell of the machine hits every arm alike instead of one. Also the
    minutes one epoch of Imagenette (9,469 training images) takes at that rate, evaluation excluded."""
    study = STUDIES[name]
    nets = {}
    for arm in study.arms:
        torch.manual_seed(0)
        nets[arm.label] = create_model(arm.model, num_classes=10, img_size=study.img_size, **arm.model_args)
    speeds: dict[str, list[float]] = {label: [] for label in nets}
    for _ in range(rounds):
        for label, net in nets.items():
            r = measure_training(net, study.img_size, study.batch_size, steps=steps, device=device)
            speeds[label].append(r["img_per_s"])
    rows = []
    for label, measured in speeds.items():
        img_per_s = statistics.median(measured)
        rows.append(
            {
                "study": name,
                "arm": label,
                "img_per_s": round(img_per_s, 1),
                "rounds": [round(v, 1) for v in measured],
                "minutes_per_epoch_imagenette": round(9469 / img_per_s / 60, 3),
                "threads": torch.get_num_threads(),
                "machine": _machine(),
                "torch": torch.__version__.split("+")[0],
                "date": date.today().isoformat(),
            }
        )
    return rows


# ---------------------------------------------------------------- the main job: a model and its twin
def compare(models: list[str], out: str | Path = "runs/compare", **config: Any) -> list[dict[str, Any]]:
    """Train and evaluate each model with the same `TrainConfig` settings (``config``), in ``out/<model>``.

    A finished run is not trained again (``resume``), so a second call only prints. Returns one row per
    model: parameters, MACs, the last epoch's validation metrics, training img/s and minutes.
    """
    rows = []
    for name in models:
        cfg = TrainConfig(model=name, out=str(Path(out) / name), resume=True, **config)
        history = train(cfg)
        classes = torch.load(Path(cfg.out) / "checkpoint.pt", map_location="cpu", weights_only=True)["classes"]
        net = create_model(name, num_classes=len(classes), img_size=cfg.img_size, **cfg.model_args)
        last = history[-1]
        rows.append(
            {
                "model": name,
                "classes": len(classes),
                "params_m": count_params(net) / 1e6,
                "gmacs": count_macs(net, cfg.img_size) / 1e9,
                "epochs": last["epoch"],
                "val_acc1": last["val_acc1"],
                "val_loss": last["val_loss"],
                "img_per_s": sum(r["img_per_s"] for r in history) / len(history),
                "minutes": sum(r["epoch_seconds"] for r in history) / 60,
            }
        )
    return rows


def format_results(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `compare` rows, and the accuracy of guessing."""
    lines = [
        "| model | params (M) | GMACs | epochs | val top-1 (%) | val loss | train img/s | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params_m']:.2f} | {r['gmacs']:.3f} | {r['epochs']} | {r['val_acc1']:.1f} | "
            f"{r['val_loss']:.3f} | {r['img_per_s']:.0f} | {r['minutes']:.1f} |"
        )
    chance = {f"{100 / r['classes']:.1f}%" for r in rows}
    return "\n".join(lines) + f"\n\nchance (guessing): {', '.join(sorted(chance))}"
