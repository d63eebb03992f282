"""Curves of training runs: loss and accuracy per epoch, read from each run's ``metrics.jsonl``.

matplotlib is imported only when a figure is drawn (it belongs to the ``lab`` extra, not the core).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitlocal.records import read_metrics

__all__ = ["plot_runs"]


def plot_runs(runs: str | Path | Sequence[str | Path], labels: Sequence[str] | None = None) -> Any:
    """One figure, two panels: train (solid) and validation (dashed) loss, and validation top-1 (%), per epoch.

    ``runs``: one run folder (or ``metrics.jsonl``) or several, drawn in the same colours across panels;
    ``labels`` default to the folder names. Returns the ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt

    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    labels = list(labels) if labels is not None else [Path(run).name for run in runs]
    if len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs; give one label per run")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        rows, colour = read_metrics(run), f"C{i % 10}"  # the same colour in both panels
        epochs = [row["epoch"] for row in rows]
        ax_loss.plot(epochs, [row["train_loss"] for row in rows], color=colour, label=f"{label} train")
        ax_loss.plot(epochs, [row["val_loss"] for row in rows], "--", color=colour, label=f"{label} val")
        ax_acc.plot(epochs, [row["val_acc1"] for row in rows], color=colour, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig
