"""PNG figures for evaluation and prediction: an image grid with labels, and a confusion matrix.

Sizes are fixed by the number of panels / classes (no tight bounding box), so a caller and a test
know the pixel size in advance: `grid_size_px(n)` and `confusion_size_px(num_classes)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

DPI = 100
GRID_COLUMNS = 4
GRID_CELL_IN = (3.0, 3.9)  # width, height per panel in inches (up to three title lines sit above the image)
MAX_GRID = 12
CM_PANEL_IN = 0.55  # inches per class in each confusion-matrix panel


@dataclass
class Panel:
    """One grid tile: an RGB image, its predicted label and confidence, and the true label if known."""

    image: Image.Image
    predicted: str
    confidence: float
    true: str | None = None
    caption: str | None = None  # usually the file name


# Class names and file names are drawn as they are: never as mathtext (`$x$` in a name crashed the figure), in
# any script the machine has a font for (CJK names: the first of these fonts installed; else a missing-glyph box).
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False,
                "font.family": ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei",
                                "Droid Sans Fallback", "Arial Unicode MS", "sans-serif"]}


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _literal(draw):
    """Run `draw` (creating and saving a figure) with text drawn literally; a missing glyph is not a warning
    per label."""
    import functools
    import logging
    import warnings

    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        plt = _mpl()
        font_log = logging.getLogger("matplotlib.font_manager")
        level = font_log.level
        font_log.setLevel(logging.ERROR)  # "findfont: Font family ... not found" for each fallback not installed
        try:
            with plt.rc_context(LITERAL_TEXT), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")
                return draw(*args, **kwargs)
        finally:
            font_log.setLevel(level)

    return wrapped


def figure_format_problem(path: str | Path) -> str | None:
    """Why matplotlib cannot write a figure to `path` (its extension), or None: known before any work."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    known = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in known:
        return (f"unknown figure format '{suffix or '(no extension)'}'; use one of "
                f"{', '.join('.' + k for k in sorted(known))}")
    return None


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a grid of n panels (at most MAX_GRID)."""
    n = max(1, min(n, MAX_GRID))
    cols = min(GRID_COLUMNS, n)
    return math.ceil(n / cols), cols


def grid_size_px(n: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_grid` writes for n panels."""
    rows, cols = grid_shape(n)
    return round(cols * GRID_CELL_IN[0] * DPI), round(rows * GRID_CELL_IN[1] * DPI)


@_literal
def save_grid(panels: Sequence[Panel], path: str | Path, title: str | None = None) -> Path:
    """Up to MAX_GRID images with 'label  97.3 %' above each (green right / red wrong when the truth is known)."""
    if not panels:
        raise ValueError("no images to draw")
    plt = _mpl()
    panels = list(panels)[:MAX_GRID]
    rows, cols = grid_shape(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * GRID_CELL_IN[0], rows * GRID_CELL_IN[1]), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels):
        img = p.image.copy()
        img.thumbnail((512, 512))
        ax.imshow(np.asarray(img))
        text = f"{p.predicted}  {100 * p.confidence:.1f} %"
        colour = "black"
        if p.true is not None:
            colour = "tab:green" if p.true == p.predicted else "tab:red"
            text = f"pred: {text}\ntrue: {p.true}"
        if p.caption:
            text += f"\n{_shorten(p.caption, 34)}"
        ax.set_title(text, fontsize=9, color=colour)
    return _save(plt, fig, path, title)


def confusion_size_px(num_classes: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_confusion` writes."""
    w, h = _confusion_inches(num_classes)
    return round(w * DPI), round(h * DPI)


def _confusion_inches(num_classes: int) -> tuple[float, float]:
    side = max(4.5, CM_PANEL_IN * num_classes + 2.0)
    return 2 * side + 1.0, side + 0.6


@_literal
def save_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts (left) and row-normalised recall per true class (right), labelled cells."""
    plt = _mpl()
    matrix = np.asarray(matrix)
    n = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=_confusion_inches(n), dpi=DPI)
    fontsize = 9 if n <= 10 else 7
    for ax, data, label, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9) if fmt == "d" else 1.0)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticks(range(n), class_names, fontsize=fontsize)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label)
        threshold = (data.max() if data.size else 0) / 2
        for i in range(n):
            for j in range(n):
                value = data[i, j]
                ax.text(j, i, format(int(value) if fmt == "d" else value, fmt), ha="center", va="center",
                        fontsize=fontsize, color="white" if value > threshold else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(plt, fig, path, title)


def _save(plt, fig, path: str | Path, title: str | None) -> Path:
    _layout(fig, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _layout(fig, title: str | None) -> None:
    if title:
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    else:
        fig.tight_layout()


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]
