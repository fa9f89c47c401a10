"""Pictures of predictions for people: colour overlays and titled comparison strips with a legend.

NumPy and Pillow only. Strips put panels side by side under a title band (e.g. image |
truth | prediction) and end with a legend of the classes (a swatch in the class colour
and the class name), so a strip can be read without knowing the colour table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segtrain.data.formats.palette import ColorTable

TITLE_HEIGHT = 16
SWATCH = 10  # legend swatch side, pixels
LEGEND_ROW = 14
LEGEND_GAP = 12  # between legend entries on a row
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors`` as uint8 RGB."""
    blend = (1 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(colors, np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An input image as uint8 RGB to look at: 3 channels as they are, any other count as grey of its first."""
    shown = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    return np.clip(np.rint(shown), 0, 255).astype(np.uint8)


def legend_entries(table: ColorTable, classes: int | None = None, void: bool = False) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of the first ``classes`` classes of ``table``, plus void when asked and drawable."""
    count = len(table) if classes is None else min(classes, len(table))
    entries = [(table.names[i], tuple(int(c) for c in table.colors[i])) for i in range(count)]
    if void and table.void_color is not None:
        entries.append(("void", table.void_color))
    return entries


def _layout(entries: Sequence[tuple[str, tuple]], width: int, font) -> list[list[tuple[int, str, tuple]]]:
    """Legend rows: each entry placed at an x offset, wrapped at ``width``."""
    rows: list[list[tuple[int, str, tuple]]] = [[]]
    x = 4
    for name, color in entries:
        w = SWATCH + 4 + int(font.getlength(name)) + LEGEND_GAP
        if rows[-1] and x + w > width:
            rows.append([])
            x = 4
        rows[-1].append((x, name, color))
        x += w
    return rows


def strip(panels: Sequence[tuple[str, np.ndarray]], entries: Sequence[tuple[str, tuple]]) -> np.ndarray:
    """Panels (title, (H, W, 3) uint8) side by side under their titles, with a legend below: uint8 RGB."""
    font = ImageFont.load_default()
    height = max(p.shape[0] for _, p in panels)
    width = sum(p.shape[1] for _, p in panels)
    rows = _layout(entries, width, font)
    legend_height = LEGEND_ROW * len(rows) + 4
    canvas = Image.new("RGB", (width, TITLE_HEIGHT + height + legend_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, panel in panels:
        canvas.paste(Image.fromarray(np.asarray(panel, np.uint8)), (x, TITLE_HEIGHT))
        draw.text((x + 3, 2), title, fill=TEXT, font=font)
        x += panel.shape[1]
    top = TITLE_HEIGHT + height + 2
    for r, row in enumerate(rows):
        y = top + r * LEGEND_ROW
        for x, name, color in row:
            draw.rectangle([x, y + 1, x + SWATCH - 1, y + SWATCH], fill=tuple(color), outline=None)
            draw.text((x + SWATCH + 4, y), name, fill=TEXT, font=font)
    return np.asarray(canvas)
