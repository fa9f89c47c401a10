"""`segtrain evaluate` end to end on a tiny VOC-layout folder written here."""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import yaml
from PIL import Image

from segtrain.cli import main as cli_main
from segtrain.config import from_dict
from segtrain.evaluation import default_output_dir
from segtrain.data.formats.palette import pil_palette, voc_colormap

NAMES = ["background", "thing", "never"]
PALETTE = pil_palette(voc_colormap(3))


def save_palette_png(mask, path, mode="P"):
    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if mode == "P":
        image.putpalette(PALETTE)
    image.save(path)


def crafted_masks():
    """Sample a: all 'thing'. Sample b: 2 px 'thing', 4 px void, the rest background."""
    gt_a = np.ones((8, 8), np.uint8)
    gt_b = np.zeros((8, 8), np.uint8)
    gt_b[0, :2] = 1
    gt_b[7, 4:] = 255
    return {"a": gt_a, "b": gt_b}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "voc"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, mask in crafted_masks().items():
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        save_palette_png(mask, root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"format": "voc", "root": str(root), "num_classes": 3, "classes": NAMES},
        "output_dir": str(tmp_path / "run"),
    }))
    return tmp_path, config


def evaluate_cli(config, *extra):
    return cli_main(["evaluate", "--config", str(config), *map(str, extra)])


def test_pred_dir_gives_split_wide_metrics(dataset):
    tmp_path, config = dataset
    preds = tmp_path / "preds"
    preds.mkdir()
    save_palette_png(np.ones((8, 8), np.uint8), preds / "a.png")
    pred_b = np.zeros((8, 8), np.uint8)
    pred_b[7, 4:] = 2  # 'never' predicted only on void pixels: must not count
    save_palette_png(pred_b, preds / "b.png", mode="L")  # grey PNGs are accepted too
    out = tmp_path / "report"
    assert evaluate_cli(config, "--pred-dir", preds, "--output-dir", out) == 0
    got = json.loads((out / "metrics.json").read_text())
    # hand-computed over the split (b: 58 background px, 2 thing px, 4 void px):
    # thing 64 / (66 + 64 - 64); background 58 / (58 + 60 - 58)
    thing, background = 64 / 66, 58 / 60
    assert got["per_class_iou"][1] == pytest.approx(thing)
    assert got["per_class_iou"][0] == pytest.approx(background)
    assert got["per_class_iou"][2] is None  # in neither ground truth nor prediction: n/a, not 0
    assert got["miou"] == pytest.approx((thing + background) / 2)
    per_image_mean_thing = (1.0 + 0.0) / 2
    assert abs(got["per_class_iou"][1] - per_image_mean_thing) > 0.4
    assert got["pixel_accuracy"] == pytest.approx(122 / 124)
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert cm["matrix"] == [[58, 0, 0], [2, 64, 0], [0, 0, 0]] and cm["class_names"] == NAMES
    assert Image.open(out / "confusion_matrix.png").size[0] > 100


def test_pred_dir_problems_name_the_file(dataset, capsys):
    tmp_path, config = dataset
    preds = tmp_path / "preds"
    preds.mkdir()
    save_palette_png(np.ones((8, 8), np.uint8), preds / "a.png")
    assert evaluate_cli(config, "--pred-dir", preds) == 1
    assert f"{preds / 'b.png'}: no prediction for sample b" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(preds / "b.png")
    assert evaluate_cli(config, "--pred-dir", preds) == 1
    assert f"{preds / 'b.png'}: prediction PNG is mode 'RGB'" in capsys.readouterr().err
    save_palette_png(np.zeros((8, 9), np.uint8), preds / "b.png")
    assert evaluate_cli(config, "--pred-dir", preds) == 1
    assert "prediction is 9x8 but ground truth" in capsys.readouterr().err
    save_palette_png(np.full((8, 8), 7, np.uint8), preds / "b.png")
    assert evaluate_cli(config, "--pred-dir", preds) == 1
    assert f"{preds / 'b.png'}: prediction contains label 7" in capsys.readouterr().err
    (tmp_path / "voc/SegmentationClass/b.png").unlink()
    assert evaluate_cli(config, "--pred-dir", preds) == 1
    assert "b.png: mask for b.jpg is missing" in capsys.readouterr().err


def test_checkpoint_and_predictions_agree(dataset):
    import keras

    from segtrain.data.formats.decode import read_image, read_mask
    from segtrain.inference import load_checkpoint, predict_mask
    from segtrain.prediction_options import PredictOptions

    tmp_path, config = dataset
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(x))
    ckpt = tmp_path / "tiny.keras"
    model.save(ckpt)

    assert evaluate_cli(config, "--checkpoint", ckpt, "--tta", "flip", "--json", tmp_path / "m.json") == 0
    got = json.loads((tmp_path / "m.json").read_text())
    assert (tmp_path / "run/eval/tiny_val/confusion_matrix.png").is_file()  # default report folder

    # oracle: the same predictions, counted class by class over the split
    from segtrain.config import load_config

    data_cfg = load_config(config).data
    reloaded = load_checkpoint(ckpt)
    inter, gt_px, pred_px = np.zeros(3), np.zeros(3), np.zeros(3)
    for name in ("a", "b"):
        gt = read_mask(tmp_path / f"voc/SegmentationClass/{name}.png", data_cfg)
        pred = predict_mask(reloaded, read_image(tmp_path / f"voc/JPEGImages/{name}.jpg"), PredictOptions(flip=True))
        valid = gt != 255
        for c in range(3):
            inter[c] += np.sum((gt == c) & (pred == c) & valid)
            gt_px[c] += np.sum((gt == c) & valid)
            pred_px[c] += np.sum((pred == c) & valid)
    union = gt_px + pred_px - inter
    want = [inter[c] / union[c] if union[c] else None for c in range(3)]
    for g, w in zip(got["per_class_iou"], want):
        assert (g is None and w is None) or g == pytest.approx(w)
    assert got["miou"] == pytest.approx(np.mean([w for w in want if w is not None]))

    # predict the split (strips need ground truth), then score the PNGs without the model
    out = tmp_path / "pred"
    assert cli_main(["predict", "--checkpoint", str(ckpt), "--config", str(config), "--split", "val",
                     "--output", str(out), "--tta", "flip"]) == 0
    strip = Image.open(out / "strips/a.png")
    assert strip.format == "PNG" and strip.width == 24 and strip.height > 8  # image | truth | prediction, titles, legend
    assert evaluate_cli(config, "--pred-dir", out, "--json", tmp_path / "p.json") == 0
    from_pngs = json.loads((tmp_path / "p.json").read_text())
    assert from_pngs["per_class_iou"] == got["per_class_iou"]
    assert not math.isnan(from_pngs["miou"])


@pytest.mark.parametrize("val_split,split,folder", [
    ("val", "val", "best_val"),
    ("./splits/holdout_0006R0_val.txt", "val", "best_holdout_0006R0_val"),
    ("val", "test", "best_test"),
])
def test_default_report_folder_names_a_split_list_file_by_its_stem(tmp_path, val_split, split, folder):
    config = from_dict({"data": {"format": "camvid", "root": str(tmp_path), "num_classes": 11, "val_split": val_split},
                        "output_dir": str(tmp_path / "run")})
    got = default_output_dir(config, tmp_path / "run/checkpoints/best.keras", split)
    assert got == tmp_path / "run" / "eval" / folder
