"""Grade yourself: run an assignment's public checks on your notebook or module, without nbgrader.

    vitlocal check 01_lattice exercises/01_lattice/01_lattice.ipynb     # your notebook, executed in smoke mode
    vitlocal check 01_lattice my_lattice.py                             # your functions, imported from a module
    vitlocal.check.here()                                               # in a cell of your notebook, in Jupyter

Every assignment lives in ``solutions/NN_topic/NN_topic.ipynb`` (the nbgrader source). Its graded cells
hold the visible checks you see in your copy and the hidden checks an instructor grades with; the
heavier hidden checks live in ``tests/hidden/<topic>.py`` as functions that take your implementation.
`run_check` runs all of them on your work, as ``nbgrader autograde`` would, and reports points per
exercise: a passed or failed line per graded cell, never the hidden code. In this public repository
the hidden checks are the back of the book, not a secret; an instructor may grade with a private copy
(``VITLOCAL_HIDDEN_TESTS``), so a full score here says "public checks passed", nothing more. Each
failed exercise names the lecture section to re-read (the ``Re-read:`` line under its header). Written
answers (nbgrader's manually graded cells) are listed with their points; a person grades them.

A graded cell scores zero when it raises or writes to stderr, as in nbgrader; a cell that runs past the
time limit is interrupted and fails. A warning is no mistake: `warnings_to_stdout` (called by every
assignment's setup) prints warnings on stdout, where they cost nothing.

* A notebook (``.ipynb``) is executed top to bottom with nbclient in smoke mode
  (``VITLOCAL_SMOKE=1``), after its graded and read-only cells are restored from the source by
  ``grade_id`` (so edited tests do not count, as in nbgrader). A graded cell scores its points when it
  raises nothing and writes nothing to stderr.
* A module (``.py``) is run with `runpy`; its names join the assignment's setup (the read-only cells),
  and every graded cell runs in that namespace, in this process.

Where the course lives: ``$VITLOCAL_COURSE_DIR``, else the first folder upwards from the working
directory that holds ``nbgrader_config.py`` and ``solutions/``, else the checkout this package was
installed from (``pip install -e``). The hidden checks: ``$VITLOCAL_HIDDEN_TESTS``, else
``tests/hidden`` in the course. The assignment notebooks import `hidden_tests` and `randn` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import io
import math
import os
import re
import runpy
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "TOPICS",
    "CellResult",
    "Report",
    "add_check_parser",
    "course_root",
    "expect_close",
    "graded_cells",
    "here",
    "hidden_dir",
    "hidden_tests",
    "describe",
    "explain_error",
    "mismatch",
    "randn",
    "reference_parts",
    "rereads",
    "run_check",
    "run_source",
    "set_wave_",
    "setup_namespace",
    "solution_namespace",
    "source_notebook",
    "split_hidden",
    "warnings_to_stdout",
    "wave",
    "written_cells",
]

TOPICS = ("01_lattice", "02_im2col_shift", "03_cross_attention", "04_conv_projection", "05_attnconv", "06_capstone")
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
_PACKAGE = "_vitlocal_hidden"  # the name the hidden-check folder is imported under
_CHECKING = "VITLOCAL_CHECKING"  # set while a notebook is being checked, so that its own `here()` does not recurse
_EXERCISE = re.compile(r"## (Exercise \d+)")
_REREAD = re.compile(r"^Re-read: \[(?P<section>[^\]]+)\]\((?P<link>[^)]+)\)", re.MULTILINE)


# ---------------------------------------------------------------- where the course and its hidden checks live
def course_root() -> Path:
    """The course repository: the folder holding ``nbgrader_config.py``, ``solutions/`` and ``tests/hidden``."""
    if os.environ.get("VITLOCAL_COURSE_DIR"):
        return Path(os.environ["VITLOCAL_COURSE_DIR"]).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise FileNotFoundError(
        "cannot find the course (a folder with nbgrader_config.py and solutions/): run from a checkout of the "
        "vitlocal repository or set VITLOCAL_COURSE_DIR to it"
    )


def hidden_dir() -> Path:
    """The folder of the hidden checks: ``$VITLOCAL_HIDDEN_TESTS``, else ``tests/hidden`` in the course."""
    folder = Path(os.environ.get("VITLOCAL_HIDDEN_TESTS") or course_root() / "tests" / "hidden").resolve()
    if not (folder / "__init__.py").is_file():
        raise FileNotFoundError(
            f"no hidden checks in {folder} (no __init__.py): set VITLOCAL_HIDDEN_TESTS to the folder that holds them "
            f"(tests/hidden of the course repository, or an instructor's private copy)"
        )
    return folder


def hidden_tests(topic: str) -> ModuleType:
    """The hidden checks of ``topic`` (``"lattice"`` or ``"01_lattice"``): the module ``<hidden_dir>/<topic>.py``.

    The folder is imported as a package of its own (not through ``sys.path``), so a private copy anywhere
    on disk works; its modules import each other relatively.
    """
    folder = hidden_dir()
    package = sys.modules.get(_PACKAGE)
    if package is None or Path(package.__path__[0]) != folder:
        for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_PACKAGE}.{topic.split('_', 1)[1] if topic[:2].isdigit() else topic}")


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A reproducible normal tensor (float64 by default): hypothesis draws the seed, not the numbers."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def wave(*shape: int, phase: float = 0.0) -> torch.Tensor:
    """A float64 tensor of ``sin(0.37 i + phase + 0.1)`` over its flat index ``i``: the same numbers everywhere.

    Visible checks compare with stored results; unlike a random generator, a sine does not change with the
    machine or the torch version.
    """
    n = math.prod(shape)
    return torch.sin(0.37 * torch.arange(n, dtype=torch.float64) + phase + 0.1).view(*shape)


def set_wave_(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in float64 with every parameter and float buffer set to a `wave` (entry ``k`` of the sorted
    names gets phase ``k``, so the values depend on the names, not on the order of definition); running
    variances lie in [1, 1.5]. Returns the module, for the stored results of the visible checks.
    """
    module = module.double()
    with torch.no_grad():
        for k, (name, tensor) in enumerate(sorted(module.state_dict().items())):
            if tensor.is_floating_point():
                values = 0.5 * wave(*tensor.shape, phase=float(k))
                tensor.copy_(1 + values.abs() if name.endswith("running_var") else values)
    return module


