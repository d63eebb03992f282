"""Every GPU figure the project owes, from one command with a time cap per section.

    python -m vitlocal.gpu_report --data imagenette:PATH --out results/gpu/h200.json

    throughput   one training step (forward, backward, AdamW; bf16 autocast) in img/s and peak memory, ours beside
                 timm's implementation of the same model in the same process, eager and ``torch.compile``; model
                 FLOP utilisation = 6 x forward MACs x img/s over the GPU's dense bf16 peak (the datasheet's, and
                 a bf16 matmul measured here as the practical ceiling)
    slide        Slide attention's neighbourhood at Slide-Swin-T's stage-1 size, forward and forward + backward, as
                 ratios measured side by side: shift and ``F.unfold`` vs im2col; the deformed shift as training
                 runs it (one conv) vs the official two convs
    timm_weights timm's random weights of ``deit_tiny``, ``crossvit_tiny``, ``swin_tiny`` loaded into ours with
                 `vitlocal.load_official`: the largest logit difference ours vs timm (CPU, float64)
    loading      the data pipeline in img/s (decoded once into device memory, augmented on the device; and
                 streamed by worker processes) against the fastest model's appetite from ``throughput``
    accuracy     ``deit_tiny`` and ``localvit_tiny`` trained on Imagenette 128 px: val top-1 and minutes

Every section has its own time cap and writes its part of the results file (JSON, written atomically) as soon
as it finishes, so a time-out loses only the section it interrupts. What cannot run here is skipped and the
file says why (timm needs torchvision, which CPU-only machines lack). ``--tiny`` runs every section at toy sizes
(the CPU presets, small batches, synthetic data): a dry run of the code, never a result.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vitlocal.bench import count_macs, measure_loading, measure_training, time_calls, timm_model
from vitlocal.data import build_data, parse_source
from vitlocal.models import create_model
from vitlocal.models.official import detect_layout, load_official
from vitlocal.recipes import RECIPES
from vitlocal.records import write_text_atomically
from vitlocal.slide import DeformedShift, im2col, shift
from vitlocal.train import TrainConfig, train

__all__ = ["SECTIONS", "gpu_report", "summary", "main"]

# dense bf16 tensor-core peak of an H100 / H200 SXM by NVIDIA's datasheet (989.4 TFLOP/s)
DATASHEET_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}
TIMM_COMPARED = ("deit_tiny", "deit_small", "crossvit_tiny", "swin_tiny")
OURS_ONLY = ("localvit_tiny", "cvt_13", "cloformer_xxs", "slide_swin_tiny")
TIMM_WEIGHTS = ("deit_tiny", "crossvit_tiny", "swin_tiny")  # the families whose timm layout load_official reads
NATIVE_SIZE = {"crossvit_tiny": 240}  # every other model: 224
TINY_MODEL = {"deit_tiny": "deit_nano", "deit_small": "deit_nano", "localvit_tiny": "localvit_nano"}
TINY_MODEL |= {"crossvit_tiny": "crossvit_nano", "swin_tiny": "swin_nano", "cvt_13": "cvt_nano"}
TINY_MODEL |= {"cloformer_xxs": "cloformer_nano", "slide_swin_tiny": "slide_swin_nano"}


def measured_peak_tflops(device: torch.device, n: int = 8192) -> float | None:
    """TFLOP/s of a dense bf16 ``n x n x n`` matmul on ``device`` (the practical ceiling); None on a CPU."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / time_calls(lambda: a @ b, 20, 2, device) / 20 / 1e12


