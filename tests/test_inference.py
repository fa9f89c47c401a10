"""segtrain.inference: sliding window vs whole image, flip TTA, multi-scale, palette PNG output."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from PIL import Image

from segtrain.cli import main as cli_main
from segtrain.config import from_dict
from segtrain.data.formats.decode import read_mask
from segtrain.data.formats.palette import VOC_COLORS
from segtrain.errors import SegtrainError
from segtrain.heads import softmax
from segtrain.inference import load_checkpoint, predict_logits, predict_mask, predict_probs
from segtrain.prediction_options import PredictOptions

NUM_CLASSES = 3


def tiny_fcn(seed=0, symmetric=False, input_size=(None, None)):
    """Two 3x3 convolutions: receptive-field radius 2 pixels, any input size."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="tanh")(x)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(x)
    model = keras.Model(inputs, outputs)
    if symmetric:  # kernels mirrored left-right: model(flip(x)) == flip(model(x)) exactly
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                kernel, bias = layer.get_weights()
                layer.set_weights([(kernel + kernel[:, ::-1]) / 2, bias])
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, (37, 53, 3)).astype(np.float32)


def test_sliding_window_equals_whole_image(image):
    model = tiny_fcn()
    whole = predict_logits(model, image)
    assert whole.shape == (37, 53, NUM_CLASSES)
    # window 16, stride 10: trusted margin (16 - 10) // 2 = 3 >= receptive radius 2
    slid = predict_logits(model, image, window=16, stride=10, batch_size=3)
    np.testing.assert_allclose(slid, whole, atol=1e-5)  # float32 summation order only
    # the margin is what makes it exact: plain averaging (stride = window, margin 0) with
    # windows cut mid-image differs at the window seams
    seams = predict_logits(model, image, window=16, stride=16)
    assert np.abs(seams - whole).max() > 1e-3


def test_window_larger_than_image_and_non_square(image):
    model = tiny_fcn()
    whole = predict_logits(model, image)
    np.testing.assert_allclose(predict_logits(model, image, window=512, stride=341), whole, atol=1e-5)
    np.testing.assert_allclose(predict_logits(model, image, window=(20, 30), stride=(12, 20)), whole, atol=1e-5)
    with pytest.raises(SegtrainError, match="--stride"):
        predict_logits(model, image, window=16, stride=20)


def test_fixed_size_model_runs_by_windows(image):
    fixed = tiny_fcn(input_size=(16, 16))
    free = tiny_fcn()  # same seed, same weights, any size
    np.testing.assert_allclose(predict_logits(fixed, image), predict_logits(free, image), atol=1e-5)


def test_flip_tta_on_flip_symmetric_model_changes_nothing(image):
    model = tiny_fcn(symmetric=True)
    plain = predict_probs(model, image)
    np.testing.assert_allclose(predict_probs(model, image, PredictOptions(flip=True)), plain, atol=1e-6)
    np.testing.assert_allclose(plain, softmax(predict_logits(model, image)), atol=1e-6)
    # an ordinary model is not mirror-symmetric, so flipping does change its output
    other = tiny_fcn(seed=1)
    assert np.abs(predict_probs(other, image, PredictOptions(flip=True)) - predict_probs(other, image)).max() > 1e-3


def test_flip_tta_is_mean_of_plain_and_mirrored(image):
    model = tiny_fcn(seed=1)
    mirrored = softmax(predict_logits(model, image[:, ::-1].copy()))[:, ::-1]
    want = (softmax(predict_logits(model, image)) + mirrored) / 2
    np.testing.assert_allclose(predict_probs(model, image, PredictOptions(flip=True)), want, atol=1e-6)


