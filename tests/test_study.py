"""The study runner: every arm and seed trained once, one results row each with the promised fields, finished runs
skipped, an interrupted study resumed, the table, the command line, and the committed CPU results' schema.

Runs are tiny: smoke mode shrinks each to 2 steps of 8 synthetic images (seconds on 2 cores).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

import vitlocal.study
from vitlocal import cli
from vitlocal.models import create_model
from vitlocal.records import read_jsonl, read_metrics
from vitlocal.study import STUDIES, run_study, study_table
from vitlocal.train import load_model

REPO = Path(__file__).resolve().parents[1]
ROW_FIELDS = {
    "study", "arm", "model", "model_args", "seed", "epochs", "img_size", "batch_size", "recipe", "classes",
    "params_m", "mmacs", "final_acc1", "final_acc5", "final_val_loss", "best_acc1", "best_epoch", "best_acc5",
    "train_img_per_s", "minutes", "curve", "paper", "data", "machine", "torch", "command", "date",
}  # fmt: skip


@pytest.fixture(autouse=True)
def smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLOCAL_SMOKE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_every_arm_and_seed_gives_one_row_with_every_field(tmp_path: Path) -> None:
    rows = run_study("cvt-pos", "synthetic", tmp_path, epochs=1, seeds=[0, 1])
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted(
        (arm.label, seed) for arm in STUDIES["cvt-pos"].arms for seed in (0, 1)
    )
    assert all(set(r) == ROW_FIELDS for r in rows)  # synthetic data: no archive, no data_sha256
    assert read_jsonl(tmp_path / "results.jsonl") == rows  # smoke mode writes beside the runs
    with_pos = next(r for r in rows if r["model_args"] == {"pos_embed": True})
    without = next(r for r in rows if r["model_args"] == {})
    assert with_pos["params_m"] > without["params_m"]  # the tables are real parameters
    for row in rows:  # the stored curve is the run's own metrics.jsonl
        run = tmp_path / f"{vitlocal.study._slug(row['arm'])}-s{row['seed']}"
        assert [c[3] for c in row["curve"]] == [round(m["val_acc1"], 2) for m in read_metrics(run)]
        assert row["final_acc1"] == row["curve"][-1][3] and row["best_acc1"] == max(c[3] for c in row["curve"])


def test_finished_runs_are_skipped_and_an_interrupted_study_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_study("cvt-pos", "synthetic", tmp_path, epochs=2, seeds=[0])
    # a study stopped after its first run: drop the second row (its run folder stays, finished: it resumes)
    results = tmp_path / "results.jsonl"
    kept = [r for r in read_jsonl(results) if r["arm"] == first[0]["arm"]]
    results.write_text("".join(json.dumps(r) + "\n" for r in kept))
    calls = []
    real_train = vitlocal.study.train
    monkeypatch.setattr(vitlocal.study, "train", lambda cfg: calls.append(cfg.model_args) or real_train(cfg))
    again = run_study("cvt-pos", "synthetic", tmp_path, epochs=2, seeds=[0])
    assert calls == [first[1]["model_args"]]  # only the missing run is trained (here: resumed from its checkpoint)
    assert [r["final_acc1"] for r in again] == [r["final_acc1"] for r in first]
    calls.clear()
    run_study("cvt-pos", "synthetic", tmp_path, epochs=2, seeds=[0])
    assert calls == []  # everything done: nothing trains
    run_study("cvt-pos", "synthetic", tmp_path / "other", epochs=1, seeds=[0])
    assert len(calls) == 2  # other settings are other runs


def test_results_go_to_the_named_file_outside_smoke_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vitlocal.study, "smoke_mode", lambda: False)  # train itself still runs tiny
    rows = run_study("cvt-pos", "synthetic", tmp_path / "runs", tmp_path / "cpu" / "cvt-pos.jsonl", 1, [0])
    assert read_jsonl(tmp_path / "cpu" / "cvt-pos.jsonl") == rows
    assert not (tmp_path / "runs" / "results.jsonl").exists()


def test_table_reports_the_mean_and_the_spread_over_seeds() -> None:
    base = {"model": "m", "params_m": 1.0, "mmacs": 2.0, "train_img_per_s": 100.0, "minutes": 1.0, "paper": ""}
    base |= {"classes": 10, "data": "synthetic", "img_size": 32, "epochs": 3, "batch_size": 8, "recipe": "small"}
    rows = [base | {"arm": "a", "seed": 0, "final_acc1": 40.0, "best_acc1": 41.0}]
    rows += [base | {"arm": "a", "seed": 1, "final_acc1": 50.0, "best_acc1": 52.0}]
    table = study_table(rows)
    assert "| a | m | 1.00 | 2.0 | 2 | 45.0 ± 5.0 | 40.0 / 50.0 | 46.5 | 100 | 1.0 | - |" in table
    assert "chance 10%" in table
    # the side-by-side figures replace the runs' own: img/s, and minutes = epochs x minutes per epoch at that rate
    measured = study_table(rows, [{"arm": "a", "img_per_s": 123.4, "minutes_per_epoch_imagenette": 0.5}])
    assert "img/s (side by side)" in measured and "| 46.5 | 123 | 1.5 |" in measured
    assert "evaluation excluded" in measured


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "studies: families"),
        ({"arms": ["nope"]}, "its arms"),
        ({"epochs": 0}, "--epochs >= 1"),
        ({"seeds": []}, "--seeds"),
    ],
)
def test_bad_arguments_name_what_works(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"name": "cvt-pos", "data": "synthetic", "out": tmp_path} | kwargs
    with pytest.raises(ValueError, match=message):
        run_study(**args)


def test_command_line_lists_runs_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["study", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in STUDIES)
    argv = ["study", "cvt-pos", "--out", str(tmp_path), "--epochs", "1", "--seeds", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| no position embedding | cvt_nano |" in out and "| position embedding | cvt_nano |" in out
    row = read_jsonl(tmp_path / "results.jsonl")[0]
    assert row["command"] == f"vitlocal study cvt-pos --data synthetic --out {tmp_path} --epochs 1 --seeds 3"
    # the recorded command reruns exactly what ran: an arm label with spaces comes back as one argument
    assert cli.main([*argv, "--seeds", "4", "--arms", "position embedding"]) == 0
    row = read_jsonl(tmp_path / "results.jsonl")[-1]
    assert (row["arm"], row["seed"]) == ("position embedding", 4)
    assert shlex.split(row["command"])[-2:] == ["--arms", "position embedding"]
    assert cli.main(["study", "nope"]) == 2


@pytest.mark.parametrize("path", sorted((REPO / "results" / "cpu").glob("*.jsonl")), ids=lambda p: p.name)
def test_committed_results_have_every_field_and_beat_chance(path: Path) -> None:
    """The committed CPU results: one row per arm and seed of their study (every one of them, so the study as
    defined reproduces the file), each from a real run well above chance."""
    rows = read_jsonl(path)
    study = STUDIES[path.stem]
    assert rows and all(set(r) == ROW_FIELDS | {"data_sha256"} and r["study"] == study.name for r in rows)
    runs = sorted((r["arm"], r["seed"]) for r in rows)
    assert runs == sorted((arm.label, seed) for arm in study.arms for seed in study.seeds)
    for r in rows:
        assert r["final_acc1"] > 2 * 100 / r["classes"], f"{r['arm']} seed {r['seed']} is near chance"
        assert len(r["curve"]) == r["epochs"] and r["machine"] and r["command"].startswith("vitlocal study")


def test_load_model_rebuilds_a_run_trained_or_as_it_started(tmp_path: Path) -> None:
    run_study("cvt-pos", "synthetic", tmp_path, epochs=1, seeds=[2], arms=["position embedding"])
    run = tmp_path / "position-embedding-s2"
    trained, initial = load_model(run), load_model(run, initial=True)
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert not trained.training and "stage0.pos_embed" in saved  # the arm's model change is rebuilt too
    assert all(torch.equal(v, saved[k]) for k, v in trained.state_dict().items())
    torch.manual_seed(2)
    fresh = create_model("cvt_nano", num_classes=10, img_size=32, pos_embed=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in initial.state_dict().items())
    assert not torch.equal(trained.stage0.pos_embed, initial.stage0.pos_embed)  # training moved it
    before = torch.random.get_rng_state()
    load_model(run, initial=True)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is untouched


def test_throughput_of_every_arm_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = vitlocal.study.measure_arms("cvt-pos", steps=1, rounds=3, device="cpu")
    assert [r["arm"] for r in rows] == [arm.label for arm in STUDIES["cvt-pos"].arms]
    assert all(len(r["rounds"]) == 3 and r["img_per_s"] == sorted(r["rounds"])[1] for r in rows)  # the median
    assert all(r["img_per_s"] > 0 and r["minutes_per_epoch_imagenette"] > 0 for r in rows)
    assert cli.main(["study", "nope", "--throughput", str(tmp_path / "t.jsonl")]) == 2
    assert "studies: families" in capsys.readouterr().err
