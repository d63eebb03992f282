"""The lectures' drawing module: photographs, lattices, the papers' diagrams and the static fallback of `play`."""

from __future__ import annotations

import sys

import pytest
import torch

from vitlocal import load_trained
from vitlocal.figures import (
    DIAGRAMS,
    PHOTOS,
    attnconv_weights,
    cls_cross_attention,
    diagram,
    draw_lattice,
    photo,
    pixel_erf,
    play,
)

plt = pytest.importorskip("matplotlib.pyplot", reason="the figures need the lab extra")
pytest.importorskip("skimage", reason="the photographs need the lab extra")
Annotation = pytest.importorskip("matplotlib.text").Annotation


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_is_a_square_rgb_tensor_in_unit_range(name):
    image = photo(name, 32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.05, "a photograph, not a flat picture"


def test_photo_rejects_unknown_names():
    with pytest.raises(ValueError, match="chelsea"):
        photo("lena")


def test_draw_lattice_draws_one_line_per_inner_border_and_numbers_every_token():
    _, ax = plt.subplots()
    draw_lattice(ax, photo("coffee", 48), (16, 12), colours=("white", "orange"), numbers=True)
    assert len(ax.images) == 1
    assert len(ax.lines) == 2 * (3 - 1) + 2 * (4 - 1)  # a 3x3 lattice and a 4x4 one, inner borders only
    labels = sorted(int(t.get_text()) for t in ax.texts)
    assert labels == list(range(9)), "token i is written into its tile, row-major"
    row, col = divmod(5, 3)  # token 5 of the 3x3 lattice sits at row 1, column 2
    assert next(t for t in ax.texts if t.get_text() == "5").get_position() == ((col + 0.5) * 16, (row + 0.5) * 16)


@pytest.mark.parametrize("paper", list(DIAGRAMS))
def test_each_diagram_draws_every_box_and_arrow(paper):
    spec = DIAGRAMS[paper]
    fig = diagram(paper)
    (ax,) = fig.axes
    texts = {t.get_text() for t in ax.texts}
    assert all(box.text in texts for box in spec.boxes.values())
    assert len(ax.patches) == len(spec.boxes) + len(spec.frames)
    arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
    assert len(arrows) == len(spec.edges)
    assert all(e.a in spec.boxes and e.b in spec.boxes for e in spec.edges)


def test_diagram_boxes_do_not_overlap():
    for paper, spec in DIAGRAMS.items():
        boxes = list(spec.boxes.items())
        for i, (name_a, a) in enumerate(boxes):
            (wa, ha), xa, ya = a.size, a.x, a.y
            for name_b, b in boxes[i + 1 :]:
                (wb, hb), xb, yb = b.size, b.x, b.y
                apart = abs(xa - xb) >= (wa + wb) / 2 or abs(ya - yb) >= (ha + hb) / 2
                assert apart, f"{paper}: boxes {name_a} and {name_b} overlap"


def test_unknown_diagram_is_a_clear_error():
    with pytest.raises(ValueError, match="localvit"):
        diagram("swin")


def _draw(size: int = 3, colour: str = "red") -> None:
    fig, ax = plt.subplots()
    ax.plot(range(size), color=colour)
    fig.suptitle(f"size={size}")


def test_play_without_ipywidgets_draws_the_static_figure_with_the_defaults(monkeypatch):
    monkeypatch.delenv("VITLOCAL_SMOKE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    play(_draw, size=(1, 10), colour=["red", "blue"])
    (number,) = plt.get_fignums()
    fig = plt.figure(number)
    assert fig._suptitle.get_text() == "size=3"
    assert len(fig.axes[0].lines[0].get_xdata()) == 3


def test_play_in_smoke_mode_is_static_even_with_ipywidgets(monkeypatch):
    monkeypatch.setenv("VITLOCAL_SMOKE", "1")
    calls = []
    play(lambda size=2: calls.append(size), size=(1, 4))
    assert calls == [2]


def test_play_with_ipywidgets_starts_at_the_defaults_and_redraws_when_a_control_moves(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv("VITLOCAL_SMOKE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    interact, made = widgets.interact, []
    monkeypatch.setattr(widgets, "interact", lambda f, **kw: made.append(interact(f, **kw).widget))
    calls = []
    play(lambda size=3, colour="red": calls.append((size, colour)), size=(1, 10), colour=["red", "blue"])
    (widget,) = made
    slider, dropdown = widget.children[:2]
    assert (slider.min, slider.max, slider.value, dropdown.value) == (1, 10, 3, "red")
    slider.value = 7
    dropdown.value = "blue"
    assert calls == [(3, "red"), (7, "red"), (7, "blue")]


# ---------------------------------------------------------------------------------------- inside a model
def test_pixel_erf_of_a_trained_vit_is_a_map_over_the_pixels():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    erf = pixel_erf(load_trained("deit_nano"), x)
    assert erf.shape == (32, 32) and (erf >= 0).all() and erf.sum() > 0


def test_cls_cross_attention_is_a_distribution_over_the_small_branch_grid():
    model = load_trained("crossvit_nano")
    maps = cls_cross_attention(model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    grid = model.patch_embed[0].grid
    assert maps.shape == (2, grid, grid) and (maps >= 0).all() and (maps.sum((1, 2)) <= 1 + 1e-6).all()


def test_attnconv_weights_lie_in_minus_one_to_one():
    a = attnconv_weights(load_trained("cloformer_nano"), torch.randn(1, 3, 32, 32))
    assert a.dim() == 4 and a.shape[0] == 1 and a.abs().max() <= 1