def section_throughput(ctx: dict[str, Any]) -> dict[str, Any]:
    device, tiny, batch = ctx["device"], ctx["tiny"], ctx["batch_size"]
    peak_sheet = next((v for k, v in DATASHEET_PEAK_TFLOPS.items() if k in ctx["machine"]), None)
    peak_measured = measured_peak_tflops(device)
    rows, notes = [], []
    names = (TIMM_COMPARED[0], OURS_ONLY[0]) if tiny else TIMM_COMPARED + OURS_ONLY
    for name in names:
        if time.perf_counter() > ctx["deadline"]:
            notes.append(f"{name} and later: skipped, the section's time cap was reached")
            break
        ours_name = TINY_MODEL[name] if tiny else name
        ours = create_model(ours_name, drop_path_rate=0.0)
        size = ours.config.img_size if tiny else NATIVE_SIZE.get(name, 224)
        macs = count_macs(ours, size)
        candidates = [("vitlocal", ours)]
        if name in TIMM_COMPARED:
            theirs, label = (None, "timm is not compared in a tiny run") if tiny else timm_model(name, size)
            if theirs is None:
                if f"no timm column: {label}" not in notes:
                    notes.append(f"no timm column: {label}")
            else:
                candidates.append((f"timm {label}", theirs))
        for impl, net in candidates:
            for compiled in ctx["compile_modes"]:
                r = measure_training(net, size, batch, steps=ctx["steps"], device=device, compile=compiled)
                flops = 6 * macs * r["img_per_s"]  # training ~ 3 x forward, 2 FLOPs per MAC
                rows.append(
                    {
                        "model": name if not tiny else ours_name,
                        "implementation": impl,
                        "compiled": compiled,
                        "img_size": size,
                        "batch_size": batch,
                        "gmacs": round(macs / 1e9, 4),
                        "img_per_s": round(r["img_per_s"], 2),
                        "peak_mem_gib": r["peak_mem_gib"] and round(r["peak_mem_gib"], 2),
                        "tflops": round(flops / 1e12, 2),
                        "mfu_datasheet": peak_sheet and round(flops / 1e12 / peak_sheet, 4),
                        "mfu_measured": peak_measured and round(flops / 1e12 / peak_measured, 4),
                    }
                )
            del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "peak_tflops_datasheet": peak_sheet,
        "peak_tflops_measured": peak_measured and round(peak_measured, 1),
        "rows": rows,
        "notes": notes,
    }


def section_slide(ctx: dict[str, Any]) -> dict[str, Any]:
    """Slide-Swin-T's stage-1 neighbourhood (56 x 56, 3 heads x 32 channels as the model feeds them, heads on the
    batch axis; k = 3), forward and forward + backward with a dense upstream gradient as in training: the gathers
    shift, ``F.unfold`` against im2col, and the deformed shift as the model trains it (one conv of the summed
    weights) against the official two convs."""
    device, tiny, steps = ctx["device"], ctx["tiny"], ctx["steps"]
    batch, heads, d, side, k = (2, 2, 4, 14, 3) if tiny else (ctx["batch_size"] // 4, 3, 32, 56, 3)
    x = torch.randn(batch * heads, d, side, side, device=device, requires_grad=True)
    deformed = DeformedShift(d, k).to(device)
    ops = {  # name: (op, the op it is compared with)
        "im2col": (lambda t: im2col(t, k), "im2col"),
        "shift": (lambda t: shift(t, k), "im2col"),
        "unfold": (lambda t: F.unfold(t, k, padding=k // 2), "im2col"),
        "deformed shift, two convs (official)": (lambda t: deformed.onehot(t) + deformed.deform(t), None),
        "deformed shift, one conv (training)": (deformed, "deformed shift, two convs (official)"),
    }
    rows = {}
    for name, (op, baseline) in ops.items():
        grad = torch.randn_like(op(x.detach()))
        forward = time_calls(lambda op=op: op(x.detach()), steps, 2, device) / steps
        fwd_bwd = time_calls(lambda op=op, grad=grad: op(x).backward(grad), steps, 2, device) / steps
        rows[name] = {"op": name, "forward_ms": round(forward * 1e3, 4), "fwd_bwd_ms": round(fwd_bwd * 1e3, 4)}
        rows[name]["baseline"] = baseline
    for r in rows.values():
        base = rows[r["baseline"] or r["op"]]
        r["forward_speedup"] = round(base["forward_ms"] / r["forward_ms"], 3)
        r["fwd_bwd_speedup"] = round(base["fwd_bwd_ms"] / r["fwd_bwd_ms"], 3)
    return {"shape": [batch * heads, d, side, side], "kernel_size": k, "rows": list(rows.values())}


def section_timm_weights(ctx: dict[str, Any]) -> dict[str, Any]:
    """timm's weights loaded into ours through `load_official`: the largest logit difference, ours vs timm.

    On the CPU in float64 (exact: no TF32, no bf16), two random images at the model's native size. Every timm
    parameter is its initialisation plus noise (std 0.02), so no weight stays at 0 or 1 and a swapped pair of
    names would show. Full-size models in a ``--tiny`` run too: timm's names are those of the real models.
    """
    rows, notes = [], []
    for name in TIMM_WEIGHTS:
        if time.perf_counter() > ctx["deadline"]:
            notes.append(f"{name} and later: skipped, the section's time cap was reached")
            break
        size = NATIVE_SIZE.get(name, 224)
        theirs, label = timm_model(name, size)
        if theirs is None:
            notes.append(f"skipped: {label}")
            break
        torch.manual_seed(0)
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(0.02 * torch.randn_like(p))
        state = theirs.state_dict()
        ours = load_official(create_model(name, drop_path_rate=0.0), state)
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            diff = (ours.double().eval()(x) - theirs.double().eval()(x)).abs().max().item()
        layout = detect_layout(ours, state).name
        rows.append({"model": name, "timm_model": label, "layout": layout, "max_abs_diff": diff, "match": diff < 1e-9})
    return {"device": "cpu", "dtype": "float64", "rows": rows, "notes": notes}


def section_loading(ctx: dict[str, Any]) -> dict[str, Any]:
    device, tiny = ctx["device"], ctx["tiny"]
    size, batch = (32, 16) if tiny else (128, ctx["batch_size"])
    if parse_source(ctx["data"])[0] == "synthetic":  # generated in memory: nothing to stream
        streamed = {}
    else:
        streamed = measure_loading(ctx["data"], size, batch, workers=ctx["workers"], steps=ctx["steps"])

    data = build_data(ctx["data"], size, batch, augment=RECIPES["deit"].augment, device=device, in_memory=True)
    batches = iter(data.train)
    steps = min(ctx["steps"], len(data.train) - 3)
    seconds = time_calls(lambda: next(batches), steps, 2, device) / steps
    appetite = max((r["img_per_s"] for r in ctx["done"].get("throughput", {}).get("rows", [])), default=None)
    in_memory = batch / seconds
    return {
        "img_size": size,
        "batch_size": batch,
        "in_memory_augmented_img_per_s": round(in_memory, 1),
        "streamed": {k: round(v, 1) for k, v in streamed.items()},
        "fastest_model_img_per_s": appetite,
        "in_memory_vs_appetite": appetite and round(in_memory / appetite, 2),
    }


def section_accuracy(ctx: dict[str, Any]) -> dict[str, Any]:
    rows, notes = [], []
    for name in ("deit_tiny", "localvit_tiny"):
        if time.perf_counter() > ctx["deadline"]:
            notes.append(f"{name}: skipped, the section's time cap was reached")
            continue
        model = TINY_MODEL[name] if ctx["tiny"] else name
        cfg = TrainConfig(
            model=model,
            data=ctx["data"],
            epochs=ctx["accuracy_epochs"],
            batch_size=ctx["batch_size"],
            img_size=32 if ctx["tiny"] else 128,
            out=str(Path(ctx["runs"]) / model),
            device=str(ctx["device"]),
            recipe="deit",
            overrides={"ema_decay": None},
            compile=ctx["device"].type == "cuda",
            limit_train=16 if ctx["tiny"] else None,
            limit_val=16 if ctx["tiny"] else None,
        )
        start = time.perf_counter()
        history = train(cfg)
        rows.append(
            {
                "model": model,
                "img_size": cfg.img_size,
                "epochs": len(history),
                "best_acc1": round(max(r["val_acc1"] for r in history), 2),
                "final_acc1": round(history[-1]["val_acc1"], 2),
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "curve": [round(r["val_acc1"], 2) for r in history],
            }
        )
    return {"recipe": "deit without EMA", "rows": rows, "notes": notes}


SECTIONS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], float]] = {
    # seconds each section may start new work for: 500 in all, so that with the last item of each section
    # running past its cap the report stays within 9 minutes
    "throughput": (section_throughput, 210.0),
    "slide": (section_slide, 25.0),
    "timm_weights": (section_timm_weights, 25.0),
    "loading": (section_loading, 40.0),
    "accuracy": (section_accuracy, 200.0),
}


