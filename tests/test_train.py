"""The training engine: learning, exact resume, DDP = one process, the schedule and EMA against their
formulas, checkpoints, the command line, and a few steps on real Imagenette when ``../shared/data`` exists.

Runs are tiny (16 px synthetic images, ``deit_nano``, a handful of steps) so the file stays fast on 2 cores.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlocal import cli
from vitlocal.data import build_data
from vitlocal.records import read_metrics
from vitlocal.train import Ema, TrainConfig, WarmupCosine, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TIMING = ("img_per_s", "train_seconds", "epoch_seconds")
TINY = dict(model="deit_nano", data="synthetic", img_size=16, recipe="light", limit_val=64)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("VITLOCAL_SMOKE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_loss_decreases_on_synthetic(tmp_path: Path) -> None:
    cfg = TrainConfig(
        **(TINY | {"model": "localvit_nano"}), epochs=3, batch_size=32, limit_train=384, out=str(tmp_path)
    )
    history = train(cfg)
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05  # measured: 2.31 -> 2.17
    assert all(math.isfinite(row["val_loss"]) and 0 <= row["val_acc1"] <= 100 for row in history)
    assert [row["epoch"] for row in read_metrics(tmp_path)] == [1, 2, 3]
    keys = {"epoch", "lr", "train_loss", "val_loss", "val_acc1", "val_acc5", "img_per_s", "epoch_seconds"}
    assert keys <= set(history[0])


def test_resume_is_exact(tmp_path: Path) -> None:
    """2 epochs in one go == 1 epoch, stop, resume to 2: same metrics, same weights, same EMA.

    Drop path, flips, mixup and cutmix are on, so every random-number stream has to be restored.
    """
    cfg = dict(TINY, epochs=2, batch_size=16, limit_train=96, lr=1e-3)
    cfg["overrides"] = {"drop_path": 0.1, "hflip": 0.5, "mixup": 0.8, "cutmix": 1.0, "ema_decay": 0.9}
    straight = train(TrainConfig(**cfg, out=str(tmp_path / "a")))
    train(TrainConfig(**cfg, out=str(tmp_path / "b"), stop_after=1))
    assert len(read_metrics(tmp_path / "b")) == 1
    resumed = train(TrainConfig(**cfg, out=str(tmp_path / "b"), resume=True))
    assert without_timing(resumed) == without_timing(straight)
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key


def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo), global batch 32 = 2 x 16, ends with one process's weights."""
    args = ["--model", "deit_nano", "--data", "synthetic", "--epochs", "1", "--batch-size", "32", "--img-size", "16"]
    args += ["--recipe", "light", "--lr", "1e-3", "--limit-train", "128", "--limit-val", "32", "--workers", "0"]
    args += ["--set", "drop_path=0", "hflip=0"]  # nothing random that differs between processes
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*run, "-m", "vitlocal", "train", *args, "--out", str(tmp_path / "ddp")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert cli.main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    ddp, one = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert read_metrics(tmp_path / "ddp")[0]["val_acc1"] == pytest.approx(read_metrics(tmp_path / "one")[0]["val_acc1"])


def test_gradient_accumulation_equals_the_full_batch(tmp_path: Path) -> None:
    cfg = dict(TINY, epochs=1, batch_size=32, limit_train=96, limit_val=16, lr=1e-3, overrides={"hflip": 0.0})
    train(TrainConfig(**cfg, out=str(tmp_path / "full")))
    train(TrainConfig(**cfg, out=str(tmp_path / "accum"), accum_steps=4))
    full, accum = weights(tmp_path / "full"), weights(tmp_path / "accum")
    for key in full:
        torch.testing.assert_close(accum[key], full[key], rtol=1e-4, atol=1e-5, msg=key)


def test_warmup_cosine_follows_its_formula() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    schedule = WarmupCosine(opt, peak=1.0, total_steps=10, warmup_steps=4, warmup_lr=0.2, min_lr=0.1)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        schedule.step()
    warm = [0.2 + 0.8 * s / 4 for s in range(4)]
    cos = [0.1 + 0.45 * (1 + math.cos(math.pi * min(1, (s - 4) / 6))) for s in range(4, 12)]
    assert seen == pytest.approx(warm + cos)


def test_ema_follows_its_formula() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = Ema(model, decay=0.75)
    for step in range(1, 3):  # the second update reuses the tensor lists gathered in the first
        before = {k: v.clone() for k, v in ema.module.state_dict().items()}
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model(torch.randn(4, 3))  # BatchNorm running statistics and its batch counter move
        ema.update(model)
        for key, value in ema.module.state_dict().items():
            new = model.state_dict()[key]
            expected = 0.75 * before[key] + 0.25 * new if new.dtype.is_floating_point else new
            torch.testing.assert_close(value, expected)
        assert ema.updates == step


