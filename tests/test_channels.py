"""data.channels for 2-D images: grey and N-channel decoding, and model.mean/std of that length."""

import numpy as np
import pytest
from PIL import Image

from segtrain.config import from_dict, input_channels
from segtrain.data.formats.decode import read_image, read_pair
from segtrain.errors import SegtrainError


def _config(tmp_path, model=None, **data):
    data = {"format": "folders", "root": str(tmp_path), "num_classes": 2, "classes": ["membrane", "cell"], **data}
    return from_dict({"data": data, "model": model or {}, "output_dir": str(tmp_path / "run")})


def test_grey_and_colour_images_read_as_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png", 1), grey[..., None])

    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    luminance = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]  # ITU-R 601, as Pillow's convert("L")
    got = read_image(tmp_path / "rgb.png", 1)
    assert got.shape == (5, 7, 1) and got.dtype == np.uint8
    assert np.abs(got[..., 0].astype(np.float64) - luminance).max() <= 1.0

    deep = (grey.astype(np.uint16) * 257)  # a 16-bit CT/EM slice
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", 1), grey[..., None])


def test_four_channels_keep_alpha_or_add_an_opaque_one(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png", 4), rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png", 3), rgba[..., :3])
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "rgb.png")
    four = read_image(tmp_path / "rgb.png", 4)
    np.testing.assert_array_equal(four[..., :3], rgba[..., :3])
    assert (four[..., 3] == 255).all()


def test_read_pair_follows_data_channels(tmp_path):
    Image.fromarray(np.full((3, 4), 9, np.uint8), "L").save(tmp_path / "im.png")
    Image.fromarray(np.ones((3, 4), np.uint8), "L").save(tmp_path / "mask.png")
    config = _config(tmp_path, channels=1, model={"mean": [127.5], "std": [60.0]})
    assert input_channels(config.data) == 1
    image, mask = read_pair(tmp_path / "im.png", tmp_path / "mask.png", config.data)
    assert image.shape == (3, 4, 1) and (image == 9).all() and mask.shape == (3, 4)
    assert input_channels(_config(tmp_path).data) == 3  # RGB stays the default


@pytest.mark.parametrize("data, model, message", [
    ({"channels": 1}, {}, r"model\.mean' has 3 values but the input has 1 channel\(s\)"),
    ({"channels": 1}, {"mean": [0.5], "std": [1, 2]}, r"model\.std' has 2 values but the input has 1 channel"),
    ({"channels": 5}, {}, r"data\.channels' must be 1 \(grey\), 2, 3 \(RGB\) or 4 \(RGBA\) for format folders, got 5"),
    ({"channels": ["a.png"]}, {}, r"data\.channels' must be a number of channels for format folders"),
    ({"mask": "brain.png"}, {}, r"data\.mask' applies to format nifti only"),
    ({"patch": [64, 64]}, {}, r"data\.patch' applies to formats nifti, series and geotiff only"),
])
def test_config_errors(tmp_path, data, model, message):
    with pytest.raises(SegtrainError, match=message):
        _config(tmp_path, model=model, **data)


def test_one_channel_without_normalisation_is_allowed(tmp_path):
    config = _config(tmp_path, channels=1, model={"mean": None, "std": None})
    assert config.model.mean is None and config.data.channels == 1
