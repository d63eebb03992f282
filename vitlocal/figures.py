"""Pictures for the lectures: real photographs, patch lattices drawn on them, one block diagram per paper, and
interactive figures that fall back to a static one.

* `photo` returns one of the public-domain photographs that scikit-image ships inside its package (no
  download) as a square ``(3, S, S)`` tensor in [0, 1].
* `draw_lattice` draws an image with the borders of its ``p x p`` patches: token ``i`` of an ``h x w``
  lattice covers the tile at row ``i // w``, column ``i % w`` (row-major, as ``b (h w) c``).
* `diagram` draws the block diagram of one paper from the data in `DIAGRAMS` (boxes, arrows, frames), so the
  figures are code in this repository, redrawn on every run.
* `play` turns a drawing function into an ``ipywidgets`` cell, or draws it once where widgets cannot run.
* `pixel_erf`, `cls_cross_attention` and `attnconv_weights` compute what the lectures draw inside a model,
  at initialisation or trained (`vitlocal.load_trained`): the effective receptive field of a ViT's centre patch,
  CrossViT's class-token cross-attention, CloFormer's context-aware AttnConv weights.

matplotlib, scikit-image and ipywidgets belong to the ``lab`` extra, not the core: each is imported inside the
function that needs it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlocal._checks import check_positive

__all__ = [
    "PHOTOS",
    "photo",
    "draw_lattice",
    "Box",
    "Edge",
    "Frame",
    "Diagram",
    "DIAGRAMS",
    "diagram",
    "pixel_erf",
    "cls_cross_attention",
    "attnconv_weights",
    "play",
]

# Photographs bundled with scikit-image (public domain, see skimage.data); the square crop keeps the subject.
PHOTOS = ("astronaut", "chelsea", "coffee")


def photo(name: str = "chelsea", size: int = 224) -> torch.Tensor:
    """A bundled photograph, centre-cropped to a square and resized (antialiased): ``(3, size, size)`` in [0, 1]."""
    if name not in PHOTOS:
        raise ValueError(f"name={name!r} is not a bundled photograph; choose one of {PHOTOS}")
    check_positive(size, "size")
    import skimage.data

    image = rearrange(torch.from_numpy(getattr(skimage.data, name)()).float() / 255, "h w c -> 1 c h w")
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[..., top : top + side, left : left + side]
    return F.interpolate(square, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


def draw_lattice(
    ax: Any,
    image: torch.Tensor,
    patches: float | Sequence[float],
    colours: str | Sequence[str] = "white",
    numbers: bool = False,
    lw: float = 0.6,
) -> None:
    """Draw ``image`` ``(3, H, W)`` on ``ax`` with the borders of its patch lattice(s).

    ``patches``: one patch side in pixels, or several (one lattice each, drawn in ``colours``); a side may be
    fractional, e.g. a grid of another resolution scaled onto this image. ``numbers`` writes token ``i`` into
    the tile at row ``i // w``, column ``i % w`` of the first lattice.
    """
    patches = [patches] if isinstance(patches, (int, float)) else list(patches)
    colours = [colours] * len(patches) if isinstance(colours, str) else list(colours)
    height, width = image.shape[-2:]
    ax.imshow(rearrange(image, "c h w -> h w c").clamp(0, 1).numpy(), interpolation="nearest")  # pixels as they are
    for patch, colour in zip(patches, colours, strict=True):
        for t in range(1, round(height / patch)):
            ax.axhline(t * patch - 0.5, color=colour, lw=lw)
        for t in range(1, round(width / patch)):
            ax.axvline(t * patch - 0.5, color=colour, lw=lw)
    if numbers:
        p, w = patches[0], round(width / patches[0])
        for i in range(round(height / p) * w):
            ax.text(
                (i % w + 0.5) * p,
                (i // w + 0.5) * p,
                str(i),
                ha="center",
                va="center",
                fontsize=6,
                bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.6, lw=0),
            )
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------- diagrams
# Box colours by role: data (tensors), op (layers every transformer has), new (what the paper adds), attn.
KINDS = {"data": "#eeeeee", "op": "#dbe9f6", "new": "#fdd49e", "attn": "#d5ecd4"}
CHAR = 0.086  # width of one character of the 6.5 pt box text, in diagram units (1 unit = 0.68 inch)


@dataclass(frozen=True)
class Box:
    """A labelled box centred at ``(x, y)`` (diagram units), coloured by its role ``kind`` (see `KINDS`).

    Its width fits the longest line of ``text``; its height fits the number of lines.
    """

    x: float
    y: float
    text: str
    kind: str = "op"

    @property
    def size(self) -> tuple[float, float]:
        lines = self.text.split("\n")
        return CHAR * max(map(len, lines)) + 0.3, 0.24 * len(lines) + 0.2


@dataclass(frozen=True)
class Edge:
    """An arrow from box ``a`` to box ``b``; its ``label`` sits at fraction ``at`` of the way from a to b."""

    a: str
    b: str
    label: str = ""
    dashed: bool = False
    bend: float = 0.0
    at: float = 0.5


@dataclass(frozen=True)
class Frame:
    """A dashed rectangle ``(x0, y0)-(x1, y1)`` around a group of boxes, with its label on the top edge."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str