def gpu_report(
    out: str | Path,
    data: str,
    device: str | None = None,
    tiny: bool = False,
    sections: Sequence[str] = tuple(SECTIONS),
    batch_size: int = 256,
    steps: int = 20,
    compile: bool = True,
    accuracy_epochs: int = 30,
    workers: int = 8,
    runs: str | Path = "runs/gpu-report",
    command: str = "",
) -> dict[str, Any]:
    """Run ``sections`` in order, writing ``out`` (JSON) after each; returns the report."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"--sections {unknown} unknown; sections: {', '.join(SECTIONS)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})"
    report: dict[str, Any] = {
        "machine": machine,
        "torch": torch.__version__.split("+")[0],
        "date": date.today().isoformat(),
        "command": command,
        "tiny": tiny,
        "sections": {},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = {
        "device": dev,
        "machine": machine,
        "tiny": tiny,
        "data": data,
        "batch_size": 8 if tiny else batch_size,
        "steps": 3 if tiny else steps,
        "compile_modes": (False,) if tiny or not compile else (False, True),
        "accuracy_epochs": 1 if tiny else accuracy_epochs,
        "workers": 0 if tiny else workers,
        "runs": runs,
        "done": report["sections"],
    }
    for name in sections:
        fn, cap = SECTIONS[name]
        start = time.perf_counter()
        ctx["deadline"] = start + cap
        try:
            result = fn(ctx)
        except Exception as err:  # one section's failure must not lose the others
            result = {"error": f"{type(err).__name__}: {err}"}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["sections"][name] = result
        write_text_atomically(out, json.dumps(report, indent=1) + "\n")
    return report


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def summary(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per section."""
    s = report["sections"]
    lines = [f"{report['machine']}, torch {report['torch']}, {report['date']}: `{report['command']}`", ""]
    if "throughput" in s and "rows" in s["throughput"]:
        t = s["throughput"]
        lines += [
            f"**Training step** (bf16 autocast on CUDA, batch {t['rows'][0]['batch_size'] if t['rows'] else '-'}; "
            f"MFU of {t['peak_tflops_datasheet']} TFLOP/s datasheet / {t['peak_tflops_measured']} measured)",
            "",
            "| model | implementation | compiled | px | img/s | TFLOP/s | MFU (sheet) | MFU (measured) | GiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            lines.append(
                f"| {r['model']} | {r['implementation']} | {'yes' if r['compiled'] else 'no'} | {r['img_size']} | "
                f"{r['img_per_s']:.4g} | {r['tflops']:.3g} | {_pct(r['mfu_datasheet'])} | {_pct(r['mfu_measured'])} | "
                f"{r['peak_mem_gib'] if r['peak_mem_gib'] is not None else '-'} |"
            )
        lines += [f"- {note}" for note in t["notes"]] + [""]
    if "slide" in s and "rows" in s["slide"]:
        lines += [f"**Slide neighbourhood** {tuple(s['slide']['shape'])}, k = {s['slide']['kernel_size']}", ""]
        lines += [
            "| op | forward (ms) | fwd+bwd (ms) | compared with | fwd speed-up | fwd+bwd speed-up |",
            "|---|---|---|---|---|---|",
        ]
        for r in s["slide"]["rows"]:
            lines.append(
                f"| {r['op']} | {r['forward_ms']:.3g} | {r['fwd_bwd_ms']:.3g} | {r['baseline'] or '-'} | "
                f"{r['forward_speedup']:.2f}x | {r['fwd_bwd_speedup']:.2f}x |"
            )
        lines.append("")
    if "timm_weights" in s and "rows" in s["timm_weights"]:
        w = s["timm_weights"]
        lines += ["**timm's weights through load_official** (CPU, float64)", ""]
        lines += ["| model | timm model | layout read | max abs logit diff | match |", "|---|---|---|---|---|"]
        for r in w["rows"]:
            lines.append(
                f"| {r['model']} | {r['timm_model']} | {r['layout']} | {r['max_abs_diff']:.2g} | "
                f"{'yes' if r['match'] else 'NO'} |"
            )
        lines += [f"- {note}" for note in w["notes"]] + [""]
    if "loading" in s and "streamed" in s["loading"]:
        d = s["loading"]
        lines += [
            f"**Data** ({d['img_size']} px, batch {d['batch_size']}): in memory + device augmentation "
            f"{d['in_memory_augmented_img_per_s']:.4g} img/s; streamed {d['streamed']}; fastest model "
            f"{d['fastest_model_img_per_s']} img/s (ratio {d['in_memory_vs_appetite']})",
            "",
        ]
    if "accuracy" in s and "rows" in s["accuracy"]:
        lines += [
            "**Time to accuracy** (Imagenette)",
            "",
            "| model | px | epochs | best top-1 | final top-1 | minutes |",
        ]
        lines += ["|---|---|---|---|---|---|"]
        for r in s["accuracy"]["rows"]:
            lines.append(
                f"| {r['model']} | {r['img_size']} | {r['epochs']} | {r['best_acc1']} | {r['final_acc1']} | "
                f"{r['minutes']} |"
            )
        lines += [f"- {note}" for note in s["accuracy"]["notes"]]
    for name, part in s.items():
        if "error" in part:
            lines.append(f"- section {name} failed: {part['error']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlocal.gpu_report", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic", help="source for loading and accuracy (imagenette:PATH)")
    parser.add_argument("--out", default="results/gpu/report.json", help="results file (JSON)")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: a dry run of the code, not a result")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), help=f"of {', '.join(SECTIONS)}")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--accuracy-epochs", type=int, default=30)
    args = parser.parse_args(argv)
    report = gpu_report(
        args.out,
        args.data,
        args.device,
        args.tiny,
        args.sections,
        args.batch_size,
        compile=not args.no_compile,
        accuracy_epochs=args.accuracy_epochs,
        command=" ".join(["python -m vitlocal.gpu_report", *(sys.argv[1:] if argv is None else argv)]),
    )
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