def test_multi_scale_shapes_and_probabilities(image):
    model = tiny_fcn()
    probs = predict_probs(model, image, PredictOptions(scales=(0.5, 1.0, 1.5), flip=True))
    assert probs.shape == (37, 53, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    mask = predict_mask(model, image, PredictOptions(scales=(0.75, 1.25)))
    assert mask.shape == (37, 53) and mask.dtype == np.uint8 and mask.max() < NUM_CLASSES
    np.testing.assert_array_equal(predict_mask(model, image), np.argmax(predict_logits(model, image), -1))


def numpy_bilinear(array, size):
    """Bilinear resize with half-pixel centres and no antialiasing, written out in NumPy."""
    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, n_in - 1), src - low

    (r0, r1, wr), (c0, c1, wc) = taps(array.shape[0], size[0]), taps(array.shape[1], size[1])
    rows = array[r0] * (1 - wr)[:, None, None] + array[r1] * wr[:, None, None]
    return rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]


def test_multi_scale_flip_tta_equals_a_numpy_reference(image):
    """predict_probs(scales, flip) = the mean over scales x {plain, mirrored} of the softmax of the
    model's logits on the resized view, mirrored back and resized to the image's size."""
    model = tiny_fcn(seed=1)
    height, width = image.shape[:2]
    views = []
    for scale in (0.5, 1.0, 1.5):
        size = (round(height * scale), round(width * scale))  # 18x26, 37x53, 56x80
        scaled = numpy_bilinear(image.astype(np.float64), size).astype(np.float32)
        for mirrored in (False, True):
            view = scaled[:, ::-1] if mirrored else scaled
            logits = np.asarray(model(np.ascontiguousarray(view)[None]))[0].astype(np.float64)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            views.append(numpy_bilinear(probs[:, ::-1] if mirrored else probs, (height, width)))
    want = np.mean(views, axis=0)
    got = predict_probs(model, image, PredictOptions(scales=(0.5, 1.0, 1.5), flip=True))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(want - predict_probs(model, image)).max() > 1e-2  # the augmentation matters here


def test_predict_cli_writes_palette_pngs_that_decode_back(tmp_path, image):
    model = tiny_fcn()
    ckpt = tmp_path / "tiny.keras"
    model.save(ckpt)
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = {"a": image.astype(np.uint8), "b": image[:30, :41].astype(np.uint8)}
    for stem, array in images.items():
        Image.fromarray(array).save(inputs / f"{stem}.png")
    out = tmp_path / "out"
    rc = cli_main(["predict", "--checkpoint", str(ckpt), "--input", str(inputs), "--output", str(out), "--overlay"])
    assert rc == 0
    data_cfg = from_dict({"data": {"format": "folders", "root": str(tmp_path), "num_classes": NUM_CLASSES, "classes": ["x", "y", "z"]}}).data
    reloaded = load_checkpoint(ckpt)
    for stem, array in images.items():
        png = Image.open(out / f"{stem}.png")
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png.getpalette()[: 3 * NUM_CLASSES]).reshape(-1, 3), VOC_COLORS[:NUM_CLASSES])
        decoded = read_mask(out / f"{stem}.png", data_cfg)
        np.testing.assert_array_equal(decoded, predict_mask(reloaded, array))
        overlay = Image.open(out / "overlays" / f"{stem}.png")
        assert overlay.format == "PNG" and overlay.size == (array.shape[1], array.shape[0])


