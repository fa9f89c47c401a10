"""keras-hub segmenters through segtrain's bridge next to segtrain's U-Net: parameters and ms/image.

SegFormer-B0 (MiT-B0, 512x512 like segformer_b0_ade20k_512) and DeepLabV3+ ResNet50 (the
architecture of deeplab_v3_plus_resnet50_pascalvoc, run at 512x512) are built with random
weights, saved as local presets and loaded with ``model.name: keras_hub`` (so the bridge's
resizes are timed too); the baseline is configs/camvid/cpu_best.yaml's U-Net. One process,
the same raw 0..255 frame for all, batch 1, inference forward in a compiled function;
medians over ``--repeats`` calls after a warm-up.

    nice python benchmarks/bench_keras_hub.py [--size 360 480] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from results_file import write_results  # noqa: E402

from segtrain.config import load_config  # noqa: E402
from segtrain.models import build_model, build_model_from_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_SCALE = [1 / (255 * s) for s in (0.229, 0.224, 0.225)]
IMAGENET_OFFSET = [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]


def segformer_b0(classes: int):
    """keras-hub's MiT-B0 / SegFormer-B0 configuration (segformer_b0_ade20k_512)."""
    mit = keras_hub.models.MiTBackbone(
        layerwise_depths=[2, 2, 2, 2], num_layers=4, layerwise_num_heads=[1, 2, 5, 8], layerwise_sr_ratios=[8, 4, 2, 1],
        max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        image_shape=(512, 512, 3), hidden_dims=[32, 64, 160, 256])
    converter = keras_hub.layers.SegFormerImageConverter(image_size=(512, 512), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    return keras_hub.models.SegFormerImageSegmenter(
        backbone=keras_hub.models.SegFormerBackbone(image_encoder=mit, projection_filters=256), num_classes=classes,
        preprocessor=keras_hub.models.SegFormerImageSegmenterPreprocessor(image_converter=converter))


def deeplab_resnet50(classes: int):
    """keras-hub's ResNet50 + DeepLabV3+ head (deeplab_v3_plus_resnet50_pascalvoc's architecture)."""
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block")
    backbone = keras_hub.models.DeepLabV3Backbone(image_encoder=resnet, spatial_pyramid_pooling_key="P5", upsampling_size=8,
                                                  dilation_rates=[6, 12, 18], low_level_feature_key="P2")
    converter = keras_hub.layers.DeepLabV3ImageConverter(image_size=(512, 512), scale=1 / 127.5, offset=-1.0)
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=backbone, num_classes=classes,
        preprocessor=keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=converter))


def ms_per_image(model, image, repeats: int) -> list[float]:
    forward = tf.function(lambda x: model(x, training=False))
    forward(image).numpy()  # trace + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(image).numpy()
        times.append((time.perf_counter() - start) * 1000 / image.shape[0])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--classes", type=int, default=11)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, *args.size, 3)).astype("float32"))
    config = load_config(os.path.join(REPO, "configs", "camvid", "cpu_best.yaml"))
    models = {"unet (configs/camvid/cpu_best.yaml)": build_model_from_config(config, (None, None, 3))}
    with tempfile.TemporaryDirectory() as folder:
        for name, make in (("keras_hub SegFormer-B0 (512x512 inside)", segformer_b0),
                           ("keras_hub DeepLabV3+ ResNet50 (512x512 inside)", deeplab_resnet50)):
            preset = os.path.join(folder, make.__name__)
            make(args.classes).save_to_preset(preset)
            models[name] = build_model("keras_hub", args.classes, (None, None, 3), preset=preset)
    rows, figures = [], {}
    for name, model in models.items():
        times = ms_per_image(model, image, args.repeats)
        figures[name] = {"params": model.count_params(), "ms_per_image_median": float(np.median(times)), "ms_per_image": times}
        rows.append(name)
    base = figures[rows[0]]["ms_per_image_median"]
    table = [f"{args.size[0]}x{args.size[1]} raw frame, batch 1, forward (inference), median of {args.repeats}", "",
             "| model | parameters | ms/image | vs U-Net |", "| --- | --- | --- | --- |"]
    for name in rows:
        f = figures[name]
        f["vs_unet"] = f["ms_per_image_median"] / base
        table.append(f"| {name} | {f['params']:,} | {f['ms_per_image_median']:.0f} | {f['vs_unet']:.2f}x |")
    print("\n".join(table))
    write_results("bench_keras_hub", figures, table, [
        "Random weights, same architectures as the keras-hub presets (SegFormer-B0: MiT-B0 + 256-channel MLP "
        "decoder; DeepLabV3+: ResNet50 v1, ASPP 6/12/18, 48-channel skip). keras-hub models run at their preset's "
        "512x512 (the bridge resizes the frame in and the logits out); the U-Net at the frame's size.",
        "Shared 2-core machine: other jobs ran at the same time (see the load average), so the ratios matter more "
        "than the absolute milliseconds."])


if __name__ == "__main__":
    main()
