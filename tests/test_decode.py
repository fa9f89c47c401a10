"""Decoding: palette PNGs give their indices (and the decode_png trap), bad files raise SegtrainError."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.config import DataConfig
from segtrain.data.formats.decode import class_names, color_table, read_image, read_mask, read_pair
from segtrain.data.formats.palette import CAMVID_COLORS, voc_colormap
from segtrain.errors import SegtrainError
from conftest import shared_data



def voc_cfg(**kw) -> DataConfig:
    return DataConfig(format="voc", root="unused", num_classes=kw.pop("num_classes", 21), **kw)


def write_palette_png(path: Path, indices: np.ndarray) -> Path:
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(voc_colormap(256).reshape(-1).tolist())
    im.save(path)
    return path


@pytest.fixture
def indices() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = np.array([0, 1, 5, 18, 20, 255], dtype=np.uint8)
    return values[rng.integers(0, len(values), size=(12, 16))]


def test_palette_png_decodes_to_exact_indices(tmp_path, indices):
    path = write_palette_png(tmp_path / "m.png", indices)
    mask = read_mask(path, voc_cfg())
    assert mask.dtype == np.uint8 and mask.shape == (12, 16)
    np.testing.assert_array_equal(mask, indices)


def test_tf_decode_png_of_palette_png_gives_grey_levels_not_indices(tmp_path, indices):
    """The trap: decode_png(channels=1) expands the palette to colours, then to grey (luma)."""
    import tensorflow as tf

    path = write_palette_png(tmp_path / "m.png", indices)
    grey = tf.io.decode_png(tf.io.read_file(str(path)), channels=1).numpy()[..., 0]
    assert not np.array_equal(grey, indices)
    rgb = voc_colormap(256)[indices].astype(np.float64)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(grey, luma, atol=1.5)  # grey levels of the colours, e.g. class 18 -> 112
    assert int(grey[indices == 18][0]) != 18


def test_real_voc_masks_decode_to_their_class_set():
    """Oracle: the palette index of each pixel, recovered independently from its RGB colour."""
    cmap = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(voc_colormap(256))}
    seen = set()
    for path in sorted(shared_data("voc", "SegmentationClass").glob("*.png")):
        mask = read_mask(path, voc_cfg())
        rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(np.int64)
        colours, inverse = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2], return_inverse=True)
        expected = np.array([cmap[int(c)] for c in colours])[inverse.ravel()]
        np.testing.assert_array_equal(mask.ravel(), expected)
        seen |= set(np.unique(mask).tolist())
    assert seen == {0, 2, 5, 6, 7, 9, 11, 12, 15, 18, 19, 255}


def test_grey_mask_values_void_value_and_label_map(tmp_path):
    raw = np.array([[0, 3, 11], [10, 11, 1]], dtype=np.uint8)
    Image.fromarray(raw, mode="L").save(tmp_path / "l.png")
    camvid = DataConfig(format="camvid", root="x", num_classes=11, classes="camvid", ignore_index=11)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", camvid), np.where(raw == 11, 255, raw))
    isbi = np.array([[0, 255], [255, 0]], dtype=np.uint8)  # 255 is a class here, not void
    Image.fromarray(isbi, mode="L").save(tmp_path / "isbi.png")
    cfg = DataConfig(format="folders", root="x", num_classes=2, classes=["membrane", "cell"], label_map={255: 1})
    np.testing.assert_array_equal(read_mask(tmp_path / "isbi.png", cfg), [[0, 1], [1, 0]])


def test_rgb_mask_maps_through_colour_table(tmp_path):
    expected = np.array([[0, 3, 10], [255, 8, 0]], dtype=np.uint8)
    table = np.vstack([CAMVID_COLORS, np.zeros((245, 3), np.uint8)])
    table[255] = (0, 0, 0)
    Image.fromarray(table[expected]).save(tmp_path / "rgb.png")
    rgba = np.dstack([table[expected], np.full(expected.shape, 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    cfg = DataConfig(format="camvid", root="x", num_classes=11, classes="camvid")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", cfg), expected)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png", cfg), expected)


def test_unknown_colour_names_file_colour_and_pixel_count(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, :3] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad_rgb.png")
    with pytest.raises(SegtrainError, match=r"bad_rgb\.png.*\(1,2,3\) \(3 px\)"):
        read_mask(tmp_path / "bad_rgb.png", voc_cfg())


def test_out_of_range_value_names_file_and_values(tmp_path):
    Image.fromarray(np.array([[0, 1], [7, 7]], dtype=np.uint8), mode="L").save(tmp_path / "range.png")
    with pytest.raises(SegtrainError, match=r"range\.png: mask values 7 \(2 px\)"):
        read_mask(tmp_path / "range.png", voc_cfg(num_classes=4, classes=["a", "b", "c", "d"]))


@pytest.mark.parametrize("value, bad", [(3, False), (4, True), (254, True), (255, False)])
def test_first_and_last_values_outside_the_classes_are_refused(tmp_path, value, bad):
    """4 classes: 0..3 and void 255 pass; 4 (the first value past the classes) and 254 do not,
    named with their pixel count; also behind the Pillow road (a palette PNG)."""
    raw = np.array([[0, value, value], [1, 2, 3]], dtype=np.uint8)
    Image.fromarray(raw, mode="L").save(tmp_path / "grey.png")
    write_palette_png(tmp_path / "palette.png", raw)
    cfg = voc_cfg(num_classes=4, classes=["a", "b", "c", "d"])
    for name in ("grey.png", "palette.png"):
        if bad:
            with pytest.raises(SegtrainError, match=rf"{name}: mask values {value} \(2 px\) are neither a class \(0\.\.3\)"):
                read_mask(tmp_path / name, cfg)
        else:
            np.testing.assert_array_equal(read_mask(tmp_path / name, cfg), raw)


def test_size_mismatch_names_both_files(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.jpg")
    write_palette_png(tmp_path / "msk.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(SegtrainError, match=r"img\.jpg.*msk\.png"):
        read_pair(tmp_path / "img.jpg", tmp_path / "msk.png", voc_cfg())


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_index_mask_is_refused_whatever_its_name(tmp_path, fmt):
    rng = np.random.default_rng(1)
    classes = np.kron(rng.integers(0, 4, size=(10, 10)), np.ones((5, 7), np.int64)).astype(np.uint8)  # 50x70
    path = tmp_path / "2007_000001.png"
    Image.fromarray(classes, mode="L").save(path, format=fmt, quality=75)
    decoded = np.asarray(Image.open(path).convert("L"))  # WebP has no grey mode: it comes back RGB
    assert (decoded != classes).mean() > 0.01  # the trap: lossy bytes really do move class indices
    cfg = voc_cfg(num_classes=4, classes=["a", "b", "c", "d"], label_map={v: 3 for v in range(4, 255)})
    with pytest.raises(SegtrainError, match=r"2007_000001\.png: mask is stored as (JPEG|WebP), a lossy format.*save masks losslessly as PNG$"):
        read_mask(path, cfg)
    Image.fromarray(classes, mode="L").save(path)  # the same mask as a real PNG decodes exactly
    np.testing.assert_array_equal(read_mask(path, cfg), classes)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing"])
def test_corrupt_files_raise_naming_the_file(tmp_path, kind):
    path = write_palette_png(tmp_path / f"{kind}.png", np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8) % 21)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif kind == "garbage":
        path.write_bytes(b"not a png at all")
    else:
        path.unlink()
    for reader in (lambda p: read_mask(p, voc_cfg()), read_image):
        with pytest.raises(SegtrainError, match=f"{kind}\\.png"):
            reader(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(SegtrainError, match=r"big\.png.*decompression bomb"):
        read_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # over 2x the limit: Pillow's own error, also caught
    with pytest.raises(SegtrainError, match=r"big\.png.*decompression bomb"):
        read_image(tmp_path / "big.png")


def test_images_become_rgb_uint8_whatever_the_mode(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 5), 9, np.uint8)]), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    sixteen = (grey.astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    cmyk = read_image(tmp_path / "cmyk.tif")
    assert cmyk.dtype == np.uint8 and cmyk.shape == (6, 5, 3)
    np.testing.assert_allclose(cmyk.astype(int), rgb.astype(int), atol=2)
    i16 = read_image(tmp_path / "i16.png")
    assert i16.dtype == np.uint8 and i16.shape == (6, 5, 3)
    np.testing.assert_array_equal(i16[..., 1], grey)


def test_class_tables():
    assert class_names(voc_cfg())[18] == "sofa"
    table = color_table(DataConfig(format="camvid", root="x", num_classes=11, classes="camvid"))
    colors, void = table.colors, table.void_color
    np.testing.assert_array_equal(colors, CAMVID_COLORS)
    assert void == (0, 0, 0)
    table = color_table(voc_cfg(num_classes=2, classes=["a", "b"], colors=[[1, 2, 3], [4, 5, 6]], void_color=[9, 9, 9]))
    colors, void = table.colors, table.void_color
    assert colors.tolist() == [[1, 2, 3], [4, 5, 6]] and void == (9, 9, 9)
    with pytest.raises(SegtrainError, match="data.num_classes"):
        class_names(voc_cfg(num_classes=5))
    with pytest.raises(SegtrainError, match="data.colors"):
        color_table(voc_cfg(num_classes=2, classes=["a", "b"], colors=[[1, 2, 3]]))