def test_predict_cli_errors(tmp_path):
    rc = cli_main(["predict", "--checkpoint", str(tmp_path / "missing.keras"), "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    assert rc == 1
    with pytest.raises(SegtrainError, match="missing.keras: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.keras")


def test_corrupt_checkpoint_says_corrupt_not_missing(tmp_path):
    good = tmp_path / "good.keras"
    tiny_fcn().save(good)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # an interrupted copy
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive" * 10)
    for path in (truncated, garbage):
        with pytest.raises(SegtrainError, match="corrupt or unreadable") as err:
            load_checkpoint(path)
        assert str(path) in str(err.value) and "not found" not in str(err.value)


def _resize_oracle(model, image, size):
    """Independent of segtrain.inference: resize, logits, softmax, resize back, argmax."""
    small = keras.ops.convert_to_numpy(keras.ops.image.resize(image, size, interpolation="bilinear"))
    logits = keras.ops.convert_to_numpy(model(small[None], training=False))[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    back = keras.ops.convert_to_numpy(keras.ops.image.resize(probs, image.shape[:2], interpolation="bilinear"))
    return np.argmax(back, -1)


def test_predict_with_config_predicts_at_data_resize(tmp_path, image):
    model = tiny_fcn(seed=2)
    ckpt = tmp_path / "tiny.keras"
    model.save(ckpt)
    (tmp_path / "in").mkdir()
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "in" / "a.png")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{format: folders, root: {tmp_path}, num_classes: {NUM_CLASSES}, classes: [x, y, z], resize: [12, 16]}}\n"
    )
    out = tmp_path / "out"
    assert cli_main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--output", str(out),
                     "--config", str(config)]) == 0
    got = np.asarray(Image.open(out / "a.png"))
    assert got.shape == image.shape[:2]  # at the image's own size
    want = _resize_oracle(model, image.astype(np.uint8).astype(np.float32), (12, 16))
    np.testing.assert_array_equal(got, want)
    assert (got != predict_mask(model, image)).mean() > 0.05  # the resize matters: not the native-size prediction


def test_strips_are_png_with_titles_and_a_class_legend(tmp_path):
    from segtrain.data.formats.palette import ColorTable
    from segtrain.visualize import legend_entries, strip

    table = ColorTable(("road", "car", "sky"), [[128, 64, 128], [64, 0, 128], [70, 130, 180]], (250, 0, 250), "test")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
    truth, pred = rng.integers(0, 3, (40, 60)), rng.integers(0, 3, (40, 60))
    panels = [("image", image), ("truth", table.colorize(truth)), ("prediction", table.colorize(pred))]
    drawn = strip(panels, legend_entries(table, void=True))
    assert drawn.shape[1] == 180 and drawn.shape[0] > 40
    np.testing.assert_array_equal(drawn[16 : 16 + 40, :60], image)  # panels start under a title band
    assert (drawn[:16] != 255).any()  # the titles are drawn
    legend = drawn[16 + 40 :]  # below the title band and the panels
    for color in [*table.colors.tolist(), [250, 0, 250]]:  # a swatch of every class and of void
        assert np.all(legend == color, axis=-1).sum() >= 49, color