def describe(value: Any) -> str:
    """A short description of an argument for a failure message: a tensor's shape, dtype and layout, else its repr."""
    if isinstance(value, torch.Tensor):
        layout = "" if value.is_contiguous() or value.numel() <= 1 else ", non-contiguous"
        return f"tensor {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}{layout}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, torch.nn.Module):
        text = repr(value) if not list(value.children()) and len(repr(value)) <= 70 else type(value).__name__
        stateful = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)
        if any(isinstance(m, stateful) for m in value.modules()):
            text += " in training mode" if value.training else " in eval mode"
        return text
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mismatch(got: torch.Tensor, want: torch.Tensor, close: torch.Tensor) -> str:
    """Where ``got`` first differs from ``want`` (``close`` is the elementwise verdict), and the largest difference.

    ``"first mismatch at [0, 1, 2]: got 0.5, expected 0.25; largest difference 0.3 (at [1, 0, 0])"``
    """
    bad = (~close).nonzero()
    if not len(bad):
        return ""
    first = bad[0].tolist()
    diff = (got.to(torch.float64) - want.to(torch.float64)).abs()
    nan = torch.isnan(diff)
    diff = torch.where(nan, torch.full_like(diff, math.inf), diff)
    worst = [int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)] if diff.dim() else []
    largest = "nan" if nan.any() else f"{diff.max().item():.3g}"
    g, w = got[tuple(first)].item(), want[tuple(first)].item()
    return (
        f"first mismatch at {first}: got {g:.6g}, expected {w:.6g}; "
        f"largest difference {largest} (at {worst}); {len(bad)} of {want.numel()} entries differ"
    )


