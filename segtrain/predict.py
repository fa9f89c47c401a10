"""`segtrain predict`: a checkpoint's predictions for image files, any case of a format, or a split.

Image files become palette PNGs of class indices (``<stem>.png``, drawn in the config's class
colours or ``--palette``), optionally with overlays. For formats that are not 2-D image files
(volumes, signals, scenes), ``--input`` is a case or a folder of cases as the format's
``input_cases`` reads them (a NIfTI case folder or file, a series file, a GeoTIFF), read with
the channels the config names, as ``nnUNetv2_predict -i IN -o OUT`` does. Cases and splits are
predicted the way their format is (2-D images at the training size, volumes and signals whole
by N-D sliding windows, scenes streamed window by window from disk) and written the way it
writes predictions (palette PNG, ``.nii.gz`` in the case's space, ``.npy``, GeoTIFF on the
scene's grid), with image | truth | prediction strips for 2-D images. A video (``--video``) becomes
an overlay video, each frame predicted as an image file is (``segtrain.video``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from segtrain import prediction_options
from segtrain.config import Config, load_config
from segtrain.data.formats import get_format
from segtrain.data.formats.decode import color_table, read_image
from segtrain.data.formats.images import write_prediction as write_palette_png
from segtrain.data.formats.palette import ColorTable
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError
from segtrain.heads import SOFTMAX, head_of
from segtrain.inference import check_outputs, load_checkpoint, num_outputs, predict_at_training_size, predict_samples, predict_scene, published_config
from segtrain.io_utils import IMAGE_EXTENSIONS, list_images, make_output_dir, progress, read_ahead, write_png
from segtrain.precision import float32_copy
from segtrain.prediction_options import PredictOptions
from segtrain.video import CODECS, predict_video
from segtrain.visualize import as_rgb, legend_entries, overlay, strip


def _input_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SegtrainError(f"{path}: --input is neither an image file nor a folder")
    files = list_images(path)
    if not files:
        raise SegtrainError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the --input folder")
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise SegtrainError(f"{file}: same name as {stems[file.stem].name}; predictions are named by stem, rename one")
        stems[file.stem] = file
    return files


def prediction_table(palette: str | None, config: Config | None, classes: int) -> ColorTable:
    """The colours predictions are drawn with: ``--palette``, else the config's table, else VOC's colour map."""
    if palette is not None:
        table = ColorTable.load(palette)
    elif config is not None:
        table = color_table(config.data)
    else:
        return ColorTable.generic(classes)
    if len(table) < classes:
        raise SegtrainError(f"colour table {table.source} has {len(table)} classes but the model predicts {classes}; use a table with one colour per class")
    return table


class _Pictures:
    """Overlays and image | truth | prediction strips of 2-D predictions, for a person to look at."""

    def __init__(self, out: Path, table: ColorTable, classes: int, args: argparse.Namespace):
        self.out, self.table, self.classes, self.overlay, self.alpha = out, table, classes, args.overlay, args.alpha

    def __call__(self, name: str, image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None) -> None:
        shown = as_rgb(image)
        drawn = self.table.colorize(mask)
        if self.overlay:
            write_png(self.out / "overlays" / f"{name}.png", overlay(shown, drawn, self.alpha))
        if truth is not None:
            panels = [("image", shown), ("truth", self.table.colorize(truth)), ("prediction", drawn)]
            entries = legend_entries(self.table, self.classes, void=bool((truth == 255).any()))
            write_png(self.out / "strips" / f"{name}.png", strip(panels, entries))


def _predict_cases(model, config: Config, samples: list, out: Path, options: PredictOptions, pictures: _Pictures | None) -> int:
    """Every case (of a split or ``--input``), predicted and written as its format says (with
    strips for 2-D images); a scene (``open_scene``) is streamed from disk to its prediction; a
    sigmoid head's regions become one label map (``segtrain.heads``)."""
    fmt, head = get_format(config.data.format), head_of(config.model.head, config.data.regions)
    if fmt.open_scene is not None:  # scenes larger than memory: streamed window by window, one at a time
        if head.regions:
            raise SegtrainError(f"model.head: sigmoid: data.format {config.data.format} scenes are predicted with a softmax head only")
        for sample in progress(samples, "predict"):
            scene = fmt.open_scene(sample, config.data)
            with scene.prediction_writer(out / f"{sample.name}{fmt.prediction_extension}") as write:
                predict_scene(model, scene, config.data, write, options)
        return len(samples)
    decoded_ahead = read_ahead(lambda sample: (sample, fmt.read(sample, config.data)), samples)
    predicted = predict_samples(model, decoded_ahead, lambda pair: pair[1].image, config.data, options, head=head,
                                region_of=lambda pair: pair[1].region)
    for (sample, decoded), labels in progress(predicted, "predict", total=len(samples)):
        fmt.write_prediction(out / f"{sample.name}{fmt.prediction_extension}", labels, decoded, pictures.table if pictures else None)
        if pictures is not None:
            pictures(sample.name, decoded.image, labels, decoded.label)
    return len(samples)


