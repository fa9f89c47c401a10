"""keras-hub bridge (``model.name: keras_hub``, ``model.encoder: keras_hub:<preset>``), offline.

Tiny keras-hub models with random weights are saved as local presets (``save_to_preset``):
a SegFormer (MiT, fixed 64x64 like keras-hub's own presets), a DeepLabV3+ (ResNet, any
size) and a bare ResNet backbone with an image converter. The oracle is keras-hub itself:
the preset's segmenter on images its own converter prepared.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_backend, need_module
from PIL import Image

keras_hub = need_module("keras_hub", "keras_hub")

from segtrain.config import from_dict, load_config
from segtrain.errors import SegtrainError
from segtrain.evaluation import evaluate
from segtrain.models import build_model, build_model_from_config
from segtrain.training import Trainer

REPO = Path(__file__).resolve().parent.parent
CLASSES = 5
IMAGENET_SCALE = [1 / (255 * s) for s in (0.229, 0.224, 0.225)]
IMAGENET_OFFSET = [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]


def tiny_resnet():
    # keras-hub's ResNet insists on 64 filters in the stem and first stack
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")


def save_presets(folder: Path) -> dict[str, Path]:
    """SegFormer, DeepLabV3+ and a ResNet backbone as keras-hub presets in ``folder``."""
    keras.utils.set_random_seed(0)
    mit = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1], layerwise_sr_ratios=[4, 2, 1, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        image_shape=(64, 64, 3), hidden_dims=[4, 8, 12, 16])
    converter = keras_hub.layers.SegFormerImageConverter(image_size=(64, 64), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    segformer = keras_hub.models.SegFormerImageSegmenter(
        backbone=keras_hub.models.SegFormerBackbone(image_encoder=mit, projection_filters=8), num_classes=CLASSES,
        preprocessor=keras_hub.models.SegFormerImageSegmenterPreprocessor(image_converter=converter))
    deeplab = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(image_encoder=tiny_resnet(), spatial_pyramid_pooling_key="P5",
                                                    upsampling_size=8, dilation_rates=[1, 2], low_level_feature_key="P2",
                                                    projection_filters=8),
        num_classes=CLASSES, preprocessor=keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(
            image_converter=keras_hub.layers.DeepLabV3ImageConverter(image_size=(64, 64), scale=1 / 127.5, offset=-1.0)))
    for model in (segformer, deeplab):  # non-trivial BatchNorm statistics, so kept weights are visible
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.moving_mean.shape[0]
                layer.moving_mean.assign(np.random.default_rng(n).normal(0, 0.3, n).astype("float32"))
    paths = {name: folder / name for name in ("segformer", "deeplab", "resnet")}
    segformer.save_to_preset(str(paths["segformer"]))
    deeplab.save_to_preset(str(paths["deeplab"]))
    backbone = tiny_resnet()
    backbone.save_to_preset(str(paths["resnet"]))
    keras_hub.layers.ImageConverter(scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET).save_to_preset(str(paths["resnet"]))
    return paths


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    return save_presets(tmp_path_factory.mktemp("presets"))


def images(shape=(64, 64), n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape, 3)).astype("float32")


def head_of(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]


@pytest.mark.parametrize("kind", ["segformer", "deeplab"])
def test_kept_head_is_the_preset_and_folds_its_converter(presets, kind):
    """Same classes: every weight is the preset's, and raw pixels give keras-hub's own logits
    on converter-prepared images; logits come back at any input size."""
    reference = keras_hub.models.ImageSegmenter.from_preset(str(presets[kind]))
    model = build_model("keras_hub", CLASSES, (None, None, 3), preset=str(presets[kind]))
    ours, theirs = model.get_layer("keras_hub_backbone").weights, reference.backbone.weights
    for a, b in zip(ours, theirs, strict=True):  # same layers in the same order, so the same shapes
        assert a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    for a, b in zip(head_of(model).get_weights(), head_of(reference).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = images()
    expected = np.asarray(reference(reference.preprocessor.image_converter(x), training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert model.predict(images((45, 70)), verbose=0).shape == (2, 45, 70, CLASSES)


def test_resize_to_match_is_half_pixel_bilinear():
    """By hand: [0, 1] upsampled x2 is [0, .25, .75, 1] (edges clamped); down and up to sizes
    a factor does not give, against a NumPy reference of the same formula."""
    from segtrain.models.hub import ResizeToMatch

    x = np.array([0.0, 1.0], "float32").reshape(1, 1, 2, 1)
    got = np.asarray(ResizeToMatch()([x, np.zeros((1, 1, 4, 1), "float32")]))
    np.testing.assert_allclose(got.ravel(), [0, 0.25, 0.75, 1], atol=1e-7)

    def reference(a, axis, size):
        n = a.shape[axis]
        pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, n - 1)
        w = (pos - low).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.take(a, low, axis) * (1 - w) + np.take(a, high, axis) * w

    x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype("float32")
    for h, w in ((16, 9), (3, 2), (7, 5)):
        got = np.asarray(ResizeToMatch()([x, np.zeros((2, h, w, 1), "float32")]))
        np.testing.assert_allclose(got, reference(reference(x, 1, h), 2, w), rtol=0, atol=1e-5)


def test_other_class_count_replaces_only_the_head(presets):
    reference = keras_hub.models.ImageSegmenter.from_preset(str(presets["deeplab"]))
    model = build_model("keras_hub", 3, (None, None, 3), preset=str(presets["deeplab"]))
    for a, b in zip(model.get_layer("keras_hub_backbone").get_weights(), reference.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert head_of(model).kernel.shape[-1] == 3 and head_of(reference).kernel.shape[-1] == CLASSES
    assert model.predict(images((33, 40)), verbose=0).shape == (2, 33, 40, 3)


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus"])
def test_backbone_preset_as_encoder(presets, name):
    """The encoder is the preset's backbone (its weights, its converter's normalisation): the
    features the decoder reads equal the backbone's pyramid on converter-prepared images."""
    preset = str(presets["resnet"])
    model = build_model(name, 4, (None, None, 3), encoder=f"keras_hub:{preset}", width=4)
    backbone = keras_hub.models.Backbone.from_preset(preset)
    x = images()
    prepared = keras_hub.layers.ImageConverter.from_preset(preset)(x)
    expected = keras.Model(backbone.inputs, list(backbone.pyramid_outputs.values()))(prepared, training=False)
    got = keras.Model(model.input, model.get_layer("keras_hub_encoder").output)(x, training=False)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4 * float(np.abs(b).max()))
    assert model.predict(images((50, 61)), verbose=0).shape == (2, 50, 61, 4)