def expect_close(got: Any, want: Any, what: str, tol: float = 1e-6) -> None:
    """A visible check on values: ``got`` has ``want``'s shape and a relative error of at most ``tol`` (CS231n's).

    The relative error is the largest ``|got - want| / max(|got| + |want|, 1e-8)`` over the entries; ``want``
    is a stored expected result (a nested list) or a tensor from an independent computation. A failure names
    ``what``, the first mismatching entry (got and expected there) and the largest difference.
    """
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what} must be a torch.Tensor, got {type(got).__name__}")
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    got = got.detach().to(torch.float64)
    if not got.numel():
        return
    errors = (got - want).abs() / (got.abs() + want.abs()).clamp_min(1e-8)
    error = errors.max().item()
    if torch.isnan(errors).any():
        error = math.nan
    if not error <= tol:  # a NaN fails too
        where = mismatch(got, want, errors <= tol)
        raise AssertionError(f"{what}: relative error {error:.2g}, more than the tolerance {tol:g}; {where}")


@contextlib.contextmanager
def reference_parts(answer: Any, **references: Any) -> Iterator[None]:
    """Check ``answer`` on its own: while the block runs, the earlier answers it builds on are the references.

    ``answer`` is a function or class a learner wrote; ``references`` maps the names of earlier answers it may
    call (``seq2img=vitlocal.lattice.seq2img``) to reference versions. Inside the block those names resolve to
    the references in the namespace ``answer`` was defined in (the notebook's, or the learner's module);
    afterwards every name is back as it was. So one mistake costs its own points: a wrong ``seq2img`` fails
    seq2img's cells, not also every later cell whose answer calls it::

        with reference_parts(locality_on_tokens, seq2img=lattice.seq2img, img2seq=lattice.img2seq):
            out = locality_on_tokens(tokens, ffn, 3, 3)
    """
    missing = object()
    saved = [
        (ns, name, ns.get(name, missing))
        for ns in _namespaces(answer)
        for name in references
        if ns.get(name, missing) is not answer  # the answer under check stays the learner's
    ]
    try:
        for namespace, name, _ in saved:
            namespace[name] = references[name]
        yield
    finally:
        for namespace, name, value in reversed(saved):
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


_LIBRARIES = ("vitlocal", "torch", "einops", "builtins", "functools")


def _namespaces(answer: Any) -> list[dict[str, Any]]:
    """The global namespaces the code of ``answer`` (a function, a class, a partial) looks names up in."""
    functions: list[Any] = []
    if isinstance(answer, type):
        for cls in answer.__mro__:
            functions += [f for f in vars(cls).values() if hasattr(f, "__globals__")]
            functions += [
                getattr(f, "__func__", None) for f in vars(cls).values() if isinstance(f, (classmethod, staticmethod))
            ]
    else:
        functions.append(getattr(answer, "func", answer))  # functools.partial
    found: dict[int, dict[str, Any]] = {}
    for function in functions:
        namespace = getattr(function, "__globals__", None)
        if namespace is not None and str(namespace.get("__name__", "")).split(".")[0] not in _LIBRARIES:
            found[id(namespace)] = namespace
    return list(found.values())


_EINOPS = re.compile(
    r'pattern "(?P<pattern>[^"]*)"\.\s*Input tensor shape: (?:torch\.Size\()?\[?(?P<shape>[^\]\)]*)\]?\)?\.'
    r"(?:\s*Additional info: (?P<info>.*?)\.)?\s*(?P<reason>.*)$",
    re.DOTALL,
)


def explain_error(error: BaseException | str, name: str = "") -> str:
    """One line for an error: einops' shape errors with the pattern, the input's shape and the reason.

    ``name`` (the type's name when ``error`` is a message) starts the line; an `einops.EinopsError` reads
    ``EinopsError: the pattern "b (h w) c -> b c h w" does not fit an input of shape (1, 6, 2) with h=2, w=2:
    Shape mismatch, 6 != 4``.
    """
    name = name or type(error).__name__
    text = str(error)
    found = _EINOPS.search(text) if "EinopsError" in name or "rearrange" in text or "reduce" in text else None
    if found:
        shape = ", ".join(size.strip() for size in found["shape"].split(",") if size.strip())
        info = found["info"] or ""
        sizes = ", ".join(f"{k}={v}" for k, v in re.findall(r"'(\w+)': (\d+)", info))
        reason = " ".join(found["reason"].split())
        return (
            f'{name}: the pattern "{found["pattern"]}" does not fit an input of shape ({shape})'
            f"{' with ' + sizes if sizes else ''}: {reason}"
        )
    return f"{name}: {_first_line(text)}".rstrip(": ")


