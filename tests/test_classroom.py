"""The classroom, proven: solutions/ is the single source, exercises/ is generated from it, grading works.

* Conventions of the source notebooks (metadata, markers, parameters and smoke cells, exercise headers, the
  points stated at the top, the self-check cell at the end).
* A real nbgrader round trip in a temporary course: ``generate_assignment`` with a database (its release
  must equal the committed exercises/), then ``autograde`` of two students per assignment: one whose
  submission is the solution (every point) and one who handed in the untouched exercise (no point,
  and nothing but ``NotImplementedError`` on the way).
* The exercises carry no outputs and no solution or hidden code.
* Every plausible wrong answer in ``tests/hidden/wrong`` fails a hidden check; the subtle ones pass every
  visible check (so only the hidden checks can catch them).
* ``vitlocal check`` grades a module and a notebook and never prints hidden code; ``vitlocal.check.here()``
  grades the notebook it is called from, names the lecture section to re-read, and a warning costs nothing.
* One mistake costs its own points: an answer that builds on earlier ones is checked with the reference
  versions of those in place, so a learner who skipped (or got wrong) the earlier answers still earns its points.

That the solutions run top to bottom in smoke mode is also proven by nbval (see the README's test command).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vitlocal import check
from vitlocal.check import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, TOPICS

ROOT = Path(__file__).resolve().parents[1]
GRADE_ID = re.compile(r"[a-z0-9_]+")


def _notebook(folder: str, topic: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / folder / topic / f"{topic}.ipynb", as_version=4)


def _meta(cell: nbformat.NotebookNode) -> dict:
    return cell.metadata.get("nbgrader", {})


def _regions(source: str, begin: str, end: str) -> list[str]:
    """The non-blank lines between ``begin`` and ``end`` markers."""
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line or end in line:
            inside = begin in line
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


# ---------------------------------------------------------------- conventions of the source notebooks
@pytest.mark.parametrize("topic", TOPICS)
def test_source_notebook_conventions(topic):
    nb = _notebook("solutions", topic)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"], "the first code cell must be tagged `parameters`"
    assert "SMOKE = False" in code[0].source
    assert "VITLOCAL_SMOKE" in code[1].source and "NBGRADER_EXECUTION" in code[1].source, "cell 2 applies smoke mode"
    assert "warnings_to_stdout()" in code[2].source, "the setup cell sends warnings to stdout (they cost no points)"
    assert code[-1].source.endswith("vitlocal.check.here()  # the same line works in any cell"), "the self-check"
    ids = [_meta(c)["grade_id"] for c in nb.cells if _meta(c)]
    assert len(ids) == len(set(ids)) and all(GRADE_ID.fullmatch(i) for i in ids), ids
    answers = [c for c in nb.cells if _meta(c).get("solution")]
    assert answers, "an assignment has exercises"
    visible = sum(_meta(c)["points"] for _, c in check.graded_cells(nb) if BEGIN_HIDDEN not in c.source)
    hidden = sum(_meta(c)["points"] for _, c in check.graded_cells(nb) if BEGIN_HIDDEN in c.source)
    written = sum(_meta(c)["points"] for _, c in check.written_cells(nb))
    stated = f"**Points.** {visible + hidden + written:g} in all: {visible:g} in graded cells whose checks you can "
    stated += f"read in full, {hidden:g} in graded cells that also run hidden checks"
    stated += f", and {written:g} for written answers, graded by a person." if written else "."
    assert stated in nb.cells[0].source, f"the top must state the points: {stated}"
    for cell in nb.cells:
        meta, source = _meta(cell), cell.source
        assert cell.cell_type == "markdown" or (cell.outputs == [] and cell.execution_count is None), (
            "solutions are committed without outputs (no real run is stored)"
        )
        assert (BEGIN_SOLUTION in source) == bool(meta.get("solution")), (
            f"solution markers only in answer cells: {meta}"
        )
        assert (BEGIN_HIDDEN in source) <= bool(meta.get("grade")), f"hidden tests only in graded cells: {meta}"
        if meta.get("grade") and meta.get("solution"):  # a written answer, graded by a person
            assert cell.cell_type == "markdown" and meta["points"] > 0 and not meta["locked"], meta
        elif meta.get("grade"):
            assert meta["points"] > 0 and meta["locked"], meta
            last = ast.parse(source).body[-1]
            assert not (isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call)), (
                f"{meta['grade_id']} ends with a bare expression, which nbgrader would read as a score"
            )
    exercises = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Exercise")]
    for header in exercises:
        assert re.search(r"Difficulty ★+☆* · about \d+ minutes · \d+ points?", header.source), header.source[:80]
    answered = [exercise for exercise, cell in check._by_exercise(nb) if _meta(cell).get("solution")]
    titles = [f"Exercise {n}" for n in range(1, len(exercises) + 1)]
    assert sorted(set(answered)) == sorted(titles), f"every exercise (numbered 1, 2, ...) has answer cells: {answered}"
    assert sorted(check.rereads(nb)) == sorted(titles), "every exercise names the lecture section to re-read"
    hidden_by_exercise = {}
    for exercise, cell in check.graded_cells(nb):
        hidden_by_exercise[exercise] = hidden_by_exercise.get(exercise, False) or BEGIN_HIDDEN in cell.source
    assert all(hidden_by_exercise.values()), f"every exercise needs a hidden check: {hidden_by_exercise}"


# ---------------------------------------------------------------- the release: no outputs, no solutions
@pytest.mark.parametrize("topic", TOPICS)
def test_exercises_carry_no_outputs_and_no_solutions(topic):
    source, release = _notebook("solutions", topic), _notebook("exercises", topic)
    text = "\n".join(c.source for c in release.cells)
    for marker in (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN):
        assert marker not in text
    for cell in release.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "exercises carry no outputs"
    released = {_meta(c)["grade_id"]: c.source for c in release.cells if _meta(c)}
    for cell in source.cells:
        grade_id = _meta(cell).get("grade_id")
        if _meta(cell).get("solution"):
            stub = "YOUR ANSWER HERE" if cell.cell_type == "markdown" else "raise NotImplementedError"
            assert stub in released[grade_id], f"{grade_id} has no stub in the exercise"
            solution = _regions(cell.source, BEGIN_SOLUTION, END_SOLUTION)
            code = [line for line in solution if re.search(r"\w", line) and not line.startswith("#")]
            leaked = [line for line in code if line in released[grade_id]]
            assert not leaked, f"solution code in the exercise {grade_id}: {leaked}"
        for line in _regions(cell.source, BEGIN_HIDDEN, END_HIDDEN):
            assert line not in text, f"hidden code in the exercise: {line}"


# ---------------------------------------------------------------- a real nbgrader round trip
def _nbgrader(course: Path, *args: str, **env: str) -> None:
    """Run ``nbgrader ARGS`` in ``course``; its own config file pulls in the repository's."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # nbgrader calls alembic
    run = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A temporary course graded once: students ``solution`` and ``untouched`` for every assignment."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(ROOT / 'nbgrader_config.py')!r})  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        f"c.CourseDirectory.source_directory = {str(ROOT / 'solutions')!r}\n"
    )
    _nbgrader(root, "generate_assignment", "*", "--force")  # with the gradebook, as an instructor must
    for topic in TOPICS:
        for student, folder in (("solution", "solutions"), ("untouched", "exercises")):
            (root / "submitted" / student / topic).mkdir(parents=True)
            shutil.copy(ROOT / folder / topic / f"{topic}.ipynb", root / "submitted" / student / topic)
    _nbgrader(root, "autograde", "*", VITLOCAL_HIDDEN_TESTS=str(ROOT / "tests" / "hidden"))
    return root


