"""The confusion matrix as a PNG drawn with Pillow: class names on the axes, counts in the cells, a colour scale."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 28  # pixels per matrix cell
MAX_CELLS = 100  # larger matrices keep their most frequent true classes
MARGIN = 8


def _colour(value: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1)."""
    v = float(np.clip(value, 0.0, 1.0))
    return int(255 - 247 * v), int(255 - 207 * v), int(255 - 148 * v)


def _short(name: str, limit: int = 24) -> str:
    name = name.encode("unicode_escape").decode("ascii")  # control characters drawn as escapes
    return name if len(name) <= limit else name[: limit - 1] + "~"


def draw_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str | os.PathLike) -> str:
    """Writes `matrix` (rows: true class, columns: predicted) to `path` as a PNG; returns the path.

    Past `MAX_CELLS` classes only the most frequent true classes are drawn (rows and columns).
    """
    matrix = np.asarray(matrix)
    names = list(class_names)
    if len(names) > MAX_CELLS:
        keep = np.sort(np.argsort(-matrix.sum(axis=1), kind="stable")[:MAX_CELLS])
        matrix = matrix[np.ix_(keep, keep)]
        names = [names[i] for i in keep]
    font = ImageFont.load_default()
    labels = [_short(n) for n in names]
    label_w = max(int(font.getlength(t)) for t in labels) + MARGIN
    n = len(names)
    grid = n * CELL
    scale_w = 60
    width = label_w + grid + MARGIN + scale_w + MARGIN
    height = MARGIN + 16 + label_w + grid + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((label_w, MARGIN), "predicted", fill="black", font=font)
    top = MARGIN + 16 + label_w

    # Column names, written horizontally then turned upright.
    column_text = Image.new("RGB", (label_w, grid), "white")
    column_draw = ImageDraw.Draw(column_text)
    for j, text in enumerate(labels):
        column_draw.text((label_w - MARGIN - font.getlength(text), j * CELL + CELL // 2 - 5), text, "black", font)
    image.paste(column_text.rotate(90, expand=True), (label_w, MARGIN + 16))

    row_sums = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_sums, out=np.zeros(matrix.shape, dtype=np.float64), where=row_sums > 0)
    for i, text in enumerate(labels):
        draw.text((label_w - MARGIN - font.getlength(text), top + i * CELL + CELL // 2 - 5), text, "black", font)
        for j in range(n):
            x0, y0 = label_w + j * CELL, top + i * CELL
            draw.rectangle((x0, y0, x0 + CELL - 1, y0 + CELL - 1), fill=_colour(shares[i, j]), outline=(200, 200, 200))
            count = str(int(matrix[i, j]))
            ink = "white" if shares[i, j] > 0.5 else "black"
            draw.text((x0 + (CELL - font.getlength(count)) / 2, y0 + CELL // 2 - 5), count, fill=ink, font=font)
    draw.text((MARGIN, height - 20), "rows: true class; colour: share of the row", fill="black", font=font)

    # Colour scale: share of the true class's clips, 0 at the bottom, 1 at the top.
    x0 = label_w + grid + MARGIN
    for y in range(grid):
        draw.line((x0, top + y, x0 + 14, top + y), fill=_colour(1 - y / max(1, grid - 1)))
    draw.text((x0 + 18, top), "1.0", fill="black", font=font)
    draw.text((x0 + 18, top + grid - 10), "0.0", fill="black", font=font)
    image.save(path, format="PNG")
    return os.fspath(path)