# ---------------------------------------------------------------- reading an assignment's source notebook
def source_notebook(topic: str) -> Path:
    """``solutions/<topic>/<topic>.ipynb`` in the course."""
    if topic not in TOPICS:
        raise ValueError(f"unknown assignment {topic!r}; choose one of {', '.join(TOPICS)}")
    return course_root() / "solutions" / topic / f"{topic}.ipynb"


def _nbgrader(cell: Any) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _source(cell: Any) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _read(path: Path) -> Any:
    return _jupyter("nbformat").read(str(path), as_version=4)


def _jupyter(name: str) -> ModuleType:
    """Import a Jupyter package (nbformat, nbclient), with an actionable message when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ValueError(f"vitlocal check needs {name}, which JupyterLab brings: pip install -e '.[lab]'") from error


def _by_exercise(nb: Any) -> Iterator[tuple[str, Any]]:
    """``(exercise, cell)`` for every cell, the exercise being "Exercise N" of the header above it ("setup" before)."""
    exercise = "setup"
    for cell in nb.cells:
        if cell["cell_type"] == "markdown" and (header := _EXERCISE.match(_source(cell))):
            exercise = header[1]
        yield exercise, cell


def graded_cells(nb: Any) -> Iterator[tuple[str, Any]]:
    """``(exercise, cell)`` for every autograded cell (the checks), the exercise being "Exercise N"."""
    for exercise, cell in _by_exercise(nb):
        if _nbgrader(cell).get("grade") and not _nbgrader(cell).get("solution"):
            yield exercise, cell


def written_cells(nb: Any) -> Iterator[tuple[str, Any]]:
    """``(exercise, cell)`` for every written answer: nbgrader's manually graded answer cells."""
    for exercise, cell in _by_exercise(nb):
        if _nbgrader(cell).get("grade") and _nbgrader(cell).get("solution"):
            yield exercise, cell


def rereads(nb: Any) -> dict[str, str]:
    """Exercise -> the lecture section its header says to re-read (``Re-read: [section](link)``)."""
    found = {}
    for exercise, cell in _by_exercise(nb):
        if cell["cell_type"] == "markdown" and (line := _REREAD.search(_source(cell))):
            found.setdefault(exercise, f"{line['section']} ({line['link'].removeprefix('../../')})")
    return found


def split_hidden(source: str) -> tuple[str, str]:
    """``(visible, hidden)``: a graded cell's code outside and inside its hidden-test markers."""
    visible, hidden, inside = [], [], False
    for line in source.splitlines():
        if BEGIN_HIDDEN in line or END_HIDDEN in line:
            inside = BEGIN_HIDDEN in line
            continue
        (hidden if inside else visible).append(line)
    return "\n".join(visible), "\n".join(hidden)


def _is_setup(cell: Any) -> bool:
    """The read-only code cells the checks rely on: parameters, smoke mode, imports and helpers."""
    meta = _nbgrader(cell)
    return cell["cell_type"] == "code" and meta.get("locked", False) and not meta.get("grade", False)


# ---------------------------------------------------------------- running cells in this process
def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{category.__name__}: {message} (a warning; it costs no points)", file=sys.stdout)


def warnings_to_stdout() -> None:
    """Print warnings on stdout: nbgrader scores a graded cell that writes to stderr zero; a warning is no mistake."""
    warnings.showwarning = _show_warning


def run_source(source: str, namespace: dict[str, Any]) -> str | None:
    """Run ``source`` in ``namespace`` as a notebook cell would run; ``None`` if it passed silently, else why not.

    As in nbgrader, a cell fails when it raises or writes to stderr; warnings go to stdout (`warnings_to_stdout`).
    """
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings_to_stdout()
            exec(compile(source, "<graded cell>", "exec"), namespace)
    except Exception as error:
        return _describe(error)
    if err.getvalue().strip():
        return f"wrote to stderr (a graded cell must be silent): {_first_line(err.getvalue())}"
    return None


