"""OpenCV's road for 8-bit RGB and grey PNGs gives exactly what was written, and every other kind goes to Pillow."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.config import DataConfig
from segtrain.data.formats.decode import read_image, read_mask
from segtrain.data.formats.png_decode import read_png
from segtrain.errors import SegtrainError
from conftest import shared_data

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
GREY = RNG.integers(0, 12, size=(37, 53), dtype=np.uint8)


def twelve_classes() -> DataConfig:
    return DataConfig(format="folders", root="unused", num_classes=12, classes=[str(i) for i in range(12)])


def with_chunk(path: Path, kind: bytes, data: bytes) -> Path:
    """Insert an ancillary chunk right after IHDR (what other writers add: gamma, transparency)."""
    raw = path.read_bytes()
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(raw[:33] + chunk + raw[33:])
    return path


def test_rgb_and_grey_pngs_decode_to_the_written_values(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    Image.fromarray(GREY, mode="L").save(tmp_path / "grey.png")
    fast_rgb, fast_grey = read_png(tmp_path / "rgb.png", 3), read_png(tmp_path / "grey.png", 1)
    assert fast_rgb is not None and fast_grey is not None  # these kinds take OpenCV's road
    np.testing.assert_array_equal(fast_rgb, RGB)  # RGB order, not OpenCV's BGR
    np.testing.assert_array_equal(fast_grey, GREY)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), RGB)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png", channels=1), GREY[..., None])
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png", twelve_classes()), GREY)


def test_gamma_chunk_changes_nothing(tmp_path):
    """Pillow ignores gAMA; a decoder that applied it would move every value."""
    path = tmp_path / "gamma.png"
    Image.fromarray(RGB).save(path)
    with_chunk(path, b"gAMA", struct.pack(">I", 100000))  # gamma 1.0 against the display's 2.2
    np.testing.assert_array_equal(np.asarray(Image.open(path)), RGB)
    np.testing.assert_array_equal(read_png(path, 3), RGB)


def exif_rotated(path: Path) -> Path:
    """An eXIf chunk saying "rotate 90 degrees clockwise" (orientation 6)."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
    return with_chunk(path, b"eXIf", b"MM\x00\x2a\x00\x00\x00\x08" + ifd)


@pytest.mark.parametrize("kind", ["rgb", "grey"])
@pytest.mark.parametrize("chunk", ["transparency", "exif_orientation"])
def test_transparency_and_orientation_chunks_read_as_pillow_reads_them(tmp_path, kind, chunk):
    """Pillow's array ignores a tRNS colour and EXIF orientation; OpenCV must too (it would add
    alpha, or rotate the image, when asked to decode unchanged or in colour without more flags)."""
    path = tmp_path / f"{kind}.png"
    array, channels = (RGB, 3) if kind == "rgb" else (GREY, 1)
    if chunk == "transparency":
        Image.fromarray(array).save(path, transparency=tuple(int(v) for v in RGB[0, 0]) if kind == "rgb" else int(GREY[0, 0]))
    else:
        Image.fromarray(array).save(path)
        exif_rotated(path)
        assert Image.open(path).getexif().get(0x0112) == 6
    fast = read_png(path, channels)
    assert fast is not None  # still OpenCV's road
    np.testing.assert_array_equal(fast, np.asarray(Image.open(path)))
    np.testing.assert_array_equal(fast, array)


@pytest.mark.parametrize("kind", ["palette", "rgba", "grey16", "grey_as_rgb", "rgb_as_grey", "jpeg_named_png"])
def test_other_kinds_go_to_pillow(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    channels = 1 if kind in ("palette", "grey16", "rgb_as_grey") else 3
    if kind == "palette":
        im = Image.fromarray(GREY, mode="P")
        im.putpalette([255 - i % 256 for i in range(768)])
        im.save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([RGB, GREY]), mode="RGBA").save(path)
    elif kind == "grey16":
        Image.fromarray(GREY.astype(np.uint16) * 257).save(path)
    elif kind == "grey_as_rgb":
        Image.fromarray(GREY, mode="L").save(path)
    elif kind == "rgb_as_grey":
        Image.fromarray(RGB).save(path)
    else:
        Image.fromarray(RGB).save(path, format="JPEG")
    assert read_png(path, channels) is None


def test_palette_mask_keeps_its_indices(tmp_path):
    """The trap the header check avoids: OpenCV expands a palette into colours."""
    path = tmp_path / "palette.png"
    im = Image.fromarray(GREY, mode="P")
    im.putpalette([(i * 37) % 256 for i in range(768)])
    im.save(path)
    np.testing.assert_array_equal(read_mask(path, twelve_classes()), GREY)


@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_truncated_png_is_pillows_one_line_error(tmp_path, kind):
    path = tmp_path / f"cut_{kind}.png"
    Image.fromarray(RGB if kind == "rgb" else GREY, mode="RGB" if kind == "rgb" else "L").save(path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert read_png(path, 3 if kind == "rgb" else 1) is None
    with pytest.raises(SegtrainError, match=rf"cut_{kind}\.png: cannot decode image"):
        if kind == "rgb":
            read_image(path)
        else:
            read_mask(path, twelve_classes())


def test_pixel_limit_leaves_the_refusal_to_pillow(tmp_path, monkeypatch):
    Image.fromarray(RGB).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert read_png(tmp_path / "big.png", 3) is None


def test_camvid_files_match_pillow():
    root = shared_data("camvid")
    for image in sorted((root / "train").glob("*.png"))[:3]:
        mask = root / "trainannot" / image.name
        np.testing.assert_array_equal(read_png(image, 3), np.asarray(Image.open(image).convert("RGB")))
        np.testing.assert_array_equal(read_png(mask, 1), np.asarray(Image.open(mask)))
