"""Draw images into one labelled PNG grid: title lines, column headers, row labels (PIL, default font)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FONT_SIZE = 14
LINE_HEIGHT = 20
"""Pixels per line of text (the default font at FONT_SIZE is about 14 px high)."""


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a labelled grid of `rows` x `cols` cells of `cell` x `cell` px."""

    rows: int
    cols: int
    cell: int
    title_lines: int
    header_lines: int = 1
    pad: int = 6
    row_label_width: int = 96

    @property
    def top(self) -> int:
        """Height of the title lines plus the column header lines."""
        return self.pad + (self.title_lines + self.header_lines) * LINE_HEIGHT

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole image."""
        width = self.row_label_width + self.cols * (self.cell + self.pad) + self.pad
        height = self.top + self.rows * (self.cell + self.pad) + self.pad
        return width, height

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of cell (row, col)."""
        return self.row_label_width + self.pad + col * (self.cell + self.pad), self.top + row * (self.cell + self.pad)


def default_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at FONT_SIZE (a bitmap font when Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, ImportError):  # Pillow < 10.1 or without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def wrap_text(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> List[str]:
    """Greedy word wrap of `text` into lines at most `width` px wide (a longer single word keeps its line)."""
    lines: List[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def fit_cell(image: np.ndarray, cell: int) -> Image.Image:
    """An [H, W, 3] uint8 image scaled to fit a `cell` x `cell` square, aspect kept."""
    picture = Image.fromarray(image)
    scale = cell / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def labelled_grid(
    cells: Sequence[Sequence[np.ndarray]],  # rows of [H, W, 3] uint8 images
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    title: str = "",
    cell: int = 256,
) -> Image.Image:
    """One RGB image: `title` (wrapped) on top, then the column labels (may hold "\n"), then rows of cells."""
    rows, cols = len(cells), len(column_labels)
    assert rows == len(row_labels) and all(len(r) == cols for r in cells), (
        f"{rows} rows of {[len(r) for r in cells]} cells for {len(row_labels)} row and {cols} column labels"
    )
    font = default_font()
    header_lines = max((label.count("\n") + 1 for label in column_labels), default=1)
    probe = GridLayout(rows, cols, cell, title_lines=0)
    lines = wrap_text(title, probe.size[0] - 2 * probe.pad, font) if title else []
    layout = GridLayout(rows, cols, cell, title_lines=len(lines), header_lines=header_lines)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((layout.pad, layout.pad + i * LINE_HEIGHT), line, fill=INK, font=font)
    header_y = layout.top - header_lines * LINE_HEIGHT
    for col, label in enumerate(column_labels):
        x, _ = layout.cell_origin(0, col)
        for i, line in enumerate(label.split("\n")):
            draw.text((x, header_y + i * LINE_HEIGHT), line, fill=INK, font=font)
    for row, (label, images) in enumerate(zip(row_labels, cells)):
        _, y = layout.cell_origin(row, 0)
        draw.text((layout.pad, y + cell // 2 - LINE_HEIGHT // 2), label, fill=INK, font=font)
        for col, image in enumerate(images):
            x, y = layout.cell_origin(row, col)
            canvas.paste(fit_cell(image, cell), (x, y))
    return canvas