def _first_line(text: str, limit: int = 400) -> str:
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(error: BaseException) -> str:
    """One line for an error raised in a graded cell, naming the learner's function it came from where known."""
    where = _learner_frame(error.__traceback__)
    text = explain_error(error)
    return f"{text} (raised in {where})" if where and not isinstance(error, AssertionError) else text


def _learner_frame(tb: Any) -> str | None:
    """The innermost function of the traceback that is not library code (the learner's function that broke)."""
    name = None
    while tb is not None:
        code = tb.tb_frame.f_code
        module = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if module not in (*_LIBRARIES, "hypothesis", _PACKAGE) and code.co_name != "<module>":
            name = getattr(code, "co_qualname", code.co_name)
        tb = tb.tb_next
    return name


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (the kernel inherits them)."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def setup_namespace(nb: Any) -> dict[str, Any]:
    """A fresh namespace holding the assignment's setup (its read-only code cells), run in smoke mode."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with _environment(VITLOCAL_SMOKE="1"):
        for cell in nb.cells:
            if _is_setup(cell):
                failure = run_source(_source(cell), namespace)
                if failure:
                    raise RuntimeError(f"the setup cell {_nbgrader(cell)['grade_id']!r} failed: {failure}")
    return namespace


def solution_namespace(nb: Any) -> dict[str, Any]:
    """The setup plus the reference answers of the source notebook (what a perfect submission defines)."""
    namespace = setup_namespace(nb)
    for cell in nb.cells:
        if _nbgrader(cell).get("solution") and cell["cell_type"] == "code":  # written answers are markdown
            failure = run_source(_source(cell), namespace)
            if failure:
                raise RuntimeError(f"the answer cell {_nbgrader(cell)['grade_id']!r} failed: {failure}")
    return namespace


# ---------------------------------------------------------------- the report
@dataclass(frozen=True)
class CellResult:
    """One graded cell: its exercise, id, points scored out of ``max_points``, and why it failed (or None)."""

    exercise: str
    grade_id: str
    points: float
    max_points: float
    failure: str | None


@dataclass(frozen=True)
class Report:
    """The result of `run_check`: one `CellResult` per autograded cell, in notebook order; written answers apart.

    ``written`` maps each written answer's ``grade_id`` to its exercise and points (a person grades them);
    ``reread`` maps each exercise to the lecture section to re-read when it fails.
    """

    topic: str
    path: Path
    how: str
    cells: list[CellResult]
    written: dict[str, tuple[str, float]]
    reread: dict[str, str]

    @property
    def points(self) -> float:
        return sum(c.points for c in self.cells)

    @property
    def max_points(self) -> float:
        return sum(c.max_points for c in self.cells)

    @property
    def passed(self) -> bool:
        return all(c.failure is None for c in self.cells)

    def exercises(self) -> dict[str, list[CellResult]]:
        grouped: dict[str, list[CellResult]] = {}
        for cell in self.cells:
            grouped.setdefault(cell.exercise, []).append(cell)
        return grouped

    def __str__(self) -> str:
        width = max(len(name) for name in [c.grade_id for c in self.cells] + list(self.written)) + 6
        lines = [f"vitlocal check {self.topic}: {self.path} ({self.how})", ""]
        for exercise, cells in self.exercises().items():
            scored, possible = sum(c.points for c in cells), sum(c.max_points for c in cells)
            lines.append(f"  {exercise:<{width}} {_pts(scored, possible)}")
            for c in cells:
                status = "passed" if c.failure is None else f"failed: {c.failure}"
                lines.append(f"      {c.grade_id:<{width - 4}} {_pts(c.points, c.max_points)}  {status}")
            for grade_id, (written_in, points) in self.written.items():
                if written_in == exercise:
                    lines.append(f"      {grade_id:<{width - 4}} ?/{points:g}  a written answer: a person grades it")
            if scored < possible and exercise in self.reread:
                lines.append(f"      re-read {self.reread[exercise]}")
        lines.append("")
        score = f"{_pts(self.points, self.max_points)} points"
        if self.written:
            score += f" (and {sum(p for _, p in self.written.values()):g} for written answers, graded by hand)"
        if self.passed:
            lines.append(f"public checks passed: {score} (an instructor grading with private checks may find more)")
        else:
            failed = sum(c.failure is not None for c in self.cells)
            lines.append(f"{score} on the public checks; {failed} graded cell(s) failed")
        return "\n".join(lines)


def _pts(points: float, max_points: float) -> str:
    return f"{points:g}/{max_points:g}"


def _result(exercise: str, cell: Any, failure: str | None) -> CellResult:
    meta = _nbgrader(cell)
    points = float(meta["points"])
    return CellResult(exercise, meta["grade_id"], 0.0 if failure else points, points, failure)


# ---------------------------------------------------------------- checking a module
def _check_module(source_nb: Any, path: Path) -> list[CellResult]:
    namespace = setup_namespace(source_nb)
    try:
        with _environment(VITLOCAL_SMOKE="1"), contextlib.redirect_stdout(io.StringIO()):
            learner = runpy.run_path(str(path), run_name="learner")
    except Exception as error:
        raise ValueError(f"{path} cannot be imported ({_describe(error)}); fix it and check again") from error
    namespace.update({name: value for name, value in learner.items() if not name.startswith("__")})
    with _environment(VITLOCAL_SMOKE="1"):
        return [_result(ex, cell, run_source(_source(cell), namespace)) for ex, cell in graded_cells(source_nb)]


# ---------------------------------------------------------------- checking a notebook
def _restore_graded_cells(learner_nb: Any, source_nb: Any) -> Any:
    """The learner's notebook with every graded and read-only cell replaced by the source's (nbgrader's overwrite).

    Graded cells the learner deleted are appended, so that they run after every answer.
    """
    source_cells = {_nbgrader(c)["grade_id"]: c for c in source_nb.cells if _nbgrader(c).get("locked")}
    restored = [source_cells.get(_nbgrader(c).get("grade_id"), c) for c in learner_nb.cells]
    present = {_nbgrader(c).get("grade_id") for c in restored}
    learner_nb.cells = restored + [c for grade_id, c in source_cells.items() if grade_id not in present]
    return learner_nb


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_IPYTHON_FRAME = re.compile(r"Cell In\[\d+\], line \d+, in (\w+)\(")


def _cell_failure(cell: Any) -> str | None:
    for output in cell.get("outputs", []):
        if output["output_type"] == "error":
            text = explain_error(output["evalue"], output["ename"])
            frames = _IPYTHON_FRAME.findall(_ANSI.sub("", "\n".join(output.get("traceback", []))))
            if frames and output["ename"] != "AssertionError":
                text += f" (raised in {frames[-1]})"
            return text
        if output["output_type"] == "stream" and output["name"] == "stderr" and output["text"].strip():
            return f"wrote to stderr (a graded cell must be silent): {_first_line(output['text'])}"
    return None


def _check_notebook(source_nb: Any, path: Path, timeout: int) -> list[CellResult]:
    nb = _restore_graded_cells(_read(path), source_nb)
    resources = {"metadata": {"path": str(path.parent)}}  # run in the notebook's folder, as Jupyter does
    timed_out = {"ename": "CellTimeoutError", "evalue": f"the cell ran past the {timeout} s limit", "traceback": []}
    client = _jupyter("nbclient").NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout=timed_out,
        resources=resources,
    )
    with _environment(VITLOCAL_SMOKE="1", VITLOCAL_HIDDEN_TESTS=str(hidden_dir()), **{_CHECKING: "1"}):
        client.execute(stderr=subprocess.DEVNULL)  # the kernel's own log lines; the cells' stderr is in their outputs
    return [_result(exercise, cell, _cell_failure(cell)) for exercise, cell in graded_cells(nb)]


def run_check(topic: str, path: str | Path, timeout: int = 300) -> Report:
    """Run the visible and hidden checks of assignment ``topic`` on a learner's notebook or module.

    Args:
        topic: the assignment, e.g. ``"01_lattice"`` (one of `TOPICS`).
        path: the learner's ``.ipynb`` (executed in smoke mode) or ``.py`` (imported).
        timeout: seconds allowed per notebook cell.
    Returns:
        a `Report`; ``str(report)`` lists points per exercise and graded cell, never the hidden code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass your notebook (.ipynb) or module (.py)")
    source_nb = _read(source_notebook(topic))
    written = {_nbgrader(c)["grade_id"]: (ex, float(_nbgrader(c)["points"])) for ex, c in written_cells(source_nb)}
    if path.suffix == ".ipynb":
        how, cells = "notebook executed in smoke mode", _check_notebook(source_nb, path, timeout)
    elif path.suffix == ".py":
        how, cells = "module imported, checks run in smoke mode", _check_module(source_nb, path)
    else:
        raise ValueError(f"{path} must be a notebook (.ipynb) or a Python module (.py)")
    return Report(topic, path, how, cells, written, rereads(source_nb))


# ---------------------------------------------------------------- checking the notebook you are in
def _this_notebook() -> Path:
    """The notebook this kernel serves: Jupyter's ``JPY_SESSION_NAME``, else the one assignment notebook here."""
    session = Path(os.environ.get("JPY_SESSION_NAME", ""))
    if session.suffix == ".ipynb" and session.is_file():
        return session
    found = [Path.cwd() / f"{topic}.ipynb" for topic in TOPICS if (Path.cwd() / f"{topic}.ipynb").is_file()]
    if len(found) != 1:
        raise FileNotFoundError(
            f"cannot tell which notebook to check in {Path.cwd()}: call here('path/to/NN_topic.ipynb')"
        )
    return found[0]


def here(path: str | Path | None = None, topic: str | None = None, timeout: int = 300) -> Report | None:
    """Check the notebook you are working in, from one of its cells: ``vitlocal.check.here()``.

    It checks the notebook **as last saved** (save first: Ctrl+S), executing a copy in smoke mode with every
    visible and hidden check, and prints the points per exercise and the lecture section to re-read for each
    failed one. Inside a check or an nbgrader run it does nothing (so it may stay in the notebook).

    Args:
        path: the notebook; by default the one this kernel serves (or the only ``NN_topic.ipynb`` here).
        topic: the assignment; by default the notebook's name (``01_lattice.ipynb`` -> ``"01_lattice"``).
        timeout: seconds allowed per cell.
    Returns:
        the `Report`, or ``None`` where it did nothing.
    """
    if os.environ.get(_CHECKING) or "NBGRADER_EXECUTION" in os.environ:
        print("self-check skipped: this notebook is being checked or graded right now")
        return None
    path = Path(path) if path else _this_notebook()
    topic = topic or path.stem
    saved = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%H:%M:%S")
    print(f"checking {path.name} as saved at {saved}: every cell runs again in smoke mode (a minute or two) ...")
    report = run_check(topic, path, timeout)
    print(report)
    return report


# ---------------------------------------------------------------- the command line
def _check(args: argparse.Namespace) -> int:
    report = run_check(args.topic, args.path, args.timeout)
    print(report)
    return 0 if report.passed else 1


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``vitlocal check TOPIC PATH`` to the `vitlocal` command line's subparsers; returns its parser."""
    check = subparsers.add_parser(
        "check",
        help="run an assignment's public checks (visible + hidden) on your notebook or module",
        description=(
            "Run an assignment's visible and hidden checks on your notebook (.ipynb, executed in smoke mode) or "
            "module (.py) and report points per exercise, without showing the hidden code. Exit status 0 when "
            "every public check passed."
        ),
    )
    check.add_argument("topic", choices=TOPICS, help="the assignment")
    check.add_argument("path", help="your notebook (.ipynb) or module (.py)")
    check.add_argument("--timeout", type=int, default=300, help="seconds allowed per notebook cell (default 300)")
    check.set_defaults(run=_check)
    return check
