"""The project itself: packaging, the conda environment, the command line, the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vitlocal
from vitlocal.cli import main

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
ROOT = Path(__file__).resolve().parents[1]
MECHANISMS = ["lattice", "attention", "layers", "locality", "slide", "fusion", "convproj", "attnconv"]


def _requirement(spec: str) -> tuple[str, str]:
    """``"torch>=2.1"`` -> ``("torch", ">=2.1")``, names normalised as pip does."""
    name, bound = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip()).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), bound.replace(" ", "")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [d for d in conda if not d.startswith(("python", "pip"))] + [d for d in pip if not d.startswith("-e")]
    assert sorted(set(map(_requirement, listed))) == sorted(set(map(_requirement, declared)))
    assert any(d.startswith("-e") and "[lab,dev]" in d for d in pip), "the pip section must install this package"
    assert not any("==" in spec or "<" in spec for spec in declared), "lower bounds only, no pins"


def test_core_dependencies_are_only_what_the_library_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(_requirement(d)[0] for d in project["dependencies"]) == [
        "einops",
        "numpy",
        "pillow",
        "safetensors",
        "torch",
        "tqdm",
    ]


def test_library_never_imports_torchvision():
    code = "import sys, vitlocal; " + "; ".join(f"import vitlocal.{m}" for m in MECHANISMS)
    code += "; assert 'torchvision' not in sys.modules, 'torchvision was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("module", MECHANISMS)
def test_every_mechanism_module_states_its_idea_and_exports_its_names(module):
    mod = __import__(f"vitlocal.{module}", fromlist=["__all__"])
    assert len((mod.__doc__ or "").strip()) > 200, f"vitlocal.{module} must open with its idea and equations"
    assert mod.__all__, f"vitlocal.{module} must declare __all__"
    for name in mod.__all__:
        assert getattr(mod, name).__doc__, f"vitlocal.{module}.{name} needs a docstring"


def test_public_mechanism_functions_named_in_the_design_exist():
    from vitlocal.lattice import img2seq, seq2img
    from vitlocal.slide import im2col, shift, shift_conv

    assert all(callable(f) for f in (seq2img, img2seq, im2col, shift, shift_conv))


def test_cli_help_and_info(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "vitlocal" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert f"vitlocal {vitlocal.__version__}" in capsys.readouterr().out


def test_console_script_and_module_entry_point_agree():
    out = subprocess.run([sys.executable, "-m", "vitlocal", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"vitlocal {vitlocal.__version__}"


def test_readme_quickstart_holds_the_main_job_and_the_tests():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "exactly two blocks: the main job, then the tests (.ci/run runs the second)"
    main_job, tests = blocks
    assert all('pip install -e ".[lab,dev]"' in block for block in blocks), "each block installs the project"
    assert "vitlocal compare" in main_job
    assert "python -m pytest" in tests and "--nbval-lax" in tests
    assert "bash .ci/run" not in tests, "CI runs the README's command, not the other way round"