def _scores(course: Path, topic: str, student: str) -> dict[str, tuple[float, float]]:
    """Every graded cell's (score, maximum); written answers that wait for a person score ``None``."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "vitlocal") as gradebook:
        notebook = gradebook.find_submission_notebook(topic, topic, student)
        return {g.name: (None if g.needs_manual_grade else g.score, g.max_score) for g in notebook.grades}


def _outputs(course: Path, topic: str, student: str) -> list[tuple[nbformat.NotebookNode, list]]:
    nb = nbformat.read(course / "autograded" / student / topic / f"{topic}.ipynb", as_version=4)
    return [(cell, cell.outputs) for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("topic", TOPICS)
def test_regenerating_the_exercises_changes_nothing(course, topic):
    regenerated = nbformat.read(course / "exercises" / topic / f"{topic}.ipynb", as_version=4)
    assert regenerated == _notebook("exercises", topic), (
        f'exercises/{topic} is stale: regenerate it with `nbgrader generate_assignment "*" --force --no-db`'
    )


def test_the_release_holds_the_notebooks_only(course):
    def notebooks(folder):
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.ipynb"))

    assert notebooks(ROOT / "exercises") == notebooks(course / "exercises") == [f"{t}/{t}.ipynb" for t in TOPICS]


@pytest.mark.parametrize("topic", TOPICS)
def test_the_solution_gets_every_point(course, topic):
    scores = _scores(course, topic, "solution")
    written = {_meta(c)["grade_id"] for _, c in check.written_cells(_notebook("solutions", topic))}
    assert all(scores.pop(grade_id)[0] is None for grade_id in written), "a person grades the written answers"
    assert scores and all(score == max_score for score, max_score in scores.values()), scores
    for cell, outputs in _outputs(course, topic, "solution"):
        assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"], cell.source[:200]


@pytest.mark.parametrize("topic", TOPICS)
def test_an_untouched_exercise_gets_no_point(course, topic):
    scores = _scores(course, topic, "untouched")
    assert scores and all(score == 0 for score, _ in scores.values()), scores


@pytest.mark.parametrize("topic", TOPICS)
def test_exercises_run_up_to_their_stubs(course, topic):
    for cell, outputs in _outputs(course, topic, "untouched"):
        errors = [o.ename for o in outputs if o.output_type == "error"]
        assert set(errors) <= {"NotImplementedError"}, f"{errors} in\n{cell.source[:300]}"
        if _meta(cell).get("grade"):
            assert errors, f"the graded cell {_meta(cell)['grade_id']} passes on the untouched stubs"


# ---------------------------------------------------------------- the wrong answers
def _wrong_answers() -> list:
    modules = {topic: importlib.import_module(f"tests.hidden.wrong.{topic.split('_', 1)[1]}") for topic in TOPICS}
    return [pytest.param(t, wrong, id=f"{t}-{wrong.name}") for t, module in modules.items() for wrong in module.WRONG]


@functools.cache
def _graded(topic: str) -> tuple[dict, list[tuple[str, str]]]:
    """The namespace of a perfect submission and the (visible, hidden) halves of every graded cell."""
    nb = _notebook("solutions", topic)
    return check.solution_namespace(nb), [check.split_hidden(c.source) for _, c in check.graded_cells(nb)]


def test_every_assignment_has_three_wrong_answers_or_more():
    topics = [param.values[0] for param in _wrong_answers()]
    assert all(topics.count(topic) >= 3 for topic in TOPICS)


@pytest.mark.parametrize("topic", TOPICS)
def test_every_hidden_check_passes_on_the_solution_alone(topic):
    """A hidden block must stand on its own: the wrong-answer test below runs it without its visible part."""
    namespace, cells = _graded(topic)
    failures = [f for _, hidden in cells if hidden and (f := check.run_source(hidden, dict(namespace)))]
    assert not failures, failures


@pytest.mark.parametrize(("topic", "wrong"), _wrong_answers())
def test_a_wrong_answer_fails_a_hidden_check(topic, wrong):
    namespace, cells = _graded(topic)
    submission = {**namespace, **wrong.replaces}
    caught = any(check.run_source(hidden, dict(submission)) for _, hidden in cells if hidden)
    assert caught, f"no hidden check catches {wrong.name}: {wrong.mistake}"
    if wrong.subtle:
        failures = [f for visible, _ in cells if (f := check.run_source(visible, dict(submission)))]
        assert not failures, f"{wrong.name} is marked subtle but a visible check catches it: {failures}"


# ---------------------------------------------------------------- vitlocal check
def _solution_module(topic: str) -> str:
    """The solution as a learner's module: the setup cells, then the answer cells."""
    nb = _notebook("solutions", topic)
    cells = [c for c in nb.cells if c.cell_type == "code" and (_meta(c).get("locked") or _meta(c).get("solution"))]
    return "\n\n".join(c.source for c in cells if not _meta(c).get("grade")) + "\n"


