"""The GPU report's dry run on a CPU: every section runs at toy sizes and lands in the results file and summary.

(The figures themselves need a GPU; here only the code path is proven, with what a CPU cannot run skipped.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitlocal.bench import timm_model
from vitlocal.gpu_report import SECTIONS, TIMM_WEIGHTS, gpu_report, summary


def test_tiny_dry_run_writes_every_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "report.json"
    report = gpu_report(out, "synthetic", device="cpu", tiny=True, runs=tmp_path / "runs", command="test")
    assert json.loads(out.read_text()) == report
    parts = report["sections"]
    assert list(parts) == list(SECTIONS) and not [p["error"] for p in parts.values() if "error" in p]
    assert [r["model"] for r in parts["throughput"]["rows"]] == ["deit_nano", "localvit_nano"]
    assert all(r["img_per_s"] > 0 and r["mfu_datasheet"] is None for r in parts["throughput"]["rows"])  # no GPU
    slide = {r["op"]: r for r in parts["slide"]["rows"]}
    assert {"shift", "im2col", "unfold", "deformed shift, one conv (training)"} <= set(slide)
    assert slide["shift"]["baseline"] == "im2col" and slide["shift"]["fwd_bwd_speedup"] > 0
    weights = parts["timm_weights"]
    if timm_model("deit_tiny", 224)[0] is None:  # no timm here (it needs torchvision): the section says it skipped
        assert weights["rows"] == [] and weights["notes"][0].startswith("skipped: timm does not import here")
    else:
        assert [(r["model"], r["match"]) for r in weights["rows"]] == [(m, True) for m in TIMM_WEIGHTS]
    assert parts["loading"]["in_memory_augmented_img_per_s"] > 0
    assert parts["loading"]["fastest_model_img_per_s"] == max(r["img_per_s"] for r in parts["throughput"]["rows"])
    assert [r["epochs"] for r in parts["accuracy"]["rows"]] == [1, 1]
    text = summary(report)
    assert "| deit_nano | vitlocal | no | 32 |" in text and "| shift |" in text and "| localvit_nano | 32 | 1 |" in text


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sections: throughput"):
        gpu_report(tmp_path / "r.json", "synthetic", device="cpu", tiny=True, sections=["nope"])


def test_the_readme_gpu_results_are_the_report_summary() -> None:
    """README's GPU results are pasted from the committed report's summary (what `gpu_report` prints last), never
    typed; until a report is committed the README says there is none."""
    root = Path(__file__).resolve().parents[1]
    readme, report = (root / "README.md").read_text(), root / "results" / "gpu" / "h200.json"
    if report.exists():
        assert summary(json.loads(report.read_text())) in readme, "paste the summary `gpu_report` printed"
    else:
        assert "**On GPU: none yet.**" in readme
