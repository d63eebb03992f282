"""The ``vitlocal`` command (``vitlocal --help``; also ``python -m vitlocal``)."""

from __future__ import annotations

import argparse
import ast
import math
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

import vitlocal
from vitlocal.check import add_check_parser


def _checked(kind: Callable[[str], Any], valid: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` when ``valid``; else argparse's error naming the option, the value and
    ``what`` would work (exit code 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


POSITIVE_INT = _checked(int, lambda v: v >= 1, "a whole number >= 1")
COUNT = _checked(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE = _checked(float, lambda v: 0 < v < math.inf, "a positive number, e.g. 1e-3")
FRACTION = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _info(args: argparse.Namespace) -> int:
    """Print the versions and the compute device the library will use."""
    import einops
    import numpy
    import torch

    print(f"vitlocal {vitlocal.__version__}")
    print(f"python   {platform.python_version()}")
    print(f"torch    {torch.__version__}")
    print(f"einops   {einops.__version__}")
    print(f"numpy    {numpy.__version__}")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"device   cuda ({torch.cuda.device_count()}: {names})")
    else:
        print(f"device   cpu ({torch.get_num_threads()} threads)")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    """Print every model's parameters and GMACs beside the papers' figures (a Markdown table)."""
    from vitlocal.bench import format_zoo_table, zoo_rows
    from vitlocal.models import list_models
    from vitlocal.models.papers import PUBLISHED

    names = list_models(args.pattern)
    if not args.all:  # the paper models, in the order of the papers' table
        names = [n for n in PUBLISHED if n in names]
    if not names:
        print(f"no model matches {args.pattern!r}; see `vitlocal zoo --all`", file=sys.stderr)
        return 2
    print(format_zoo_table(zoo_rows(names)))
    return 0


def _parse_settings(items: Sequence[str], flag: str = "--set", strings: bool = False) -> dict[str, Any]:
    """``["mixup=0", "crop_scale=(0.35, 1)"]`` -> ``{"mixup": 0, "crop_scale": (0.35, 1)}`` (Python literals).

    With ``strings`` a value that is no literal stays a string (``--model-set gate=eca``); else it is an error.
    """
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} {item!r} must look like KEY=VALUE, e.g. {flag} mixup=0")
        try:  # Python literals only (numbers, strings, tuples, lists, dicts, True, None): it never runs code
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if not strings:
                raise ValueError(
                    f"{flag} {item}: {value!r} is not a value; recipe settings are Python literals (numbers, "
                    f"True/False/None, tuples), e.g. {flag} mixup=0.0 or {flag} crop_scale=(0.35,1)"
                ) from None
            settings[key] = value
    return settings


def _train_config(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The `TrainConfig` fields given on the command line."""
    overrides = _parse_settings(args.set)
    if args.drop_path is not None:
        overrides["drop_path"] = args.drop_path
    if args.ema is not None:
        overrides["ema_decay"] = args.ema or None
    names = ("data", "epochs", "batch_size", "img_size", "device", "seed", "compile", "recipe", "lr")
    names += ("accum_steps", "workers", "in_memory", "channels_last", "stop_after", "limit_train", "limit_val")
    model_args = _parse_settings(args.model_set, "--model-set", strings=True)
    return {name: getattr(args, name) for name in names} | {"overrides": overrides, "model_args": model_args} | extra


def _train(args: argparse.Namespace) -> int:
    """Train one model; under torchrun every process runs this."""
    from vitlocal.train import TrainConfig, train

    train(TrainConfig(model=args.model, out=args.out, resume=args.resume, **_train_config(args)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    """The main job: train and evaluate models side by side with the same settings, print a table."""
    from vitlocal.study import compare, format_results

    rows = compare(args.models, out=args.out, **_train_config(args))
    print(format_results(rows))
    return 0


def _study(args: argparse.Namespace) -> int:
    """Train every arm of a study (resuming what was done), write the results file, print the table."""
    from vitlocal.records import write_jsonl
    from vitlocal.study import STUDIES, describe_data, measure_arms, run_study, study_table

    if args.list or args.name is None:
        for study in STUDIES.values():
            print(
                f"{study.name}: {len(study.arms)} arms x {len(study.seeds)} seeds, {study.epochs} epochs at "
                f"{study.img_size} px. {study.claim}"
            )
        return 0
    if args.throughput:
        if args.name not in STUDIES:
            raise ValueError(f"study {args.name!r} is unknown; studies: {', '.join(STUDIES)}")
        rows = measure_arms(args.name, device=args.device)
        write_jsonl(args.throughput, rows)
        print("\n".join(f"{r['arm']:28s} {r['img_per_s']:8.1f} img/s" for r in rows))
        return 0
    given = [f"--{k.replace('_', '-')} {v}" for k, v in (("epochs", args.epochs), ("device", args.device)) if v]
    if args.seeds:
        given.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.results:
        given.append(f"--results {args.results}")
    if args.arms:
        given.append("--arms " + shlex.join(args.arms))  # labels hold spaces: quoted, as typed
    command = " ".join(
        [f"vitlocal study {args.name} --data {describe_data(args.data)['data']} --out {args.out}", *given]
    )
    rows = run_study(
        args.name, args.data, args.out, args.results, args.epochs, args.seeds, args.arms, args.device, command
    )
    print(study_table(rows))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a source's validation split."""
    from vitlocal.train import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, args.data, args.model, args.img_size, args.batch_size, args.device, args.ema
    )
    print(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Training-step throughput and peak memory, ours beside timm's; or the data-loading throughput."""
    from vitlocal.bench import TIMM_NAMES, count_params, format_rate, measure_loading, measure_training, timm_model
    from vitlocal.models import create_model

    if args.data is not None:
        result = measure_loading(
            args.data, args.img_size or 224, args.batch_size, args.workers, args.steps, args.recipe
        )
        print(" ".join(f"{k} {format_rate(v)}" for k, v in result.items()))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = "bf16 autocast" if device.startswith("cuda") else "fp32"
    size = f"{args.img_size} px" if args.img_size else "each model at its native size"
    print(
        f"training step (forward, backward, AdamW), batch {args.batch_size}, {size}, {device}, {precision}, "
        "drop path 0 for every implementation"
    )
    print("| model | px | implementation | compiled | params (M) | img/s | vs timm | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    skipped = set()
    for name in args.model:
        ours = create_model(name, img_size=args.img_size, drop_path_rate=0.0) if args.img_size else None
        ours = ours or create_model(name, drop_path_rate=0.0)
        img_size = ours.config.img_size
        candidates = [(ours, "vitlocal")]
        if not args.no_timm and name in TIMM_NAMES:
            theirs, label = timm_model(name, img_size)
            if theirs is None:
                skipped.add(label)
            else:
                candidates.append((theirs, f"timm {label}"))
        for compiled in (False, True) if args.compile else (False,):
            rates = []
            for net, impl in candidates:
                r = measure_training(net, img_size, args.batch_size, args.steps, device=device, compile=compiled)
                rates.append((impl, net, r))
            timm_rate = rates[1][2]["img_per_s"] if len(rates) > 1 else None
            for impl, net, r in rates:
                memory = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
                ratio = f"{r['img_per_s'] / timm_rate:.2f}x" if timm_rate else "-"
                print(
                    f"| {name} | {img_size} | {impl} | {'yes' if compiled else 'no'} | {count_params(net) / 1e6:.2f} | "
                    f"{format_rate(r['img_per_s'])} | {ratio} | {memory} |"
                )
    for reason in sorted(skipped):
        print(f"no timm column: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitlocal",
        description="Locality in vision transformers: mechanisms, models and training.",
    )
    parser.add_argument("--version", action="version", version=f"vitlocal {vitlocal.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print versions and the compute device")
    info.set_defaults(run=_info)
    zoo = commands.add_parser("zoo", help="parameters and GMACs of the model zoo beside the papers' figures")
    zoo.add_argument("pattern", nargs="?", default="*", help="shell-style model-name pattern (default: all)")
    zoo.add_argument("--all", action="store_true", help="include presets and ablations that have no paper row")
    zoo.set_defaults(run=_zoo)
    add_check_parser(commands)
    _add_train_commands(commands)
    return parser


def _add_run_options(p: argparse.ArgumentParser, epochs: int, batch_size: int, img_size: int, recipe: str | None):
    """The options `train` and `compare` share (the fields of `vitlocal.train.TrainConfig`)."""
    p.add_argument(
        "--data",
        default="synthetic",
        help="source: synthetic, imagenette[:PATH], cifar10[:PATH], "
        "imagenet:PATH, imagenet100:PATH, or an ImageNet-layout folder / .tar.gz (default: synthetic)",
    )
    p.add_argument("--epochs", type=POSITIVE_INT, default=epochs, help=f"epochs (default {epochs})")
    p.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=batch_size,
        help=f"global batch over all processes and accumulation steps (default {batch_size})",
    )
    p.add_argument(
        "--img-size", type=POSITIVE_INT, default=img_size, help=f"training and eval resolution (default {img_size})"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: $VITLOCAL_DEVICE, else cuda if present)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation (default 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--recipe",
        default=recipe,
        help="training recipe: deit, localvit, crossvit, cvt, slide, cloformer (the papers' recipes) or light "
        f"(short CPU runs); default: {recipe or 'the model family'}'s",
    )
    p.add_argument("--lr", type=POSITIVE, default=None, help="peak learning rate (default: base_lr x batch / 512)")
    p.add_argument("--drop-path", type=FRACTION, default=None, help="stochastic depth rate (default: the recipe's)")
    p.add_argument("--ema", type=FRACTION, default=None, metavar="DECAY", help="EMA decay per step (0: no EMA)")
    p.add_argument("--accum-steps", type=POSITIVE_INT, default=1, help="gradient accumulation steps (default 1)")
    p.add_argument("--workers", type=COUNT, default=None, help="data-loading processes per training process")
    p.add_argument(
        "--in-memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode the data set once into (device) memory (default: when it fits in 8 GiB)",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (conv-heavy models, GPU)")
    p.add_argument(
        "--stop-after",
        type=POSITIVE_INT,
        default=None,
        metavar="EPOCHS",
        help="stop this invocation after EPOCHS epochs (resume later; the schedule spans --epochs)",
    )
    p.add_argument("--limit-train", type=POSITIVE_INT, default=None, help="use at most this many training images")
    p.add_argument("--limit-val", type=POSITIVE_INT, default=None, help="use at most this many validation images")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change recipe or augmentation settings, e.g. --set mixup=0 warmup_epochs=1",
    )
    p.add_argument(
        "--model-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change model config fields, e.g. --model-set locality_layers=low gate=None",
    )


def _add_train_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model (CPU, GPU, or several under torchrun)")
    train.add_argument("--model", required=True, help="a model name (vitlocal.list_models())")
    train.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.jsonl, config.json")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _add_run_options(train, epochs=10, batch_size=128, img_size=224, recipe=None)
    train.set_defaults(run=_train)

    compare = commands.add_parser(
        "compare", help="the main job: train a LocalViT and its plain-ViT twin side by side, print a table"
    )
    compare.add_argument("--models", nargs="+", default=["deit_nano", "localvit_nano"], help="models to compare")
    compare.add_argument("--out", default="runs/compare", help="folder for one run per model (default runs/compare)")
    _add_run_options(compare, epochs=3, batch_size=64, img_size=32, recipe="light")
    compare.set_defaults(run=_compare)

    study = commands.add_parser(
        "study", help="train a study's configurations the same way (resumable), write results, print a table"
    )
    study.add_argument("name", nargs="?", help="families, localvit, crossvit-fusion or cvt-pos (--list: all)")
    study.add_argument("--list", action="store_true", help="list the studies and what each should show")
    study.add_argument("--data", default="synthetic", help="source, as for train (e.g. imagenette:PATH)")
    study.add_argument("--out", default="runs/study", help="folder of the run folders (default runs/study)")
    study.add_argument("--results", default=None, help="results file (JSON lines; default OUT/results.jsonl)")
    study.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per run (default: the study's)")
    study.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the study's)")
    study.add_argument("--arms", nargs="+", default=None, help="only these arms (labels, as in the table)")
    study.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    study.add_argument(
        "--throughput",
        default=None,
        metavar="FILE",
        help="instead of training: measure every arm's training-step img/s side by side, write FILE (JSON lines)",
    )
    study.set_defaults(run=_study)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a source's validation split")
    evaluate.add_argument("--model", default=None, help="the model name (default: the checkpoint's)")
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by vitlocal train")
    evaluate.add_argument("--data", required=True, help="source, as for train")
    evaluate.add_argument("--img-size", type=POSITIVE_INT, default=None, help="resolution (default: the checkpoint's)")
    evaluate.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    evaluate.set_defaults(run=_eval)

    bench = commands.add_parser(
        "bench", help="training-step img/s and peak memory (beside timm when installed), or data-loading img/s"
    )
    bench.add_argument("--model", nargs="+", default=["deit_tiny"], help="model names (default deit_tiny)")
    bench.add_argument(
        "--img-size", type=POSITIVE_INT, default=None, help="input size (default: each model's native size)"
    )
    bench.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    bench.add_argument("--steps", type=POSITIVE_INT, default=10, help="timed steps after 3 warm-up steps")
    bench.add_argument("--device", default=None)
    bench.add_argument("--compile", action="store_true", help="also measure torch.compile'd models")
    bench.add_argument("--no-timm", action="store_true", help="skip timm's implementations")
    bench.add_argument("--data", default=None, help="measure data loading of this source instead (streamed)")
    bench.add_argument("--workers", type=COUNT, default=1, help="with --data: loader processes (default 1)")
    bench.add_argument("--recipe", default="deit", help="with --data: the recipe whose augmentation runs")
    bench.set_defaults(run=_bench)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    # a mistake in the arguments or the data (FloatingPointError: a diverging --lr): one line, no traceback
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, FloatingPointError) as err:
        print(f"vitlocal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C; `vitlocal train` has said where its last checkpoint is
        print(f"vitlocal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
