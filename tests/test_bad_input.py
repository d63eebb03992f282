"""Every bad input a clear error, nothing lost: a table of the mistakes a user makes.

Each row of `MISTAKES` is one command line (run in this process through ``vitlocal.cli.main``) with what it
needs built on the fly in ``tmp_path``: an image folder or archive, a damaged checkpoint. Every row asserts

    the exit code           2 for a mistake (argparse's errors too), 0 where odd data is fine or only warned about
    the message             names the argument or the file, and says what would work (the ``says`` fragments)
    no traceback            a user mistake ends in one clear line, never in a stack trace
    nothing lost            the run folder a row may touch (``{run}``: a finished one-epoch run) is byte for byte
                            what it was before: a failed run never overwrites a checkpoint or its metrics

`API_MISTAKES` does the same for the Python API: the exception type and its message.
Runs are tiny (``deit_nano`` at 16 px, a few 12 x 10 images), so the whole file takes seconds.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlocal import cli, create_model, load_official
from vitlocal.train import TrainConfig, train

TRAIN = "train --model deit_nano --img-size 16 --epochs 1 --batch-size 4 --recipe light --workers 0 --limit-val 8"
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "config.json")


# ---------------------------------------------------------------- data built on the fly
def image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int = 0) -> None:
    """A small image file; the suffix picks the format (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(g.integers(0, 65536, size[::-1], dtype=np.uint16)).save(path)
        return
    rgb = Image.fromarray(g.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    rgb.convert(mode).save(path)


def folder(root: Path, classes: tuple[str, ...] = ("n0", "n1"), per_class: int = 3, val: bool = True) -> Path:
    """An ImageNet-layout folder ``root/{train,val}/<class>/<i>.png``."""
    for split in ("train", "val") if val else ("train",):
        for c, name in enumerate(classes):
            for i in range(per_class):
                image(root / split / name / f"{i}.png", seed=10 * c + i)
    return root


def two_classes(tmp: Path) -> Path:
    return folder(tmp / "d")


def one_class(tmp: Path) -> Path:
    return folder(tmp / "d", ("n0",), per_class=4)


def no_val_split(tmp: Path) -> Path:
    return folder(tmp / "d", val=False)


def empty_folder(tmp: Path) -> Path:
    (tmp / "d").mkdir()
    return tmp / "d"


def no_images(tmp: Path) -> Path:
    (tmp / "d" / "train" / "n0").mkdir(parents=True)
    return tmp / "d"


def other_val_classes(tmp: Path) -> Path:
    """train/ has n0 and n1, val/ has n0 and n2."""
    root = folder(tmp / "d")
    shutil.rmtree(root / "val" / "n1")
    image(root / "val" / "n2" / "0.png")
    return root


def all_unreadable(tmp: Path) -> Path:
    root = folder(tmp / "d")
    for path in root.rglob("*.png"):
        path.write_bytes(b"")
    return root


def whole_batches_unreadable(tmp: Path) -> Path:
    """4 of the 6 training images are empty files: with batch 2, at least one batch has no readable image."""
    root = folder(tmp / "d")
    for c in ("n0", "n1"):
        for i in (0, 1):
            (root / "train" / c / f"{i}.png").write_bytes(b"")
    return root


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path) -> None:
    """A PNG claiming 20000 x 20000 pixels (its data cut short): PIL refuses it as a decompression bomb on opening."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + data + png_chunk(b"IEND", b""))


def with_file(write: Callable[[Path], None], name: str = "1.png") -> Callable[[Path], Path]:
    """A good folder whose training image n0/``name`` is (replaced by) what ``write`` writes."""

    def build(tmp: Path) -> Path:
        root = folder(tmp / "d")
        target = root / "train" / "n0" / name
        target.unlink(missing_ok=True)
        write(target)
        return root

    return build


def with_image(mode: str, size: tuple[int, int] = (12, 10), suffix: str = ".png") -> Callable[[Path], Path]:
    return with_file(lambda path: image(path, mode, size), f"odd{suffix}")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_image(path: Path) -> None:
    image(path, size=(64, 64))
    truncate(path)


def archive(tmp: Path, members: list[tuple[tarfile.TarInfo, bytes]] | None = None) -> Path:
    """``tmp/set.tar.gz`` holding a good folder, plus ``members`` (hand-made entries, e.g. unsafe ones)."""
    root = folder(tmp / "set")
    path = tmp / "set.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="set")
        for info, data in members or []:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def unsafe_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Callable[[Path], Path]:
    """A good archive with one more member ``name`` of type ``kind`` (a link to ``link``)."""

    def build(tmp: Path) -> Path:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        return archive(tmp, [(info, b"payload" if kind == tarfile.REGTYPE else b"")])

    return build


def damaged_archive(tmp: Path) -> Path:
    path = archive(tmp)
    truncate(path)
    return path


def not_an_archive(tmp: Path) -> Path:
    path = tmp / "set.tar.gz"
    path.write_bytes(os.urandom(4096))
    return path


def unreadable(path: Path) -> None:
    image(path)
    path.chmod(0)


# ---------------------------------------------------------------- checkpoints built on the fly
def edit_checkpoint(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    """Apply ``change`` to the checkpoint.pt of ``{run}``."""

    def build(tmp: Path) -> Path:
        change(tmp / "run" / "checkpoint.pt")
        return tmp / "run"

    return build


def edit_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        torch.save(change(torch.load(path, weights_only=True)), path)

    return apply


def drop(key: str) -> Callable[[dict], dict]:
    return lambda state: {k: v for k, v in state.items() if k != key}


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(3000))


def wrong_weights(state: dict) -> dict:
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("blocks.0.")}
    return state


def empty_run(tmp: Path) -> Path:
    for name in RUN_FILES:
        (tmp / "run" / name).unlink()
    return tmp / "run"


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Mistake:
    argv: str  # the command line; {run}: a finished run folder, {data}: what `data` built, {tmp}: the case's folder
    code: int
    says: tuple[str, ...]  # fragments the message must hold: the argument or file, and what would work
    data: Callable[[Path], Path] | None = None  # builds the input in tmp; returns the {data} path
    absent: tuple[str, ...] = ()  # fragments that must not appear
    leaves_nothing: str = ""  # a glob under tmp that must match nothing afterwards (half-extracted folders ...)


MISTAKES = {
    # ---- the command line: every subcommand, its numbers and names
    "no command": Mistake("bogus", 2, ("invalid choice", "train")),
    "info with an option it lacks": Mistake("info --bogus", 2, ("unrecognized arguments", "--bogus")),
    "zoo with a pattern nothing matches": Mistake("zoo nomatch*", 2, ("no model matches", "vitlocal zoo --all")),
    "check an unknown assignment": Mistake("check 99_nope x.py", 2, ("argument topic", "01_lattice")),
    "study an unknown study": Mistake("study nope --out {tmp}/s", 2, ("study 'nope' is unknown", "families")),
    "study --epochs 0": Mistake("study localvit --epochs 0", 2, ("--epochs", "'0' is not a whole number >= 1")),
    "train without --model": Mistake("train --out {tmp}/r", 2, ("the following arguments are required: --model",)),
    "train --epochs 0": Mistake(f"{TRAIN} --epochs 0 --out {{tmp}}/r", 2, ("--epochs", "whole number >= 1")),
    "train --epochs abc": Mistake(f"{TRAIN} --epochs abc --out {{tmp}}/r", 2, ("--epochs", "'abc' is not a whole")),
    "train --batch-size 0": Mistake(f"{TRAIN} --batch-size 0 --out {{tmp}}/r", 2, ("--batch-size", ">= 1")),
    "train --batch-size -8": Mistake(f"{TRAIN} --batch-size -8 --out {{tmp}}/r", 2, ("--batch-size", ">= 1")),
    "train --batch-size above the data": Mistake(
        f"{TRAIN} --batch-size 64 --limit-train 16 --out {{tmp}}/r", 2, ("--batch-size 64", "lower it")
    ),
    "train --img-size 0": Mistake(f"{TRAIN} --img-size 0 --out {{tmp}}/r", 2, ("--img-size", ">= 1")),
    "train --img-size the patches do not tile": Mistake(
        f"{TRAIN} --img-size 30 --out {{tmp}}/r", 2, ("img_size=30", "sizes that work nearby: 28, 32")
    ),
    "train --accum-steps 0": Mistake(f"{TRAIN} --accum-steps 0 --out {{tmp}}/r", 2, ("--accum-steps", ">= 1")),
    "train --accum-steps not dividing the batch": Mistake(
        f"{TRAIN} --accum-steps 3 --out {{tmp}}/r", 2, ("multiple of processes x --accum-steps", "use 3")
    ),
    "train --workers -1": Mistake(f"{TRAIN} --workers -1 --out {{tmp}}/r", 2, ("--workers", ">= 0")),
    "train --lr 0": Mistake(f"{TRAIN} --lr 0 --out {{tmp}}/r", 2, ("--lr", "a positive number, e.g. 1e-3")),
    "train --lr nan": Mistake(f"{TRAIN} --lr nan --out {{tmp}}/r", 2, ("--lr", "a positive number")),
    "train --drop-path 1.5": Mistake(f"{TRAIN} --drop-path 1.5 --out {{tmp}}/r", 2, ("--drop-path", "in [0, 1)")),
    "train --ema 1": Mistake(f"{TRAIN} --ema 1 --out {{tmp}}/r", 2, ("--ema", "in [0, 1)")),
    "train --stop-after 0": Mistake(f"{TRAIN} --stop-after 0 --out {{tmp}}/r", 2, ("--stop-after", ">= 1")),
    "train --limit-train 0": Mistake(f"{TRAIN} --limit-train 0 --out {{tmp}}/r", 2, ("--limit-train", ">= 1")),
    "train --limit-val 0": Mistake(f"{TRAIN} --limit-val 0 --out {{tmp}}/r", 2, ("--limit-val", ">= 1")),
    "train --seed abc": Mistake(f"{TRAIN} --seed abc --out {{tmp}}/r", 2, ("--seed", "invalid int value")),
    "train an unknown --model": Mistake(
        "train --model deit_nope --out {tmp}/r", 2, ("unknown model name 'deit_nope'", "did you mean")
    ),
    "train an unknown --recipe": Mistake(f"{TRAIN} --recipe nope --out {{tmp}}/r", 2, ("--recipe 'nope'", "deit")),
    "train --set an unknown key": Mistake(
        f"{TRAIN} --set mixupp=0 --out {{tmp}}/r", 2, ("unknown recipe setting", "'mixupp'", "mixup")
    ),
    "train --set a value that is no literal": Mistake(
        f"{TRAIN} --set mixup=abc --out {{tmp}}/r", 2, ("--set mixup=abc", "Python literals", "e.g. --set mixup=0.0")
    ),
    "train --set without a value": Mistake(f"{TRAIN} --set mixup --out {{tmp}}/r", 2, ("--set 'mixup'", "KEY=VALUE")),
    "train --model-set an unknown field": Mistake(
        f"{TRAIN} --model-set depthh=2 --out {{tmp}}/r", 2, ("no field(s) ['depthh']", "depth")
    ),
    "train --device tpu": Mistake(f"{TRAIN} --device tpu --out {{tmp}}/r", 2, ("--device 'tpu'", "use cpu")),
    "train --out an existing file": Mistake(
        f"{TRAIN} --out {{run}}/config.json", 2, ("--out", "is a file", "choose another --out")
    ),
    "train --out below a file": Mistake(f"{TRAIN} --out {{run}}/config.json/sub", 2, ("is a file", "--out")),
    "train into a finished run without --resume": Mistake(
        f"{TRAIN} --out {{run}}", 2, ("already holds a run", "pass --resume")
    ),
    "train --resume with other settings": Mistake(
        f"{TRAIN} --batch-size 8 --out {{run}} --resume", 2, ("trained with other ['batch_size']", "keep them")
    ),
    "train --resume with no checkpoint says so": Mistake(
        f"{TRAIN} --limit-train 8 --out {{run}} --resume",
        0,
        ("holds no checkpoint to resume from", "starting at epoch 1"),
        empty_run,
    ),
    "compare an unknown model": Mistake(
        "compare --models deit_nope --out {tmp}/c", 2, ("unknown model name 'deit_nope'",)
    ),
    "compare --epochs 0": Mistake("compare --epochs 0 --out {tmp}/c", 2, ("--epochs", ">= 1")),
    "compare --out an existing file": Mistake(
        "compare --epochs 1 --img-size 16 --limit-train 8 --out {run}/config.json", 2, ("is a file", "--out")
    ),
    "bench --steps 0": Mistake("bench --model deit_nano --steps 0", 2, ("--steps", ">= 1")),
    "bench an unknown model": Mistake("bench --model deit_nope --no-timm", 2, ("unknown model name",)),
    "bench --data synthetic (nothing to load)": Mistake(
        "bench --data synthetic --img-size 16 --workers 0", 2, ("generated in memory", "imagenette:PATH")
    ),
    "bench --data with an unknown --recipe": Mistake(
        "bench --data {data} --recipe nope --workers 0", 2, ("--recipe 'nope'", "deit"), two_classes
    ),
    # ---- the data sources
    "a --data path that does not exist": Mistake(
        f"{TRAIN} --data {{tmp}}/missing --out {{tmp}}/r", 2, ("--data", "missing", "check the path")
    ),
    "imagenet without its folder": Mistake(f"{TRAIN} --data imagenet --out {{tmp}}/r", 2, ("--data imagenet:/",)),
    "imagenette:PATH that does not exist": Mistake(
        f"{TRAIN} --data imagenette:{{tmp}}/nope.tgz --out {{tmp}}/r", 2, ("nope.tgz does not exist", "--data")
    ),
    "an empty folder": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 2, ("has no train/ folder", "<class>"), empty_folder
    ),
    "a train/ folder without images": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("holds no images", "<class>/*.JPEG"),
        no_images,
    ),
    "no val split": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 2, ("has no val/ folder", "/val/<class>"), no_val_split
    ),
    "train and val with other classes": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("different class folders", "n2", "the same class folders"),
        other_val_classes,
    ),
    "one class trains with a warning": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("has one class", "two or more"), one_class
    ),
    "every image unreadable": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("none of the", "could be read", "check --data"),
        all_unreadable,
    ),
    "a truncated archive": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("set.tar.gz is damaged (cut short?)", "download it again"),
        damaged_archive,
        leaves_nothing="cache/extracted/*",
    ),
    "a file that is no archive": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("not a tar archive",),
        not_an_archive,
        leaves_nothing="cache/*/*",
    ),
    "an archive member with ..": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("'set/../evil.png'", "refusing", "unpack it yourself"),
        unsafe_member("set/../evil.png"),
        leaves_nothing="cache/extracted/*",
    ),
    "an archive member with an absolute path": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 2, ("'/tmp/evil.png'", "refusing"), unsafe_member("/tmp/evil.png")
    ),
    "an archive symlink out of the folder": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("link to '/etc/passwd'", "refusing"),
        unsafe_member("set/train/n0/x.png", tarfile.SYMTYPE, "/etc/passwd"),
        leaves_nothing="cache/extracted/*",
    ),
    "an archive symlink climbing out": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("link to '../../..'", "refusing"),
        unsafe_member("set/up", tarfile.SYMTYPE, "../../.."),
    ),
    "an archive hard link out of the folder": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("link to '../outside'", "refusing"),
        unsafe_member("set/train/n0/h.png", tarfile.LNKTYPE, "../outside"),
    ),
    "a device in an archive": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        2,
        ("a device or a pipe",),
        unsafe_member("set/dev", tarfile.CHRTYPE),
    ),
    # ---- odd images: unreadable ones are skipped, counted and reported; odd but valid ones just work
    "a zero-byte image": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("skipped 1 unreadable image(s)", "1.png"), with_file(Path.touch)
    ),
    "a truncated image": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        0,
        ("skipped 1 unreadable image(s)",),
        with_file(truncated_image),
    ),
    "a text file named .jpg": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        0,
        ("skipped 1 unreadable image(s)", "x.jpg"),
        with_file(lambda path: path.write_text("not an image"), "x.jpg"),
    ),
    "a decompression bomb": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r",
        0,
        ("skipped 1 unreadable image(s)", "DecompressionBombError"),
        with_file(huge_png, "huge.png"),
    ),
    "an image without read permission": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("skipped 1 unreadable image(s)",), with_file(unreadable)
    ),
    "streamed: every image of some batches unreadable": Mistake(
        f"{TRAIN} --batch-size 2 --no-in-memory --data {{data}} --out {{tmp}}/r",
        0,
        ("epoch 1/1", "skipped 4 unreadable image(s)"),
        whole_batches_unreadable,
    ),
    "a CMYK JPEG": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("epoch 1/1",), with_image("CMYK", suffix=".jpg"), ("skipped",)
    ),
    "a grayscale image": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("epoch 1/1",), with_image("L"), ("skipped",)
    ),
    "a 16-bit image": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("epoch 1/1",), with_image("I;16"), ("skipped",)
    ),
    "a 1 x 1 image": Mistake(
        f"{TRAIN} --data {{data}} --out {{tmp}}/r", 0, ("epoch 1/1",), with_image("RGB", (1, 1)), ("skipped",)
    ),
    # ---- checkpoints: eval and --resume
    "eval a checkpoint that does not exist": Mistake(
        "eval --checkpoint {tmp}/none.pt --data synthetic", 2, ("--checkpoint", "none.pt does not exist")
    ),
    "eval a garbage checkpoint": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("checkpoint.pt cannot be read as a PyTorch checkpoint", "pass a checkpoint.pt written by vitlocal train"),
        edit_checkpoint(garbage),
    ),
    "eval a truncated checkpoint": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("cannot be read", "damaged (cut short?)"),
        edit_checkpoint(truncate),
    ),
    "eval a plain state dict": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("is a plain state dict", "model.load_state_dict"),
        edit_checkpoint(edit_state(lambda state: state["model"])),
    ),
    "eval another version's checkpoint": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("another version", "lacks ['classes']"),
        edit_checkpoint(edit_state(drop("classes"))),
    ),
    "eval weights of another architecture": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("do not fit VisionTransformer", "another version of vitlocal"),
        edit_checkpoint(edit_state(wrong_weights)),
    ),
    "eval with the wrong --model": Mistake(
        "eval --model localvit_nano --checkpoint {run}/checkpoint.pt --data synthetic",
        2,
        ("holds a deit_nano", "--model deit_nano"),
    ),
    "eval --ema of a run without EMA": Mistake(
        "eval --ema --checkpoint {run}/checkpoint.pt --data synthetic", 2, ("no EMA weights", "without --ema")
    ),
    "eval on data with other classes": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data {data}",
        2,
        ("trained on 10 classes", "has 2", "evaluate it on data with its classes"),
        two_classes,
    ),
    "eval --batch-size 0": Mistake(
        "eval --checkpoint {run}/checkpoint.pt --data synthetic --batch-size 0", 2, (">= 1",)
    ),
    "resume from a garbage checkpoint": Mistake(
        f"{TRAIN} --limit-train 16 --out {{run}} --resume",
        2,
        ("--resume:", "cannot be read", "damaged"),
        edit_checkpoint(garbage),
    ),
    "resume from an official checkpoint": Mistake(
        f"{TRAIN} --limit-train 16 --out {{run}} --resume",
        2,
        ("not a checkpoint of vitlocal train", "vitlocal.load_official"),
        edit_checkpoint(edit_state(lambda state: {"model": state["model"]})),
    ),
    "resume from a plain state dict": Mistake(
        f"{TRAIN} --limit-train 16 --out {{run}} --resume",
        2,
        ("plain state dict",),
        edit_checkpoint(edit_state(lambda state: state["model"])),
    ),
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``vitlocal ARGV`` in this process -> (exit code, everything it printed or warned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # argparse's errors
            code = exit.code
    out, err = capsys.readouterr()
    return code, out + err + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run of deit_nano on synthetic data: checkpoint.pt, metrics.jsonl, config.json."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(
        TrainConfig(
            "deit_nano", img_size=16, epochs=1, batch_size=4, recipe="light", limit_train=16, limit_val=8, out=str(out)
        )
    )
    return out


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", MISTAKES)
def test_a_user_mistake_gets_a_clear_message_and_loses_nothing(
    name: str,
    finished_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mistake = MISTAKES[name]
    if "permission" in name and os.geteuid() == 0:
        pytest.skip("runs as root, who can read any file: an unreadable image cannot be made")
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("VITLOCAL_SMOKE", raising=False)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = str(mistake.data(tmp_path)) if mistake.data else ""
    before = snapshot(run)
    argv = [part.format(run=run, data=data, tmp=tmp_path) for part in mistake.argv.split()]

    code, said = run_cli(argv, capsys)

    assert code == mistake.code, said
    for fragment in mistake.says:
        assert fragment in said, f"{fragment!r} not in: {said}"
    for fragment in mistake.absent:
        assert fragment not in said, said
    assert "Traceback" not in said
    if code or "--out {run}" not in mistake.argv:  # only a successful run in {run} may change it
        assert snapshot(run) == before, "the command changed the run folder"
    if mistake.leaves_nothing:
        assert not list(tmp_path.glob(mistake.leaves_nothing)), "leftovers in the cache"


# ---------------------------------------------------------------- the Python API
@dataclass(frozen=True)
class ApiMistake:
    call: Callable[[Path], object]  # given a folder for files
    error: type[Exception]
    says: tuple[str, ...]


def grayscale_into(name: str) -> Callable[[Path], object]:
    return lambda tmp: create_model(name, img_size=32)(torch.zeros(1, 1, 32, 32))


def official_from_file(write: Callable[[Path], None]) -> Callable[[Path], object]:
    def call(tmp: Path) -> object:
        path = tmp / "official.pth"
        write(path)
        return load_official(create_model("deit_nano"), path)

    return call


API_MISTAKES = {
    "create_model with an unknown override": ApiMistake(
        lambda tmp: create_model("deit_nano", bogus=1), ValueError, ("no field(s) ['bogus']", "overridable fields")
    ),
    "create_model with an unknown name": ApiMistake(
        lambda tmp: create_model("deit_nope"), ValueError, ("unknown model name", "did you mean deit_nano")
    ),
    "create_model num_classes=0": ApiMistake(
        lambda tmp: create_model("deit_nano", num_classes=0), ValueError, ("num_classes", "positive integer")
    ),
    "create_model with an img_size the patches do not tile": ApiMistake(
        lambda tmp: create_model("deit_nano", img_size=30), ValueError, ("img_size=30", "28, 32")
    ),
    "images of another size": ApiMistake(
        lambda tmp: create_model("deit_nano", img_size=32)(torch.zeros(1, 3, 48, 48)),
        ValueError,
        ("img_size=32", "build it with img_size=48"),
    ),
    "an image without its batch axis": ApiMistake(
        lambda tmp: create_model("deit_nano", img_size=32)(torch.zeros(3, 32, 32)),
        ValueError,
        ("4 dimensions", "x.unsqueeze(0)"),
    ),
    **{
        f"grayscale images into {name}": ApiMistake(grayscale_into(name), ValueError, ("1", "3", "(1, 1, 32, 32)"))
        for name in ("deit_nano", "crossvit_nano", "cvt_nano", "cloformer_nano", "swin_nano")
    },
    "load_official with another model's state dict": ApiMistake(
        lambda tmp: load_official(create_model("deit_nano"), create_model("cvt_nano").state_dict()),
        ValueError,
        ("missing keys", "is it the checkpoint of this variant?"),
    ),
    "load_official with a missing file": ApiMistake(
        official_from_file(lambda path: None), FileNotFoundError, ("official.pth does not exist",)
    ),
    "load_official with a garbage file": ApiMistake(
        official_from_file(garbage), ValueError, ("official.pth cannot be read as a PyTorch checkpoint",)
    ),
    "TrainConfig with epochs=0": ApiMistake(
        lambda tmp: TrainConfig("deit_nano", epochs=0), ValueError, ("epochs must be a positive integer, got 0",)
    ),
    "TrainConfig with lr=-1": ApiMistake(
        lambda tmp: TrainConfig("deit_nano", lr=-1.0), ValueError, ("lr must be a positive number", "e.g. 1e-3")
    ),
}


@pytest.mark.parametrize("name", API_MISTAKES)
def test_an_api_mistake_raises_a_clear_error(name: str, tmp_path: Path) -> None:
    mistake = API_MISTAKES[name]
    with pytest.raises(mistake.error) as caught:
        mistake.call(tmp_path)
    for fragment in mistake.says:
        assert fragment in str(caught.value), str(caught.value)


def test_the_sweep_covers_at_least_40_mistakes_and_every_subcommand() -> None:
    assert len(MISTAKES) + len(API_MISTAKES) >= 40
    commands = {mistake.argv.split()[0] for mistake in MISTAKES.values()}
    assert {"train", "compare", "eval", "bench", "zoo", "check", "study", "info"} <= commands