def test_predict_palette_takes_a_colour_table_file(tmp_path, image, capsys):
    tiny_fcn().save(tmp_path / "tiny.keras")
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "a.png")
    table = tmp_path / "t.json"
    table.write_text('{"classes": {"x": [1, 2, 3], "y": [4, 5, 6], "z": "#0a0b0c"}, "void": [7, 7, 7]}')
    args = ["predict", "--checkpoint", str(tmp_path / "tiny.keras"), "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]
    assert cli_main([*args, "--palette", str(table)]) == 0
    png = Image.open(tmp_path / "o" / "a.png")
    assert png.getpalette()[:9] == [1, 2, 3, 4, 5, 6, 10, 11, 12] and png.getpalette()[3 * 255 :] == [7, 7, 7]
    table.write_text('{"classes": {"x": [1, 2, 3], "y": [4, 5, 6]}}')
    assert cli_main([*args, "--palette", str(table)]) == 1
    assert "has 2 classes but the model predicts 3" in capsys.readouterr().err


# ---- batched prediction (issue 31.2) -------------------------------------------------------------
def counting_forward(monkeypatch):
    """Counts the model's forward passes (batches) that ``segtrain.inference`` runs."""
    import segtrain.inference as inference

    calls = []
    real = inference.forward_logits

    def forward(model, batch):
        calls.append(batch.shape)
        return real(model, batch)

    monkeypatch.setattr(inference, "forward_logits", forward)
    return calls


def test_predict_samples_batches_only_images_of_one_size(monkeypatch):
    from segtrain.inference import predict_samples

    rng = np.random.default_rng(5)
    sizes = [(20, 24), (20, 24), (20, 24), (16, 16), (20, 24), (20, 24), (20, 24), (20, 24), (20, 24)]
    images = [rng.integers(0, 256, (*s, 3)).astype(np.float32) for s in sizes]
    model = tiny_fcn()
    expected = [predict_mask(model, x) for x in images]  # one forward per image: the reference
    data = from_dict({"data": {"format": "voc", "root": ".", "num_classes": NUM_CLASSES, "classes": ["a", "b", "c"]}}).data
    calls = counting_forward(monkeypatch)
    got = list(predict_samples(model, enumerate(images), lambda pair: pair[1], data, PredictOptions(batch_size=4), per_pass=4))
    assert [item[0] for item, _ in got] == list(range(len(images)))  # in order
    for (_, mask), want in zip(got, expected):
        np.testing.assert_array_equal(mask, want)
    # runs of one size, at most 4 a pass: [3 x 20x24], [16x16], [4 x 20x24], [1 x 20x24], each filled up
    # with zero images to 4 (one batch shape per image size); the masks above show the filling changes nothing
    assert [c[:3] for c in calls] == [(4, 20, 24), (4, 16, 16), (4, 20, 24), (4, 20, 24)]


def test_padding_to_a_shared_size_would_change_border_predictions(image):
    """Why batches hold images of exactly one size: a zero-padded (or mirrored) copy changes the
    logits within the receptive field (radius 2 here) of the true edge, and only there."""
    model = tiny_fcn()
    plain = predict_logits(model, image)
    for mode in ("constant", "reflect"):
        padded = np.pad(image, ((0, 11), (0, 7), (0, 0)), mode=mode)
        cropped = predict_logits(model, padded)[:37, :53]
        assert np.abs(cropped[-2:] - plain[-2:]).max() > 1e-3 and np.abs(cropped[:, -2:] - plain[:, -2:]).max() > 1e-3
        np.testing.assert_allclose(cropped[:-2, :-2], plain[:-2, :-2], atol=1e-5)


def test_evaluate_batched_equals_per_image_on_a_split_of_mixed_sizes(tmp_path, sample_root, monkeypatch):
    """The batched, read-ahead evaluate gives the per-image path's mIoU (and matrix) on a VOC split of several sizes."""
    import shutil

    from conftest import sample_config
    from segtrain.evaluation import evaluate

    root = tmp_path / "mixed"
    shutil.copytree(sample_root, root)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:10]
    for i, name in enumerate(names):  # three sizes, in runs: 4 full, 3 cropped to 40x48, 3 to 33x57
        if i >= 4:
            box = (0, 0, 48, 40) if i < 7 else (3, 2, 60, 35)
            for path in (root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"):
                Image.open(path).crop(box).save(path)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    config = sample_config(root)
    model = tiny_fcn(seed=1)
    model = keras.Model(model.input, keras.layers.Conv2D(4, 1)(model.output))  # the sample set's 4 classes
    import segtrain.inference as inference

    from segtrain.engines import gpu_capabilities

    assert inference.images_per_pass(PredictOptions(batch_size=4)) == (4 if gpu_capabilities() else 1)  # 1 on CPU
    monkeypatch.setattr(inference, "images_per_pass", lambda options: options.batch_size)  # as on a GPU
    calls = counting_forward(monkeypatch)
    one = evaluate(config, "val", model=model, options=PredictOptions(batch_size=1), verbose=False)
    assert len(calls) == 10, calls
    calls.clear()
    batched = evaluate(config, "val", model=model, options=PredictOptions(batch_size=4), verbose=False)
    assert [c[1:3] for c in calls] == [(64, 64), (40, 48), (33, 57)] and {c[0] for c in calls} == {4}
    assert abs(batched["miou"] - one["miou"]) <= 1e-6 and batched["confusion_matrix"] == one["confusion_matrix"]
    assert batched["num_images"] == 10 and sum(map(sum, batched["confusion_matrix"])) > 0
