"""Sphinx + MyST-NB configuration of the vitlocal book (the lectures, exercises, README, instructor guide).

Build from the repository root (nothing is executed: the notebooks' stored outputs are rendered):

    python -m sphinx -c book . build/book

then open build/book/index.html. The source folder is the repository root so that every notebook keeps
its place and its relative links; `include_patterns` picks the pages.
"""

import json
import shutil
from pathlib import Path

project = "vitlocal"
author = "the vitlocal authors"
copyright = "the vitlocal authors, MIT licence"

extensions = ["myst_nb"]

root_doc = "README"  # the start page; build/book/index.html redirects to it
include_patterns = ["README.md", "docs/instructors.md", "notebooks/*.ipynb", "exercises/*/*.ipynb"]
exclude_patterns = [".*", "build", "venv", "results", "runs", "solutions", "tests", "vitlocal", "*.egg-info", "**/.*"]

# The notebooks are rendered as committed (outputs of real runs); the book never runs one.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # `[...](#written-answers-the-rubrics)` style links

# The chapters: README.md stays plain for GitHub, so its hidden table of contents is added when read.
TOC = """

```{toctree}
:hidden:
:caption: Lectures
:glob:

notebooks/*
```

```{toctree}
:hidden:
:caption: Exercises (student copies, no solutions)
:glob:

exercises/*/*
```

```{toctree}
:hidden:
:caption: Teaching

docs/instructors
```
"""

html_theme = "sphinx_book_theme"
html_title = "vitlocal: locality in vision transformers"
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True}
html_show_sourcelink = False

# MathJax is served from the book itself (MathJax 2.7 as packaged by jupyter-server-mathjax, a Jupyter project), so math
# renders offline and without a third-party site.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    # typeset only what MyST marked as math (it marks the rest of each page mathjax_ignore)
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": False,
        "ignoreClass": "tex2jax_ignore|mathjax_ignore",
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
    },
    # the fonts the package ships (as the classic notebook configures it)
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None, "preferredFont": None},
    "messageStyle": "none",
}


def _add_toc(app, docname, source):
    if docname == root_doc:
        source[0] += TOC


WIDGET = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "*Interactive in Jupyter: open the notebook to move the controls. Shown here: the figure at its first values.*"
)


def _static_widgets(app, docname, source):
    """An interactive cell needs a running kernel: show the figure its saved state holds instead.

    Only the text Sphinx read is changed, never the notebook file. The widget scripts are dropped with the
    widget state, so the book loads nothing from another site.
    """
    if not app.env.doc2path(docname).name.endswith(".ipynb") or WIDGET not in source[0]:
        return
    nb = json.loads(source[0])
    state = nb["metadata"].pop("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})

    def figures(model_id, seen):
        if model_id in seen or model_id not in state:
            return []
        seen.add(model_id)
        model = state[model_id]
        found = list(model["state"].get("outputs", [])) if model["model_name"] == "OutputModel" else []
        for child in model["state"].get("children", []):
            found += figures(child.removeprefix("IPY_MODEL_"), seen)
        return found

    for cell in nb["cells"]:
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET)
            if view is None:
                outputs.append(out)
                continue
            shown = [o for o in figures(view["model_id"], set()) if "image/png" in o.get("data", {})]
            note = {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": WIDGET_NOTE}}
            outputs += [{**o, "output_type": "display_data"} for o in shown] + [note]
        if "outputs" in cell:
            cell["outputs"] = outputs
    source[0] = json.dumps(nb)


def _finish(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    import jupyter_server_mathjax

    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)
    redirect = f'<!DOCTYPE html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={root_doc}.html">'
    (Path(app.outdir) / "index.html").write_text(
        redirect + f'<title>{project}</title><a href="{root_doc}.html">{html_title}</a>\n', encoding="utf-8"
    )


def setup(app):
    app.connect("source-read", _add_toc)
    app.connect("source-read", _static_widgets)
    app.connect("build-finished", _finish)
