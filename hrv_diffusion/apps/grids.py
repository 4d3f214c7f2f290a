"""Labelled image grids: the figures of the applications (SD-HRV's side_by_side.png, P2P's comparison pictures,
A&E's grids), drawn with PIL and its default font.

Each cell is an image (or empty); small images are enlarged nearest-neighbour by a whole factor so that a cell is at
least ``min_cell`` pixels on its longer side (a 32-pixel toy image becomes 192 pixels, a 512-pixel one stays as it
is). Rows can carry a label on the left, columns a label on top, each cell a caption above it, the figure a title.

    grid = labelled_grid([[a1, a2], [b1, b2]], row_labels=["standard", "SD-HRV"], column_labels=["seed 1", "seed 2"])
    write_figure(grid.picture, path)   # written unless the file there has the same pixels

``Grid.boxes`` says where each cell's enlarged image sits: ``{(row, column): (top, left)}``, ``Grid.scale`` by how
much it was enlarged (tests crop the cells back out with them).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_CELL = 192  # pixels on a cell's longer side at least (whole-factor nearest-neighbour enlargement)
GAP = 6  # pixels between cells
PAD = 8  # pixels around labels and the figure
FONT_SIZE = 14
BACKGROUND = (255, 255, 255)
EMPTY = (235, 235, 235)  # a cell without an image
INK = (0, 0, 0)
ROW_LABEL_CHARS = 24  # a row label wraps after this many characters


def font(size: int = FONT_SIZE):
    """PIL's default font at ``size`` (the bitmap default where this Pillow has no sizeable default)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def scale_for(height: int, width: int, min_cell: int = MIN_CELL) -> int:
    """The whole factor that makes the longer side of a height x width image at least ``min_cell`` (at least 1)."""
    return max(1, math.ceil(min_cell / max(height, width, 1)))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) -> (H·factor, W·factor, 3), each pixel repeated (nearest neighbour)."""
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def _text_size(text: str, face) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    if not text:
        return 0, 0
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=face)
    return right - min(left, 0), bottom - min(top, 0)


def wrap(text: str, chars: int) -> str:
    """``text`` with each of its lines wrapped at ``chars`` characters (words kept whole where they fit)."""
    return "\n".join(textwrap.fill(line, max(chars, 4)) or " " for line in str(text).split("\n"))


@dataclass
class Grid:
    """A labelled grid: its (H, W, 3) uint8 picture, the enlargement factor and each cell's top-left corner."""

    picture: np.ndarray
    scale: int
    boxes: dict = field(default_factory=dict)  # (row, column) -> (top, left) of the enlarged image


@dataclass
class _Layout:
    cell: tuple[int, int]  # enlarged cell (height, width)
    left: int  # width of the row label column
    title: str
    title_height: int
    header: int  # height of the column label row
    caption: int  # height of a cell caption
    columns: list[str]
    rows: list[str]


def _layout(shape, n_columns, row_labels, column_labels, cell_labels, title, scale, face) -> _Layout:
    cell = (shape[0] * scale, shape[1] * scale)
    char = max(1, _text_size("x", face)[0])
    rows = [wrap(label, ROW_LABEL_CHARS) for label in row_labels or []]
    left = max((_text_size(r, face)[0] for r in rows), default=0) + (2 * PAD if rows else 0)
    columns = [wrap(label, cell[1] // char) for label in column_labels or []]
    header = max((_text_size(c, face)[1] for c in columns), default=0) + (PAD if columns else 0)
    caption = _text_size("Ag", face)[1] + PAD // 2 if cell_labels else 0
    width = PAD + left + n_columns * cell[1] + (n_columns - 1) * GAP + PAD
    title = wrap(title, (width - 2 * PAD) // char) if title else ""
    title_height = _text_size(title, face)[1] + PAD if title else 0
    return _Layout(cell, left, title, title_height, header, caption, columns, rows)


def _first_image(rows):
    for row in rows:
        for image in row:
            if image is not None:
                return np.asarray(image)
    raise ValueError("a grid needs at least one image")


def labelled_grid(rows: list[list], row_labels=None, column_labels=None, cell_labels=None, title: str | None = None,
                  min_cell: int = MIN_CELL) -> Grid:
    """One figure of image ``rows`` (lists of (H, W, 3) uint8 images of one size, or None for an empty cell), each
    image enlarged by ``scale_for``; ``row_labels`` on the left, ``column_labels`` on top, ``cell_labels`` (a list of
    lists like ``rows``) above each cell, ``title`` above everything (each wrapped to fit)."""
    from PIL import Image, ImageDraw

    n_columns = max(len(r) for r in rows)
    shape = _first_image(rows).shape
    scale, face = scale_for(shape[0], shape[1], min_cell), font()
    lay = _layout(shape, n_columns, row_labels, column_labels, cell_labels, title, scale, face)
    step_y, step_x = lay.caption + lay.cell[0] + GAP, lay.cell[1] + GAP
    top0, left0 = PAD + lay.title_height + lay.header, PAD + lay.left
    size = (left0 + n_columns * step_x - GAP + PAD, top0 + len(rows) * step_y - GAP + PAD)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if lay.title:
        draw.multiline_text((PAD, PAD), lay.title, fill=INK, font=face)
    for c, label in enumerate(lay.columns):
        draw.multiline_text((left0 + c * step_x, PAD + lay.title_height), label, fill=INK, font=face)
    boxes = {}
    for r, row in enumerate(rows):
        top = top0 + r * step_y
        if r < len(lay.rows):
            text_height = _text_size(lay.rows[r], face)[1]
            y = top + lay.caption + max(0, (lay.cell[0] - text_height) // 2)
            draw.multiline_text((PAD, y), lay.rows[r], fill=INK, font=face)
        for c, image in enumerate(row):
            left = left0 + c * step_x
            if cell_labels and cell_labels[r][c]:
                draw.text((left, top), str(cell_labels[r][c]), fill=INK, font=face)
            boxes[r, c] = (top + lay.caption, left)
            if image is None:
                draw.rectangle((left, top + lay.caption, left + lay.cell[1] - 1, top + lay.caption + lay.cell[0] - 1),
                               fill=EMPTY)
            else:
                canvas.paste(Image.fromarray(upscale(image, scale)), (left, top + lay.caption))
    return Grid(np.asarray(canvas), scale, boxes)


def cell(grid: Grid, row: int, column: int, shape) -> np.ndarray:
    """The image of cell (row, column) as it was given: its enlarged pixels cropped out and shrunk back (``shape``:
    the image's (H, W))."""
    top, left = grid.boxes[row, column]
    h, w = shape[0] * grid.scale, shape[1] * grid.scale
    return grid.picture[top : top + h : grid.scale, left : left + w : grid.scale]


def read_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of the picture at ``path``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def write_figure(picture: np.ndarray, path, force: bool = False) -> bool:
    """Write ``picture`` at ``path`` unless a picture with the same pixels is there (always with ``force``);
    whether it was written. A rerun that made nothing thus leaves its figures untouched (same inode and mtime)."""
    from hrv_diffusion.io import write_png

    path = Path(path)
    if not force and path.is_file():
        try:
            if np.array_equal(read_rgb(path), picture):
                return False
        except OSError:  # an unreadable picture is replaced
            pass
    write_png(picture, path)
    return True