def test_check_grades_a_module(tmp_path):
    good = tmp_path / "lattice.py"
    good.write_text(_solution_module("01_lattice"))
    report = check.run_check("01_lattice", good)
    assert report.passed and report.points == report.max_points == 23, str(report)
    assert "and 4 for written answers, graded by hand" in str(report), str(report)
    assert "public checks passed" in str(report) and "all tests passed" not in str(report).lower()

    bad = tmp_path / "columns_first.py"  # tokens laid column-major both ways: they still round-trip
    bad.write_text(
        _solution_module("01_lattice")
        + "\n\ndef seq2img(tokens, h, w):\n    return rearrange(tokens, 'b (w h) c -> b c h w', h=h, w=w)\n"
        + "\n\ndef img2seq(x):\n    return rearrange(x, 'b c h w -> b (w h) c')\n"
    )
    report = check.run_check("01_lattice", bad)
    failed = {c.grade_id for c in report.cells if c.failure}
    lattice_cells = {"test_seq2img_shape", "test_seq2img_values", "test_img2seq_round_trip", "test_img2seq_values"}
    assert failed == lattice_cells, str(report)  # locality_on_tokens, which calls them, keeps its points
    assert report.points == 17 and "public checks passed" not in str(report)
    assert "seq2img(tokens (1, 6, 2), h=2, w=3): relative error 0.5, more than the tolerance 1e-06" in str(report)
    assert "first mismatch at [0, 0, 0, 1]: got 4, expected 2; largest difference 4" in str(report), str(report)
    graded = check.graded_cells(_notebook("solutions", "01_lattice"))
    hidden = [line.strip() for _, cell in graded for line in check.split_hidden(cell.source)[1].splitlines()]
    assert not [line for line in hidden if line and line in str(report)], "the report shows hidden code"


