"""The built-in sample dataset: small, deterministic, in the exact PASCAL VOC layout.

It lets a fresh install train end to end with no download, and it exercises the same
code path as real VOC: JPEG images, palette PNG masks with a void (255) ring around every
object, and ``ImageSets/Segmentation/{train,val,trainval}.txt``. Four classes (background,
circle, square, triangle) differ in shape and in colour, so a tiny model learns them in
about a minute on two CPU cores. The same seed writes the same files on every machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.data.formats.palette import VOC_VOID_COLOR, VOID, pil_palette, voc_colormap

SAMPLE_CLASSES = ("background", "circle", "square", "triangle")
SIZE = 64
NUM_TRAIN, NUM_VAL = 60, 20
SEED = 20240601

# Mean colour of each shape class (RGB); jittered per object so colour alone is a strong but not exact cue.
_SHAPE_COLORS = {1: (210, 60, 50), 2: (50, 170, 70), 3: (60, 80, 210)}


def _background(rng: np.random.Generator) -> np.ndarray:
    """Low-frequency blotches plus grain, in a muted random tint: texture, not a flat colour."""
    coarse = rng.uniform(0, 1, size=(SIZE // 8, SIZE // 8, 3))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))
    tint = rng.uniform(80, 150, size=3)
    image = tint + 50 * (smooth - 0.5) + rng.normal(0, 12, size=(SIZE, SIZE, 3))
    return image


def _shape_mask(kind: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    if kind == 1:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 2:
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # upright triangle: apex at top, base at the bottom
    top, bottom = cy - r, cy + r
    half_width = (yy - top) / (2 * r) * r * 1.1
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def _ring(mask: np.ndarray) -> np.ndarray:
    """Pixels within one step of the object's edge, inside and outside: VOC's 2 px void border."""
    padded = np.pad(mask, 1)
    grown = mask.copy()
    shrunk = mask.copy()
    for dy, dx in ((0, 1), (1, 0), (1, 2), (2, 1)):
        shifted = padded[dy : dy + SIZE, dx : dx + SIZE]
        grown |= shifted
        shrunk &= shifted
    return grown & ~shrunk


def make_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, uint8 mask) pair with one to three shapes."""
    image = _background(rng)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    rings = np.zeros((SIZE, SIZE), dtype=bool)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 4))
        r = rng.uniform(7, 14)
        cy, cx = rng.uniform(r, SIZE - r, size=2)
        shape = _shape_mask(kind, cy, cx, r)
        color = np.asarray(_SHAPE_COLORS[kind]) + rng.normal(0, 15, size=3)
        image[shape] = color + rng.normal(0, 8, size=(int(shape.sum()), 3))
        mask[shape] = kind
        rings = (rings & ~shape) | _ring(shape)
    mask[rings] = VOID
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _write(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "SegmentationClass").mkdir()
    (folder / "ImageSets" / "Segmentation").mkdir(parents=True)
    palette = pil_palette(voc_colormap(len(SAMPLE_CLASSES)), VOC_VOID_COLOR)
    names = [f"sample_{i:04d}" for i in range(NUM_TRAIN + NUM_VAL)]
    for name in names:
        image, mask = make_sample(rng)
        Image.fromarray(image).save(folder / "JPEGImages" / f"{name}.jpg", quality=95)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(folder / "SegmentationClass" / f"{name}.png")
    splits = {"train": names[:NUM_TRAIN], "val": names[NUM_TRAIN:], "trainval": names}
    for split, ids in splits.items():
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (folder / "README.txt").write_text(
        "segtrain built-in sample dataset (generated; delete to regenerate).\n"
        f"classes: {', '.join(SAMPLE_CLASSES)}; 255 = void border. seed {seed}.\n"
    )


def ensure_sample_dataset(root: str | os.PathLike, seed: int = SEED) -> Path:
    """Write the sample dataset at ``root`` unless it exists; returns ``root``.

    Written into a temporary sibling folder and renamed into place, so a run killed
    half-way leaves no half dataset, and two processes racing both end up with one copy.
    """
    root = Path(root)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _write(tmp / "data", seed)
        try:
            os.rename(tmp / "data", root)
        except OSError:
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
