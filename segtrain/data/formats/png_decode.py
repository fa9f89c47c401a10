"""8-bit RGB and grey PNGs decoded by OpenCV, which holds no GIL while it decodes.

Pillow decodes a PNG in 64 KB chunks from a Python loop and takes the GIL back between them,
so two loader threads decoding at once wait for each other; ``cv2.imread`` decodes the whole
file with the GIL released. For the PNG kinds in ``_KINDS`` both give the same array (PNG is
lossless, neither applies gamma or colour profiles, and OpenCV is told to ignore EXIF rotation, as
Pillow's arrays do; a tRNS transparency chunk is dropped by both), so this is only a faster
road to ``decode.py``'s result. OpenCV writes RGB directly (``IMREAD_COLOR_RGB``: no BGR copy
to convert). Anything else (palette, alpha, 16-bit, a file OpenCV cannot read, an image over
Pillow's pixel limit) returns ``None`` and goes the Pillow way, which also gives the one-line errors.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (PNG colour type, channels wanted) -> OpenCV's read flags. Colour type 2 is RGB, 0 is grey;
# both only at 8 bits per sample.
_KINDS = {(2, 3): cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION,
          (0, 1): cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION}


def _header(path: Path) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from the IHDR chunk, or None if not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, colour


def read_png(path: str | Path, channels: int) -> np.ndarray | None:
    """An 8-bit RGB (``channels`` 3) or grey (``channels`` 1) PNG as uint8 (H, W) for grey,
    (H, W, 3) for RGB, exactly as Pillow reads it; None when the file is another kind."""
    header = _header(Path(path))
    if header is None:
        return None
    width, height, depth, colour = header
    limit = Image.MAX_IMAGE_PIXELS
    if depth != 8 or (colour, channels) not in _KINDS or (limit and width * height > limit):
        return None
    array = cv2.imread(str(path), _KINDS[(colour, channels)])  # the GIL is released for the whole decode
    expected = (height, width) if channels == 1 else (height, width, 3)
    if array is None or array.dtype != np.uint8 or array.shape != expected:
        return None  # unreadable to OpenCV: Pillow decides, and names the problem
    return array
