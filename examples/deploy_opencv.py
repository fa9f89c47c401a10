"""Run an exported segtrain ONNX model with OpenCV DNN only: image in, palette PNG out.

    segtrain export --checkpoint runs/quickstart/checkpoints/best.keras --format onnx --nchw
    python examples/deploy_opencv.py --model runs/quickstart/checkpoints/best-nchw.onnx \\
        --image datasets/sample/JPEGImages/sample_0060.jpg --output mask.png --size 64x64 \\
        --palette configs/palettes/sample.yaml

``--size`` is the export's input size, height x width as `segtrain export --size` takes it.
``--palette`` is voc, camvid or a colour-table file (YAML/JSON, docs/convert_labels.md).
The exported graph takes raw RGB pixel values (0..255) and normalises them itself, so
the blob is built with scalefactor 1, zero mean and swapRB=True (OpenCV reads BGR).
With an ``--nchw`` export the output blob is ``(1, num_classes, H, W)`` float32 logits;
the class of pixel (y, x) is ``argmax(out[0, :, y, x])``. See docs/export.md.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import parse_size, write_png


def segment(net: cv2.dnn.Net, bgr: np.ndarray, size: tuple[int, int], nchw: bool = True) -> np.ndarray:
    """BGR image (any size) -> uint8 class mask of the same size; ``size`` is the export's (height, width)."""
    height, width = size
    # (1, 3, H, W) float32, RGB order, raw 0..255 values: the model normalises inside.
    # OpenCV takes sizes as (width, height).
    blob = cv2.dnn.blobFromImage(bgr, scalefactor=1.0, size=(width, height), mean=(0, 0, 0), swapRB=True, crop=False)
    net.setInput(blob if nchw else np.ascontiguousarray(blob.transpose(0, 2, 3, 1)))
    logits = net.forward()  # nchw: (1, classes, H, W); nhwc: (1, H, W, classes)
    mask = np.argmax(logits[0], axis=0 if nchw else -1).astype(np.uint8)  # (H, W) class indices
    # Back to the photo's own size; nearest keeps class indices intact.
    return cv2.resize(mask, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX file from `segtrain export --format onnx`")
    parser.add_argument("--image", required=True)
    parser.add_argument("--output", required=True, help="palette PNG to write")
    parser.add_argument("--size", required=True, help="the export's input size HxW (height x width), e.g. 360x480")
    parser.add_argument("--palette", default="voc", help="colour table: voc (default), camvid or a YAML/JSON file")
    parser.add_argument("--nhwc", action="store_true", help="the model was exported without --nchw")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size, "--size")
        table = ColorTable.load(args.palette)
        net = cv2.dnn.readNet(args.model)
        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SegtrainError(f"{args.image}: cannot read it as an image")
        mask = segment(net, bgr, size, nchw=not args.nhwc)
    except (SegtrainError, cv2.error) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    write_png(args.output, mask, palette=table.pil_palette())
    print(f"wrote {args.output}: {mask.shape[1]}x{mask.shape[0]} (width x height), classes present {np.unique(mask).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