def test_an_existing_run_needs_resume_and_the_same_settings(tmp_path: Path) -> None:
    cfg = dict(TINY, epochs=1, batch_size=16, limit_train=32, limit_val=16, out=str(tmp_path))
    train(TrainConfig(**cfg))
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(**cfg))
    with pytest.raises(ValueError, match="batch_size"):
        train(TrainConfig(**(cfg | {"batch_size": 8}), resume=True))
    assert train(TrainConfig(**cfg, resume=True))[0]["epoch"] == 1  # finished: nothing more to do
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["rng"] = state["rng"] * 2  # as if two processes had trained it
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="trained with 2 processes, not 1"):
        train(TrainConfig(**cfg, resume=True))


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["train", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "x")]
    cases = {
        "unknown model name": ["--model", "deit_nope", "--img-size", "32"],
        "neither a source name": ["--model", "deit_nano", "--img-size", "32", "--data", str(tmp_path / "none")],
        "must be a multiple of 4": ["--model", "deit_nano", "--img-size", "30"],
        "multiple of processes x --accum-steps": ["--model", "deit_nano", "--img-size", "32", "--accum-steps", "3"],
        "unknown recipe setting": ["--model", "deit_nano", "--img-size", "32", "--set", "mixupp=0"],
    }
    for message, args in cases.items():
        assert cli.main(base + args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_smoke_train_eval_bench_and_compare_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITLOCAL_SMOKE", "1")
    run = tmp_path / "run"
    args = ["train", "--model", "localvit_nano", "--epochs", "5", "--batch-size", "64", "--img-size", "32"]
    args += ["--channels-last"]
    assert cli.main([*args, "--out", str(run)]) == 0
    assert len(read_metrics(run)) == 2  # smoke: at most 2 epochs
    assert cli.main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data", "synthetic"]) == 0
    assert "val_acc1" in capsys.readouterr().out
    bench = ["bench", "--model", "deit_nano", "--img-size", "32", "--batch-size", "4", "--steps", "1", "--no-timm"]
    assert cli.main(bench) == 0
    assert "| deit_nano | 32 | vitlocal | no |" in capsys.readouterr().out
    assert cli.main(["compare", "--out", str(tmp_path / "compare")]) == 0
    table = capsys.readouterr().out
    assert "| deit_nano |" in table and "| localvit_nano |" in table


def test_python_dash_m_entry_point_and_no_torchvision() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vitlocal", "train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--batch-size" in done.stdout and "--resume" in done.stdout
    code = "import sys, vitlocal.train, vitlocal.data, vitlocal.plot, vitlocal.cli\n"
    code += "assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_plot_runs(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from vitlocal.plot import plot_runs

    rows = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "val_acc1": 10.0 * e} for e in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(f"{row}\n".replace("'", '"') for row in rows))
    fig = plot_runs([tmp_path, tmp_path / "metrics.jsonl"], labels=["a", "b"])
    loss, acc = fig.axes
    assert len(loss.lines) == 4 and list(acc.lines[0].get_ydata()) == [10.0, 20.0]


