"""What a training run leaves behind, written so that a crash never leaves a broken file.

    run folder   config.json (the settings), checkpoint.pt (every epoch), metrics.jsonl (one row per epoch)
    results      one JSON object per line (`vitlocal.study` writes one line per finished run)

Every file is written whole to a temporary name beside it and renamed over the old one (``os.replace`` is
atomic on POSIX and Windows): a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_atomically", "write_text_atomically", "read_jsonl", "write_jsonl", "read_metrics"]


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def save_atomically(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state, path)``, atomically: a crash mid-write never leaves a broken checkpoint."""
    path = Path(path)
    tmp = _tmp(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (``[]`` when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines, atomically."""
    write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run folder's ``metrics.jsonl`` (or of that file itself)."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run} a run folder written by vitlocal train?")
    return read_jsonl(path)