def _predict_files(model, images: list[Path], config: Config | None, split: str | None, out: Path, options: PredictOptions,
                   pictures: _Pictures) -> int:
    """2-D image files, each at the config's training size if there is one; with a split, a file
    whose stem is one of its samples also gets a strip with that sample's ground truth."""
    resize = config.data.resize if config is not None else None
    head = head_of(config.model.head, config.data.regions) if config is not None else SOFTMAX
    truth = {s.image.stem: s for s in list_samples(config.data, split)} if split else {}
    channels = int(model.input_shape[-1])
    for path in progress(images, "predict"):
        image = read_image(path, channels)
        mask = predict_at_training_size(model, image, resize, options, head)
        gt = None
        if path.stem in truth:
            gt = get_format(config.data.format).read_labels(truth[path.stem], config.data)
            if gt.shape != mask.shape:
                raise SegtrainError(f"{truth[path.stem].mask}: mask is {gt.shape[1]}x{gt.shape[0]} but image {path} is {mask.shape[1]}x{mask.shape[0]}")
        write_palette_png(out / f"{path.stem}.png", mask, colors=pictures.table)
        pictures(path.stem, image, mask, gt)
    return len(images)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .keras checkpoint, or a folder written by `segtrain publish`")
    parser.add_argument("--input", help="an image file or a folder of images; with a nifti / series / geotiff --config: a case folder or file, "
                                        "a signal file, a GeoTIFF, or a folder of them (default with --split: the split)")
    parser.add_argument("--video", help=f"a video file: write the overlay video to --output ({', '.join(CODECS)}), frames/s printed")
    parser.add_argument("--output", required=True, help="folder for the palette PNGs (<stem>.png); <case>.nii.gz / <name>.npy / <name>.tif for nifti / series / geotiff configs; the video file with --video")
    parser.add_argument("--config", help="experiment YAML: images are predicted at its data.resize, drawn in its class colours; "
                                          "ground truth with --split (default for a published folder: its config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--split", help="with --config: the split to predict; 2-D images also get image | truth | prediction strips")
    parser.add_argument("--palette", help="colour table: voc, camvid or a YAML/JSON file (default: the config's, else VOC's colour map)")
    parser.add_argument("--overlay", action="store_true", help="also write image + colour overlays to OUTPUT/overlays/ (PNG)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    prediction_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    args.config = args.config or published_config(args.checkpoint)  # a published folder carries its config
    if args.split and not args.config:
        raise SegtrainError("--split needs --config (the dataset whose ground truth to show)")
    if args.video and (args.input or args.split):
        raise SegtrainError("--video predicts one video; leave out --input and --split")
    if args.video and Path(args.output).suffix.lower() not in CODECS:
        raise SegtrainError(f"--output {args.output}: with --video, the output is a video file ending in {', '.join(CODECS)}")
    if not args.input and not args.split and not args.video:
        raise SegtrainError("give --input FILE_OR_DIR, --video FILE, or --config with --split to predict a dataset split")
    config = load_config(args.config, args.overrides) if args.config else None
    options = PredictOptions.from_args(args)
    fmt = get_format(config.data.format) if config is not None else None
    images_2d = fmt is None or fmt.input_cases is None  # image files; the other formats say how a path holds cases
    if not images_2d and args.input and args.split:
        raise SegtrainError(f"data.format {config.data.format}: give --input (cases without ground truth) or --split, not both")
    if not images_2d and args.video:
        raise SegtrainError(f"data.format {config.data.format}: --video reads 2-D image frames; this config's format is not 2-D images")
    model = float32_copy(load_checkpoint(args.checkpoint))  # as `segtrain evaluate`: the same masks whatever precision trained it
    if config is not None:
        check_outputs(model, config, args.checkpoint)
    classes = config.data.num_classes if config is not None else num_outputs(model)
    if args.video:
        table = prediction_table(args.palette, config, classes)
        resize = config.data.resize if config is not None else None
        frames, fps = predict_video(model, args.video, args.output, table, resize, args.alpha, options)
        print(f"wrote {frames} frame(s) to {args.output} ({fps:.2f} frames/s)")
        return 0
    out = make_output_dir(args.output, "--output folder")
    pictures = _Pictures(out, prediction_table(args.palette, config, classes), classes, args) if images_2d else None
    if args.input and images_2d:
        count = _predict_files(model, _input_images(Path(args.input)), config, args.split, out, options, pictures)
    else:
        cases = fmt.input_cases(Path(args.input), config.data) if args.input else list_samples(config.data, args.split)
        count = _predict_cases(model, config, cases, out, options, pictures)
    print(f"wrote {count} prediction(s) to {out}")
    return 0
