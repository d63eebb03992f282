"""Trained weights shipped inside the package: four CPU presets trained on 32 px Imagenette.

    model = vitlocal.load_trained("localvit_nano")   # checked against its sha256, in eval mode on the CPU

The lectures look inside trained models without training one: ``deit_nano``, ``localvit_nano``,
``crossvit_nano`` and ``cloformer_nano``, each trained 12 epochs on Imagenette down-scaled to 32x32 px with the
``small`` recipe, seed 0 (the runs of ``vitlocal study``). ``vitlocal/weights/manifest.json`` records, per
file: the model and its config changes, image size, class wnids in label order, the command that trained it,
its date, the run's final val top-1, the val top-1 the shipped file itself gives, the dtype and the sha256.

The files are made from the run folders by this module (needs the runs and the Imagenette archive):

    python -m vitlocal.pretrained --runs runs/study-families --data imagenette:PATH/imagenette2-128.tar.gz

Each file stays under `MAX_FILE_BYTES`: float32 where it fits, float16 where it would not (the model is cast
back to float32 on loading; the manifest's ``dtype`` and measured top-1 say what that costs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["WEIGHTS", "MAX_FILE_BYTES", "list_trained", "load_trained", "export_trained"]

WEIGHTS = Path(__file__).parent / "weights"  # the .safetensors files and manifest.json
MAX_FILE_BYTES = 2 * 2**20  # 2 MiB per file


def _manifest() -> dict[str, dict[str, Any]]:
    return json.loads((WEIGHTS / "manifest.json").read_text())


def list_trained() -> list[str]:
    """The names `load_trained` accepts: the model names of the shipped weights."""
    return sorted(_manifest())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model(entry: dict[str, Any]) -> nn.Module:
    """The model ``entry`` describes, with the initial weights its training started from."""
    from vitlocal.train import initial_model  # here: `import vitlocal` need not load the training engine

    return initial_model(entry["model"], len(entry["classes"]), entry["img_size"], entry["model_args"], entry["seed"])


def _model_with(entry: dict[str, Any], path: Path) -> nn.Module:
    """The model ``entry`` describes, given the float tensors of the safetensors file ``path`` (strictly)."""
    model = _model(entry)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing / unexpected keys or other shapes, listed by torch
        raise ValueError(
            f"{path} does not fit {entry['model']} with {entry['model_args']}: it was written by another version of "
            f"vitlocal; reinstall vitlocal so that the weights and the code match ({err})"
        ) from err
    return model.eval()


def load_trained(name: str, initial: bool = False) -> nn.Module:
    """The shipped trained ``name`` (e.g. ``"localvit_nano"``), in eval mode on the CPU, float32.

    Its file's sha256 is checked against the manifest first: a missing or damaged file is a clear error.
    The model takes ``(B, 3, 32, 32)`` images normalised with ImageNet's mean and std
    (`vitlocal.data.augment.normalize`) and returns ``(B, 10)`` logits over the manifest's ``classes``.
    ``initial=True``: the same model with the weights its training started from (its seed's initialisation,
    drawn as `vitlocal.train.train` draws it, without disturbing the caller's random state); no file is read.
    """
    manifest = _manifest()
    if name not in manifest:
        raise ValueError(f"name={name!r} has no shipped weights; choose one of {sorted(manifest)}")
    entry = manifest[name]
    if initial:
        return _model(entry).eval()
    path = WEIGHTS / entry["file"]
    fix = "reinstall vitlocal (pip install --force-reinstall vitlocal, or git checkout the file in a clone)"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the trained weights of {name} ship with vitlocal; {fix}")
    if (digest := _sha256(path)) != entry["sha256"]:
        raise ValueError(f"{path} is damaged: its sha256 is {digest}, the manifest records {entry['sha256']}; {fix}")
    return _model_with(entry, path)


# ------------------------------------------------------------------------------------------ making the files
@dataclass(frozen=True)
class Source:
    """Where one shipped model trained: its run folder (under ``--runs``) and the results row of its command."""

    run: str
    results: str  # the JSON-lines results file whose row records the command
    study: str
    arm: str


# The families study's seed-0 folders; DeiT's, LocalViT's and CrossViT's weights were trained by the localvit and
# crossvit-fusion studies (config.json's ``out`` says where), in exactly the configuration of these arms.
# CloFormer's seed-0 run was trained again for its weights (`vitlocal study families --seeds 0 --results
# runs/families-weights.jsonl`); it ended at the committed families row's 66.29% to the hundredth.
SOURCES = {
    "deit_nano": Source("deit-s0", "results/cpu/localvit.jsonl", "localvit", "DeiT (token-wise MLP)"),
    "localvit_nano": Source("localvit-s0", "results/cpu/localvit.jsonl", "localvit", "DW conv, h-swish + SE"),
    "crossvit_nano": Source("crossvit-s0", "results/cpu/crossvit-fusion.jsonl", "crossvit-fusion", "cross-attention"),
    "cloformer_nano": Source("cloformer-s0", "runs/families-weights.jsonl", "families", "CloFormer"),
}


def _row(source: Source, model: str, model_args: dict[str, Any], seed: int) -> dict[str, Any]:
    """The results row of ``source``'s arm with this model, config changes and seed."""
    from vitlocal.records import read_jsonl

    rows = [
        r
        for r in read_jsonl(Path(source.results))
        if (r["arm"], r["model"], r["model_args"], r["seed"]) == (source.arm, model, model_args, seed)
    ]
    if len(rows) != 1:
        raise ValueError(f"{source.results}: {len(rows)} rows of arm {source.arm!r}, {model}, seed {seed}; expected 1")
    return rows[0]


def export_trained(runs: str | Path, data: str, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write the shipped files of ``names`` (default: all of `SOURCES`) from the run folders under ``runs``,
    evaluate each file on ``data``'s validation split, and write the manifest. Returns the manifest."""
    from vitlocal.data import build_data
    from vitlocal.recipes import get_recipe
    from vitlocal.records import read_metrics
    from vitlocal.train import evaluate, load_checkpoint

    WEIGHTS.mkdir(exist_ok=True)
    manifest = _manifest() if (WEIGHTS / "manifest.json").exists() else {}
    vals = {}  # (img_size, crop_pct) -> the validation images, decoded once
    for name in names or list(SOURCES):
        source = SOURCES[name]
        run = Path(runs) / source.run
        state = load_checkpoint(run / "checkpoint.pt", argument="--runs")
        cfg = state["config"]
        if cfg["model"] != name:
            raise ValueError(f"{run} holds a {cfg['model']}, not a {name}")
        row = _row(source, name, cfg["model_args"], cfg["seed"])
        weights = {k: v.contiguous() for k, v in state["model"].items()}
        dtype = "float32"
        if sum(v.numel() * v.element_size() for v in weights.values()) > MAX_FILE_BYTES:
            dtype = "float16"
            weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
        path = WEIGHTS / f"{name}.safetensors"
        save_file(weights, path)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, more than {MAX_FILE_BYTES} even in float16")
        entry = {
            "file": path.name,
            "model": name,
            "model_args": cfg["model_args"],
            "img_size": cfg["img_size"],
            "classes": state["classes"],
            "dtype": dtype,
            "dtype_note": "float32 as trained"
            if dtype == "float32"
            else "float16: float32 would exceed 2 MiB; cast back to float32 on loading",
            "study": source.study,
            "arm": source.arm,
            "command": row["command"],
            "date": row["date"],
            "epochs": cfg["epochs"],
            "recipe": cfg["recipe"],
            "seed": cfg["seed"],
            "trained_in": cfg["out"],
            "run_val_acc1": round(read_metrics(run)[-1]["val_acc1"], 2),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
        crop_pct = get_recipe(cfg["recipe"], cfg["overrides"]).crop_pct
        if (cfg["img_size"], crop_pct) not in vals:  # the runs' evaluation images, prepared as the runs did
            vals[cfg["img_size"], crop_pct] = build_data(data, cfg["img_size"], 256, crop_pct=crop_pct, limit=(1, None))
        val = vals[cfg["img_size"], crop_pct]
        if val.classes != entry["classes"]:
            raise ValueError(f"--data {data} has classes {val.classes}, the run trained on {entry['classes']}")
        entry["shipped_val_acc1"] = round(evaluate(_model_with(entry, path), val.val)["val_acc1"], 2)
        entry["shipped_val_data"] = data.split(":")[0] + ":" + Path(data.split(":", 1)[-1]).name
        manifest[name] = entry
        print(
            f"{name}: {entry['bytes']:,} bytes {dtype}; val top-1 run {entry['run_val_acc1']}, file "
            f"{entry['shipped_val_acc1']}"
        )
    (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlocal.pretrained", description=export_trained.__doc__)
    parser.add_argument("--runs", required=True, help="folder of the run folders named in SOURCES")
    parser.add_argument("--data", required=True, help="the runs' images, e.g. imagenette:PATH/imagenette2-128.tar.gz")
    parser.add_argument("--names", nargs="*", choices=list(SOURCES), help="default: all")
    args = parser.parse_args(argv)
    export_trained(args.runs, args.data, args.names)


if __name__ == "__main__":
    main()