def test_a_design_check_names_the_value_it_got_and_the_one_it_expected():
    from tests.hidden import capstone, lattice

    config = {"dim": 64, "depth": 4}
    report = {"config": {"dim": 96, "depth": 4}, "fingerprint": [2.3, 2.1], "rows": []}
    with pytest.raises(AssertionError, match=r"dim: 96 in the report, 64 now"):
        capstone.check_report(report, config, lambda c: [2.3, 2.1])
    with pytest.raises(AssertionError, match=r"loss 1 is 2\.2 now, 2\.1 in the report \(max difference 0\.1\)"):
        capstone.check_report(dict(report, config=config), config, lambda c: [2.3, 2.2])
    capstone.check_report(dict(report, config=config), config, lambda c: [2.3, 2.1])  # reproduced: no error
    with pytest.raises(AssertionError, match=r"choose_kernel\(\): KERNEL = 5, expected 3"):
        lattice.check_kernel_choice(lambda: (5, None, 33))


_STUB = 'raise NotImplementedError("replace this line with your answer")'
# (assignment, earlier answers left as stubs, the graded cells of a later answer that builds on them)
_CHAINS = [
    (
        "01_lattice",
        {"seq2img": "f", "img2seq": "f", "split_cls": "f", "join_cls": "f"},
        {"test_locality_cls_passes", "test_locality_values"},
    ),
    (
        "02_im2col_shift",
        {"shift": "f", "one_hot_kernels": "f"},
        {
            "test_shift_conv_centre",
            "test_shift_conv_values",
            "test_local_attention_shape",
            "test_local_attention_k1",
            "test_local_attention_values",
        },
    ),
    (
        "05_attnconv",
        {"context_weights": "f"},
        {"test_attn_conv_shape", "test_attn_conv_translation", "test_attn_conv_values"},
    ),
    (
        "06_capstone",
        {"LocalityFeedForward": "class"},
        {"test_block_layers", "test_block_cls_skips_ffn", "test_block_values"},
    ),
    ("06_capstone", {"Block": "class"}, {"test_vit_shape", "test_vit_values"}),
]