@pytest.mark.skipif(
    not (SHARED_DATA / "imagenette2-128.tar.gz").exists(),
    reason="real-data check: ../shared/data/imagenette2-128.tar.gz is absent (only developer checkouts have it)",
)
def test_a_few_steps_on_real_imagenette(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("VITLOCAL_CACHE", str(tmp_path_factory.mktemp("cache")))  # extract outside the repository
    source = f"imagenette:{SHARED_DATA / 'imagenette2-128.tar.gz'}"
    out = tmp_path_factory.mktemp("run")
    history = train(
        TrainConfig(
            model="deit_nano",
            data=source,
            img_size=32,
            epochs=1,
            batch_size=32,
            recipe="deit",  # the full recipe: crop, flip, RandAugment, erasing, mixup / cutmix, on decoded pixels
            lr=1e-3,
            limit_train=128,
            limit_val=64,
            workers=0,
            out=str(out),
        )
    )
    assert math.isfinite(history[0]["train_loss"]) and history[0]["skipped"] == 0
    assert 0 <= history[0]["val_acc1"] <= 100
    streamed = build_data(source, 32, 16, in_memory=False, workers=1, limit=(32, 16))
    x, y = next(iter(streamed.val))
    assert x.shape == (16, 3, 32, 32) and len(streamed.classes) == 10 and y.max() < 10


# ---------------------------------------------------------------- crash safety: kill -9 and Ctrl-C, then --resume
CRASH_RUN = ["train", "--model", "deit_nano", "--img-size", "16", "--epochs", "3", "--batch-size", "8", "--lr", "1e-3"]
CRASH_RUN += ["--recipe", "light", "--limit-train", "32", "--limit-val", "16", "--workers", "0"]
CRASH_RUN += ["--set", "drop_path=0.1", "hflip=0.5", "mixup=0.8", "ema_decay=0.9"]  # every random stream in use

# Run in a subprocess: `vitlocal train` that pauses at one point, so that the test can kill it there from outside.
# argv: marker file, point, then the command line. Nothing of this is in the library: it wraps library functions.
PAUSING_TRAIN = """
import os, sys, time
from pathlib import Path
import torch
from vitlocal import cli, records, train as engine

torch.set_num_threads(1)
marker, point, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def pause_at(owner, name, nth, when=lambda *args: True, before=lambda *args: None):
    # the nth call of owner.name for which when(*args) holds runs before(*args), then waits to be killed
    original, seen = getattr(owner, name), []
    def wrapper(*args, **kwargs):
        if when(*args):
            seen.append(1)
            if len(seen) == nth:
                before(*args)
                marker.touch()
                time.sleep(300)
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

def torn_checkpoint(state, path):  # the temporary checkpoint half written
    torch_save(state, path)
    Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])

def torn_metrics(path, text):  # the temporary metrics file half written
    Path(f"{path}.tmp{os.getpid()}").write_text(text[: len(text) // 2])

torch_save = torch.save
is_metrics = lambda path, text: Path(path).name == "metrics.jsonl"
points = {
    "in the middle of epoch 2": lambda: pause_at(torch.optim.AdamW, "step", 6),  # 4 steps an epoch
    "while evaluating epoch 2": lambda: pause_at(engine, "evaluate", 3),  # the model, then the EMA, each epoch
    "writing the checkpoint of epoch 2": lambda: pause_at(records.torch, "save", 2, before=torn_checkpoint),
    "before the rename of checkpoint 2": lambda: pause_at(
        records.os, "replace", 2, when=lambda src, dst: Path(dst).name == "checkpoint.pt"
    ),
    "between checkpoint 2 and its metrics": lambda: pause_at(engine, "write_jsonl", 2),
    "writing the metrics of epoch 2": lambda: pause_at(
        records, "write_text_atomically", 2, when=is_metrics, before=torn_metrics
    ),
    "between the last checkpoint and its metrics": lambda: pause_at(engine, "write_jsonl", 3),
}
points[point]()
sys.exit(cli.main(argv))
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crash test's run, in one go."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TQDM_DISABLE", "1")
        mp.delenv("VITLOCAL_SMOKE", raising=False)
        assert cli.main([*CRASH_RUN, "--out", str(out)]) == 0
    return out


def stopped_train(out: Path, point: str, signal_number: int) -> subprocess.CompletedProcess:
    """`vitlocal train` into ``out``, stopped at ``point`` by ``signal_number`` sent from outside."""
    marker = out.with_name("paused")
    env = {k: v for k, v in os.environ.items() if k != "VITLOCAL_SMOKE"} | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", PAUSING_TRAIN, str(marker), point, *CRASH_RUN, "--out", str(out)]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"never reached {point!r}: {proc.communicate(timeout=60)[1][-3000:]}"
    proc.send_signal(signal_number)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.parametrize(
    ("point", "last_checkpoint"),
    [
        ("in the middle of epoch 2", 1),
        ("while evaluating epoch 2", 1),
        ("writing the checkpoint of epoch 2", 1),
        ("before the rename of checkpoint 2", 1),
        ("between checkpoint 2 and its metrics", 2),
        ("writing the metrics of epoch 2", 2),
        ("between the last checkpoint and its metrics", 3),
    ],
)
def test_kill_9_then_resume_ends_as_an_uninterrupted_run(
    point: str, last_checkpoint: int, uninterrupted: Path, tmp_path: Path
) -> None:
    """``kill -9`` at any point of an epoch or of its checkpoint write loses at most the epoch in progress: the
    checkpoint on disk stays readable, and ``--resume`` ends with the metrics and weights of a run never stopped."""
    out = tmp_path / "run"
    killed = stopped_train(out, point, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == last_checkpoint  # never torn
    assert [row["epoch"] for row in read_metrics(out)] in (
        [*range(1, last_checkpoint)],
        [*range(1, last_checkpoint + 1)],
    )

    assert cli.main([*CRASH_RUN, "--out", str(out), "--resume"]) == 0

    assert without_timing(read_metrics(out)) == without_timing(read_metrics(uninterrupted))
    resumed, straight = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (out, uninterrupted))
    for key in straight["model"]:
        assert torch.equal(resumed["model"][key], straight["model"][key]), key
        assert torch.equal(resumed["ema"]["module"][key], straight["ema"]["module"][key]), key
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]  # no leftovers


def test_ctrl_c_says_where_the_last_checkpoint_is_and_resume_continues(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stopped = stopped_train(out, "in the middle of epoch 2", signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert f"interrupted in epoch 2; the last checkpoint is {out / 'checkpoint.pt'} (epoch 1)" in stopped.stderr
    assert "continue with --resume" in stopped.stderr
    assert cli.main([*CRASH_RUN, "--out", str(out), "--resume"]) == 0
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(uninterrupted))


def test_the_training_loop_waits_for_the_device_only_every_tenth_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU a host read (``.item()``, ``.tolist()``, ``.nonzero()``, ``bool(tensor)``) waits for the device. Over
    an epoch of 20 steps with DeiT's full recipe (RandAugment, mixup, cutmix, erasing, EMA), the engine's own code
    reads the device three times: the progress line at steps 10 and 20, and the epoch's mean loss."""
    import traceback

    package = str(Path(train.__code__.co_filename).parent)
    reads: list[str] = []
    for name in ("item", "tolist", "nonzero", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            stack = traceback.extract_stack()[:-1]
            caller = stack[-1]
            if caller.filename.startswith(package) and any(f.name == "_train_epoch" for f in stack):
                reads.append(f"{_name} in {Path(caller.filename).name}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = TINY | {"recipe": "deit", "limit_val": 8}
    train(TrainConfig(**cfg, epochs=1, batch_size=8, limit_train=160, out=str(tmp_path)))
    assert len(reads) == 3, reads  # steps 10 and 20, and the epoch's mean loss


def test_evaluation_reads_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over five validation batches, `evaluate` reads the device once (the sums, at the end) and copies one tensor
    to it (the image count), instead of once per batch."""
    import traceback

    from vitlocal import train as engine
    from vitlocal.models import create_model

    package = str(Path(engine.__file__).parent)
    events: list[str] = []

    def counting(original, name):
        def counted(*args, **kwargs):
            caller = traceback.extract_stack()[-2]
            if caller.filename.startswith(package) and caller.name == "evaluate":
                events.append(f"{name} at {Path(caller.filename).name}:{caller.lineno}")
            return original(*args, **kwargs)

        return counted

    for name in ("item", "tolist", "nonzero", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name), name))
    monkeypatch.setattr(torch, "tensor", counting(torch.tensor, "tensor"))
    val = build_data("synthetic", 16, 8, limit=(16, 40)).val
    metrics = engine.evaluate(create_model("deit_nano", img_size=16), val)
    assert len(val) == 5 and 0 <= metrics["val_acc1"] <= 100
    assert sorted(e.split(" ")[0] for e in events) == ["tensor", "tolist"], events


def test_compiled_training_and_evaluation_compile_in_the_first_epoch_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --compile, evaluation (the model's and the EMA's, and the last, smaller validation batch) is compiled
    too, and the second epoch compiles nothing new. (The eager backend: dynamo's graphs without generated code.)"""
    import functools

    from torch._dynamo.utils import counters

    from vitlocal import train as engine

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    graphs, evaluated = [], []
    train_epoch, evaluate = engine._train_epoch, engine.evaluate

    def epoch_counted(*args, **kwargs):
        graphs.append(counters["stats"]["unique_graphs"])
        return train_epoch(*args, **kwargs)

    def evaluate_seen(model, *args, **kwargs):
        evaluated.append(isinstance(model, torch._dynamo.eval_frame.OptimizedModule))
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(engine, "_train_epoch", epoch_counted)
    monkeypatch.setattr(engine, "evaluate", evaluate_seen)
    cfg = TINY | {"limit_val": 20, "overrides": {"ema_decay": 0.9}}  # validation batches of 8, 8 and 4
    train(TrainConfig(**cfg, epochs=2, batch_size=8, limit_train=16, compile=True, out=str(tmp_path)))
    graphs.append(counters["stats"]["unique_graphs"])
    assert evaluated == [True] * 4  # the model and the EMA, each epoch
    assert graphs[0] == 0 and graphs[1] >= 3 and graphs[2] == graphs[1], graphs  # training, evaluation, EMA