def test_checkpoint_loads_with_import_segtrain_models_only(presets, tmp_path):
    """A fresh process: ``import segtrain.models`` does not import keras-hub, and loading the
    ``.keras`` brings it in and gives the same logits."""
    model = build_model("keras_hub", CLASSES, (None, None, 3), preset=str(presets["segformer"]))
    model.save(tmp_path / "m.keras")
    x = images((40, 48))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    script = ("import sys, keras, numpy as np, segtrain.models\n"
              "assert 'keras_hub' not in sys.modules\n"
              f"m = keras.models.load_model({str(tmp_path / 'm.keras')!r})\n"
              f"y = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
              f"print(float(np.abs(y - np.load({str(tmp_path / 'y.npy')!r})).max()))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) <= 1e-5


@pytest.mark.parametrize("preset", ["no_such_keras_hub_preset", "missing/folder"])
def test_preset_that_cannot_be_loaded_is_one_line(preset, tmp_path):
    with pytest.raises(SegtrainError) as err:
        build_model("keras_hub", 2, (None, None, 3), preset=preset)
    message = str(err.value)
    assert message.startswith(f"model.preset: cannot load keras-hub ImageSegmenter preset {preset!r}")
    assert "save_to_preset" in message and "set model.preset: /path/to/folder" in message and "\n" not in message
    with pytest.raises(SegtrainError, match=r"^model.encoder: cannot load keras-hub Backbone preset"):
        build_model("unet", 2, (None, None, 3), encoder=f"keras_hub:{preset}")


def test_preset_for_another_model_and_weights_with_a_hub_encoder_are_refused(presets):
    with pytest.raises(SegtrainError, match="^model.preset: unet does not take it"):
        build_model_from_config(from_dict({"data": {"format": "folders", "root": ".", "num_classes": 2},
                                           "model": {"name": "unet", "preset": "x"}}), (None, None, 3))
    with pytest.raises(SegtrainError, match="^model.encoder_weights: keras_hub:.* brings its preset's own weights"):
        build_model("unet", 2, (None, None, 3), encoder=f"keras_hub:{presets['resnet']}", encoder_weights="imagenet")
    with pytest.raises(SegtrainError, match=r"^model.encoder: keras_hub:.*only takes \(64, 64\) inputs"):
        build_model("unet", 2, (None, None, 3), encoder=f"keras_hub:{presets['segformer']}")


def write_folders(root: Path, n: int = 4, size: int = 32) -> None:
    """A ``folders`` dataset: class 1 where the red channel is bright, a void border."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            mask = (image[..., 0] > 128).astype(np.uint8)
            mask[:2] = 255
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")


def run_config(tmp_path: Path, run: str, preset: str, epochs: int):
    return from_dict({
        "data": {"format": "folders", "root": str(tmp_path / "data"), "num_classes": 2, "classes": ["dark", "red"],
                 "image_dir": "images", "mask_dir": "masks"},
        "model": {"name": "keras_hub", "preset": preset},
        "train": {"epochs": epochs, "batch_size": 2, "seed": 0, "deterministic": True, "mixed_precision": "none",
                  "optimizer": {"name": "adam", "learning_rate": 0.001}, "precise_bn": {"batches": 1}},
        "output_dir": str(tmp_path / run)})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["segformer", "deeplab"])
def test_trains_resumes_exactly_evaluates_and_exports(presets, tmp_path, kind):
    """segtrain's Trainer on a keras-hub preset (head replaced: 2 classes): a run stopped after
    epoch 1 and resumed to 2 ends with the straight run's weights; evaluate scores the
    checkpoint; the ONNX export gives Keras's logits in onnxruntime."""
    ort = need_module("onnxruntime", "export")
    need_module("tf2onnx", "export")
    from segtrain.export import export_model  # export needs TensorFlow and tf2onnx: only this test does

    write_folders(tmp_path / "data")
    preset = str(presets[kind])
    straight = Trainer(run_config(tmp_path, "straight", preset, 2), verbose=0)
    result = straight.fit()
    assert result["steps"] == 4 and np.isfinite(result["loss"])
    Trainer(run_config(tmp_path, "grown", preset, 1), verbose=0).fit()
    grown = Trainer(run_config(tmp_path, "grown", preset, 2), verbose=0)
    assert grown.fit(resume=True)["steps"] == 4
    for a, b in zip(straight.model.get_weights(), grown.model.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)

    checkpoint = tmp_path / "straight" / "checkpoints" / "last.keras"
    metrics = evaluate(run_config(tmp_path, "straight", preset, 2), checkpoint=checkpoint, verbose=False)
    assert metrics["num_images"] == 4 and 0.0 <= metrics["miou"] <= 1.0

    model = keras.models.load_model(checkpoint)
    path = export_model(model, "onnx", tmp_path / "m.onnx", size=(32, 32))
    x = images((32, 32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


BACKEND_STEP = """
import sys, keras, numpy as np
from segtrain.models import build_model
for preset in sys.argv[1:]:
    model = build_model("keras_hub", 2, (None, None, 3), preset=preset)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = (x[..., 0] > 128).astype("int32")
    assert model.predict(x, verbose=0).shape == (2, 32, 32, 2)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.asarray(w) for w in model.trainable_weights]
    loss = float(model.train_on_batch(x, y))
    changed = any(not np.array_equal(a, np.asarray(w)) for a, w in zip(before, model.trainable_weights))
    assert np.isfinite(loss) and changed, (preset, loss)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_forward_and_one_train_step_on_other_backends(presets, tmp_path, backend):
    need_backend(backend)
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", BACKEND_STEP, str(presets["segformer"]), str(presets["deeplab"])],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


CONFIGS = sorted(REPO.glob("configs/*/*keras_hub*.yaml"))


def test_configs_name_presets_keras_hub_knows():
    """Each keras-hub config loads and names a preset in keras-hub's registry (fetching needs
    network, so none is trained here)."""
    assert {p.parent.name for p in CONFIGS} >= {"camvid", "voc"} and len(CONFIGS) >= 4
    segmenters = set(keras_hub.models.ImageSegmenter.presets)
    backbones = set(keras_hub.models.Backbone.presets)
    for path in CONFIGS:
        model = load_config(path).model
        if model.name == "keras_hub":
            assert model.preset in segmenters, path
        else:
            assert model.encoder.startswith("keras_hub:") and model.encoder[len("keras_hub:"):] in backbones, path


def test_preset_folders_in_a_config_are_relative_to_it_and_names_stay_names(tmp_path):
    (tmp_path / "cfg").mkdir()
    for preset, encoder, want_preset, want_encoder in (
            ("./presets/seg", "keras_hub:../backbone", tmp_path / "cfg" / "presets" / "seg", f"keras_hub:{tmp_path / 'backbone'}"),
            ("segformer_b0_ade20k_512", "keras_hub:resnet_50_imagenet", "segformer_b0_ade20k_512", "keras_hub:resnet_50_imagenet"),
            ("hf://user/seg", "keras_hub:kaggle://keras/resnet", "hf://user/seg", "keras_hub:kaggle://keras/resnet")):
        path = tmp_path / "cfg" / "c.yaml"
        path.write_text(f"data: {{format: folders, root: ., num_classes: 2}}\n"
                        f"model: {{name: keras_hub, preset: '{preset}', encoder: '{encoder}'}}\n")
        model = load_config(path).model
        assert (model.preset, model.encoder) == (str(want_preset), want_encoder)