@pytest.mark.parametrize(("topic", "stubs", "later"), _CHAINS, ids=[f"{t}-{'-'.join(s)}" for t, s, _ in _CHAINS])
def test_one_mistake_costs_its_own_points(tmp_path, topic, stubs, later):
    """Earlier answers left as stubs: the later answer that calls them still earns every point of its cells."""
    source = _solution_module(topic)
    for name, kind in stubs.items():
        if kind == "class":
            source += f"\n\nclass {name}(nn.Module):\n    def __init__(self, *args, **kwargs):\n        {_STUB}\n"
        else:
            source += f"\n\ndef {name}(*args, **kwargs):\n    {_STUB}\n"
    module = tmp_path / f"{topic}.py"
    module.write_text(source)
    report = check.run_check(topic, module)
    cells = {c.grade_id: c for c in report.cells}
    assert later <= set(cells), sorted(cells)
    assert not [c for c in later if cells[c].failure], str(report)
    assert any(c.failure for c in report.cells), "the stubs themselves must still lose their points"


def test_an_einops_error_names_the_pattern_the_shape_and_the_function(tmp_path):
    """A notebook whose seq2img splits the tokens as h x h: the report shows einops' pattern, the shape it was
    given, the reason and the learner's function; the mistake costs seq2img's cells only."""
    nb = _notebook("solutions", "01_lattice")
    answer = next(c for c in nb.cells if _meta(c).get("grade_id") == "seq2img")
    answer.source = answer.source.replace("h=h, w=w)", "h=h, w=h)")
    nbformat.write(nb, tmp_path / "01_lattice.ipynb")
    report = check.run_check("01_lattice", tmp_path / "01_lattice.ipynb")
    failed = {c.grade_id: c.failure for c in report.cells if c.failure}
    assert set(failed) == {"test_seq2img_shape", "test_seq2img_values"} and report.points == 20, str(report)
    assert failed["test_seq2img_shape"] == (
        'EinopsError: the pattern "b (h w) c -> b c h w" does not fit an input of shape (1, 6, 2) with h=2, w=2: '
        "Shape mismatch, 6 != 4 (raised in seq2img)"
    ), str(report)


def test_check_runs_a_notebook_and_the_command_line(tmp_path, capsys):
    notebook = tmp_path / "01_lattice.ipynb"
    shutil.copy(ROOT / "exercises" / "01_lattice" / "01_lattice.ipynb", notebook)
    parser = argparse.ArgumentParser(prog="vitlocal")
    check.add_check_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", "01_lattice", str(notebook)])
    assert args.run(args) == 1
    out = capsys.readouterr().out
    assert "0/23 points (and 4 for written answers, graded by hand) on the public checks" in out, out
    assert out.count("failed: NotImplementedError") == 14, out
    assert "re-read lecture 01 § 1 · Tokens are pixels of a small image (notebooks/01_lattice_view.ipynb)" in out


def test_here_checks_the_notebook_it_runs_in_and_a_warning_costs_nothing(tmp_path, monkeypatch, capsys):
    """The solution, its first answer made to warn, checked as its own last cell does: every point."""
    nb = _notebook("solutions", "01_lattice")
    answer = next(c for c in nb.cells if _meta(c).get("grade_id") == "seq2img")
    answer.source = answer.source.replace("    return rearrange", "    warnings.warn('harmless')\n    return rearrange")
    answer.source = "import warnings\n\n" + answer.source
    nbformat.write(nb, tmp_path / "01_lattice.ipynb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    check.here()
    out = capsys.readouterr().out
    assert "public checks passed: 23/23 points" in out, out
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    check.here()
    assert "self-check skipped" in capsys.readouterr().out, "inside a graded run the self-check does nothing"