@dataclass(frozen=True)
class Diagram:
    """A paper's block diagram: boxes by name, arrows between them, dashed frames around groups."""

    title: str
    boxes: dict[str, Box]
    edges: list[Edge]
    frames: list[Frame] = field(default_factory=list)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: every box and frame (with its label) inside, plus a margin."""
        xs, ys = [], []
        for box in self.boxes.values():
            w, h = box.size
            xs += [box.x - w / 2, box.x + w / 2]
            ys += [box.y - h / 2, box.y + h / 2]
        for frame in self.frames:
            xs += [frame.x0, frame.x1]
            ys += [frame.y0, frame.y1 + 0.3]  # the label sits above the top edge
        return min(xs) - 0.1, min(ys) - 0.1, max(xs) + 0.1, max(ys) + 0.1


def _chain(order: str) -> list[Edge]:
    """Arrows along a chain of box names written ``"a b c"``: a -> b -> c."""
    return [Edge(a, b) for a, b in itertools.pairwise(order.split())]


_LOCALVIT = {
    "tokens": Box(1.0, 3.3, "tokens [cls | T]\n(B, 1+N, C)", "data"),
    "attn": Box(3.2, 3.3, "X + MHSA(LN(X))\non all 1+N tokens", "attn"),
    "split": Box(5.3, 3.3, "split_cls"),
    "seq2img": Box(5.3, 1.2, "seq2img\n(B, C, h, w)"),
    "expand": Box(7.2, 1.2, "1x1 conv C→4C\nBN, h-swish"),
    "dw": Box(9.0, 1.2, "depthwise kxk\nBN, h-swish", "new"),
    "se": Box(10.7, 1.2, "SE gate\n(global pool)"),
    "project": Box(12.4, 1.2, "1x1 conv 4C→C\nBN, + M"),
    "img2seq": Box(14.2, 1.2, "img2seq\n(B, N, C)"),
    "join": Box(14.2, 3.3, "join_cls\n→ next block", "data"),
}
_SLIDE = {
    "x": Box(0.8, 2.3, "x\n(B, H, W, C)", "data"),
    "qkv": Box(2.6, 2.3, "qkv Linear,\nhead-major split"),
    "q": Box(4.7, 3.8, "q d^-1/2\n(per pixel p)"),
    "kv": Box(4.7, 1.0, "K, V maps\n(B heads, d, H, W)", "data"),
    "onehot": Box(7.0, 1.6, "one-hot DW conv:\nk² shifted copies", "new"),
    "learn": Box(7.0, 0.4, "learnable\nDW kxk conv", "new"),
    "sum": Box(9.1, 1.0, "sum = one conv\nafter merge()"),
    "nbhd": Box(11.0, 1.0, "K_j, V_j for j < k²\n+ rpb on keys", "data"),
    "logits": Box(11.0, 3.8, "S[p, j] = q_p · K_j\nsoftmax over j", "attn"),
    "agg": Box(13.1, 2.3, "y_p =\nΣ_j A[p, j] V_j", "attn"),
    "proj": Box(14.6, 2.3, "proj\nLinear"),
}
_CROSSVIT = {
    "image": Box(0.7, 2.3, "image\n240 px", "data"),
    "resize": Box(2.0, 0.9, "resize\nto 224"),
    "embed_s": Box(3.7, 3.8, "patch 12 embed\n+ CLS, + pos\n1+400 tokens"),
    "embed_l": Box(3.7, 0.9, "patch 16 embed\n+ CLS, + pos\n1+196 tokens"),
    "enc_s": Box(6.2, 3.8, "S branch (C_S)\n1 block", "attn"),
    "enc_l": Box(6.2, 0.9, "L branch (C_L)\n4 blocks", "attn"),
    "fuse_s": Box(9.4, 3.8, "f(CLS_S) queries\n[itself | L patches]\nthen g back to C_S", "new"),
    "fuse_l": Box(9.4, 0.9, "f(CLS_L) queries\n[itself | S patches]\nthen g back to C_L", "new"),
    "head_s": Box(12.1, 3.8, "LN, head S"),
    "head_l": Box(12.1, 0.9, "LN, head L"),
    "mean": Box(14.0, 2.3, "mean of the\ntwo logits", "data"),
}
_CVT = {
    "image": Box(0.8, 3.7, "image\n224 px", "data"),
    "stage1": Box(3.1, 3.7, "stage 1\nconv embed 7/4/2\nC=64, 1 block\n56x56 tokens"),
    "stage2": Box(5.5, 3.7, "stage 2\nconv embed 3/2/1\nC=192, 2 blocks\n28x28 tokens"),
    "stage3": Box(8.0, 3.7, "stage 3\nconv embed 3/2/1\nC=384, 10 blocks\n+ CLS, 14x14 tokens"),
    "head": Box(10.4, 3.7, "LN, head\non the CLS", "data"),
    "tokens": Box(0.8, 1.0, "tokens\n(B, [1+] hw, C)", "data"),
    "reshape": Box(2.7, 1.0, "split CLS,\nReshape2D"),
    "dw_q": Box(4.7, 1.75, "DW 3x3, s=1, BN", "new"),
    "dw_k": Box(4.7, 1.0, "DW 3x3, s=2, BN", "new"),
    "dw_v": Box(4.7, 0.25, "DW 3x3, s=2, BN", "new"),
    "w_q": Box(7.0, 1.75, "flatten, + CLS, W_q"),
    "w_k": Box(7.0, 1.0, "flatten, + CLS, W_k"),
    "w_v": Box(7.0, 0.25, "flatten, + CLS, W_v"),
    "mhsa": Box(9.6, 1.0, "MHSA, scale C^-1/2\nhw queries,\n⌈h/2⌉⌈w/2⌉ keys", "attn"),
    "w_o": Box(11.3, 1.0, "W_o"),
}
_CLOFORMER = {
    "x": Box(0.8, 2.3, "X\n(B, C, H, W)", "data"),
    "qkv": Box(2.7, 3.7, "1x1 conv\n→ [Q | K | V]"),
    "dw": Box(4.7, 3.7, "one DW kxk conv\non Q, K and V", "new"),
    "context": Box(6.8, 3.7, "Q ⊙ K → FC\n→ Swish → FC", "new"),
    "tanh": Box(8.8, 3.7, "times d^-1/2, tanh:\nA in [-1, 1]", "new"),
    "gate": Box(10.7, 3.7, "Y_local\n= A ⊙ V", "new"),
    "pool": Box(2.7, 0.5, "AvgPool wxw\n(w = 8, 4, 2, 1)"),
    "kv": Box(4.9, 0.5, "1x1 conv: 7x7\nkeys, values"),
    "q": Box(4.9, 1.6, "1x1 conv:\nHW queries"),
    "softmax": Box(7.8, 1.05, "softmax(Q Kᵀ d^-1/2) V\n= Y_global", "attn"),
    "concat": Box(12.5, 2.3, "concat\n(local | global)", "data"),
    "fc": Box(14.3, 2.3, "1x1 conv\n(the FC)"),
}

DIAGRAMS: dict[str, Diagram] = {
    "localvit": Diagram(
        "LocalViT block: attention on all tokens, then the feed-forward on the lattice (orange: what LocalViT adds)",
        _LOCALVIT,
        [
            *_chain("tokens attn split seq2img expand dw se project img2seq join"),
            Edge("split", "join", "class token: no FFN", dashed=True),
        ],
        [Frame(6.3, 0.55, 13.3, 1.95, "LocalityFeedForward on the lattice, residual inside")],
    ),
    "slide": Diagram(
        "Slide attention: each pixel attends to its own kxk neighbourhood, gathered by shifts (orange: deformed shift)",
        _SLIDE,
        [
            *_chain("x qkv"),
            Edge("qkv", "q"),
            Edge("qkv", "kv"),
            Edge("kv", "onehot"),
            Edge("kv", "learn"),
            Edge("onehot", "sum"),
            Edge("learn", "sum"),
            *_chain("sum nbhd logits"),
            Edge("q", "logits"),
            Edge("logits", "agg", "A"),
            Edge("nbhd", "agg", "V_j"),
            *_chain("agg proj"),
        ],
        [Frame(5.75, -0.1, 10.05, 2.3, "deformed shift, shared by K, V and the heads")],
    ),
    "crossvit": Diagram(
        "CrossViT: two branches; in each fusion a class token queries the other branch's patches (orange)",
        _CROSSVIT,
        [
            Edge("image", "embed_s"),
            Edge("image", "resize"),
            *_chain("resize embed_l enc_l fuse_l head_l mean"),
            *_chain("embed_s enc_s fuse_s head_s mean"),
            Edge("enc_l", "fuse_s", "L patches", at=0.25),
            Edge("enc_s", "fuse_l", "S patches", at=0.25),
        ],
        [Frame(5.1, 0.1, 10.9, 4.6, "multi-scale block, x 3: patch tokens pass the fusion unchanged")],
    ),
    "cvt": Diagram(
        "CvT: three stages, each a convolutional token embedding and blocks with convolutional projections (orange)",
        _CVT,
        [
            *_chain("image stage1 stage2 stage3 head"),
            *_chain("tokens reshape"),
            *(Edge("reshape", f"dw_{n}") for n in "qkv"),
            *(Edge(f"dw_{n}", f"w_{n}") for n in "qkv"),
            *(Edge(f"w_{n}", "mhsa") for n in "qkv"),
            Edge("mhsa", "w_o"),
        ],
        [Frame(1.8, -0.15, 11.85, 2.35, "in every block: convolutional projection (the class token skips the convs)")],
    ),
    "cloformer": Diagram(
        "CloFormer attention: a local AttnConv branch (orange) and a pooled global branch, fused by a 1x1 conv",
        _CLOFORMER,
        [
            *_chain("x qkv dw context tanh gate concat fc"),
            Edge("dw", "gate", "V: shared DW aggregation", bend=-0.3),
            Edge("x", "pool"),
            Edge("x", "q"),
            Edge("pool", "kv"),
            Edge("q", "softmax"),
            Edge("kv", "softmax"),
            Edge("softmax", "concat"),
        ],
        [
            Frame(1.75, 3.1, 11.6, 4.95, "local branch: AttnConv (m heads)"),
            Frame(1.75, -0.05, 9.3, 2.2, "global branch: pooled attention (g heads)"),
        ],
    ),
}


def diagram(paper: str) -> Any:
    """The block diagram of ``paper`` (a key of `DIAGRAMS`) as a ``matplotlib.figure.Figure``."""
    if paper not in DIAGRAMS:
        raise ValueError(f"paper={paper!r} has no diagram; choose one of {list(DIAGRAMS)}")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle

    spec = DIAGRAMS[paper]
    x0, y0, x1, y1 = spec.bounds
    fig, ax = plt.subplots(figsize=(0.68 * (x1 - x0), 0.68 * (y1 - y0) + 0.3))  # + 0.3 inch for the title
    patches = {}
    for name, box in spec.boxes.items():
        w, h = box.size
        patches[name] = FancyBboxPatch(
            (box.x - w / 2, box.y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.08",
            fc=KINDS[box.kind],
            ec="0.35",
            lw=0.8,
        )
        ax.add_patch(patches[name])
        ax.text(box.x, box.y, box.text, ha="center", va="center", fontsize=6.5)
    for frame in spec.frames:
        ax.add_patch(
            Rectangle((frame.x0, frame.y0), frame.x1 - frame.x0, frame.y1 - frame.y0, fill=False, ls="--", ec="0.5")
        )
        ax.text(frame.x0 + 0.1, frame.y1 + 0.05, frame.label, fontsize=7, style="italic", color="0.3", va="bottom")
    for edge in spec.edges:
        a, b = spec.boxes[edge.a], spec.boxes[edge.b]
        ax.annotate(
            "",
            xy=(b.x, b.y),
            xytext=(a.x, a.y),
            arrowprops=dict(
                arrowstyle="-|>",
                color="0.25",
                lw=0.9,
                ls="--" if edge.dashed else "-",
                patchA=patches[edge.a],
                patchB=patches[edge.b],
                shrinkA=1,
                shrinkB=1,
                connectionstyle=f"arc3,rad={edge.bend}",
            ),
        )
        if edge.label:
            ax.text(
                a.x + edge.at * (b.x - a.x),
                a.y + edge.at * (b.y - a.y) + (0.5 if edge.bend else 0.0),
                edge.label,
                ha="center",
                va="center",
                fontsize=6.5,
                style="italic",
                bbox=dict(fc="white", ec="none", pad=0.5),
            )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(spec.title, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------- inside a model
def pixel_erf(model: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Effective receptive field of a plain ViT's centre patch token: mean |d (u . y_centre) / d x| per pixel.

    ``x`` ``(B, 3, H, W)``; returns ``(H, W)``, the mean over the ``B`` images and the 3 channels. ``y_centre``
    ``(B, C)`` is the centre patch token's output before the head, ``u`` a random direction per image drawn
    from ``seed`` (a fixed direction such as ``sum_c y_c`` can vanish after a LayerNorm).
    """
    grid = model.patch_embed.grid
    centre = (grid // 2) * grid + grid // 2
    x = x.clone().requires_grad_(True)
    y = model.forward_features(x)[:, 1 + centre]  # (B, C); +1 skips the class token
    u = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    (y * u).sum().backward()
    return x.grad.abs().sum(1).mean(0)


def _input_of(module: nn.Module, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first input ``module`` receives when ``model`` runs on ``x`` (no gradients)."""
    seen = {}
    hook = module.register_forward_pre_hook(lambda _, args: seen.update(input=args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return seen["input"]


def cls_cross_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CrossViT: the large branch's class-token attention over the small branch's patches in the last
    multi-scale block, mean over heads: ``x`` ``(B, 3, H, W)`` -> ``(B, h_S, w_S)``, each map summing to at most 1
    (the rest is the weight on the class token itself)."""
    fusion = model.blocks[-1].fusion
    with torch.no_grad():
        weights = fusion.attention_weights(_input_of(fusion, model, x))[1]  # branch 1 (L): (B, heads, 1, 1 + N_S)
    grid = model.patch_embed[0].grid
    return rearrange(weights[:, :, 0, 1:].mean(1), "b (h w) -> b h w", h=grid)


def attnconv_weights(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CloFormer: the context-aware weights A of the first block's first AttnConv group, in [-1, 1]:
    ``x`` ``(B, 3, H, W)`` -> ``(B, m d, h, w)`` on the first stage's map."""
    attn = model.layers[0].blocks[0].attn
    with torch.no_grad():
        return attn.local[0].context_weights(_input_of(attn, model, x))


# ---------------------------------------------------------------------------------------------- interaction
def _ipywidgets() -> Any:
    """The ``ipywidgets`` module, or ``None`` where it is not installed."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


def play(draw: Callable[..., Any], **controls: Any) -> None:
    """Show ``draw`` with one widget per control, redrawn whenever a control moves (``ipywidgets.interact``).

    ``draw`` takes exactly the controls as keyword arguments, each with a default (the first figure), and
    draws one figure. ``controls`` use interact's abbreviations: ``(lo, hi)`` or ``(lo, hi, step)`` for a
    slider, a list for a drop-down. Under smoke mode (CI, nbgrader) and wherever ipywidgets is not
    installed, ``draw()`` runs once with its defaults: the same function, one static figure.
    """
    import matplotlib.pyplot as plt

    from vitlocal.train import smoke_mode

    @functools.wraps(draw)  # interact reads the defaults from draw's signature
    def show(**values: Any) -> None:
        draw(**values)
        plt.show()

    widgets = None if smoke_mode() else _ipywidgets()
    if widgets is None:
        show()
    else:
        widgets.interact(show, **controls)
