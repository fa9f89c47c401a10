"""Run an exported segtrain ONNX model with OpenCV DNN only: image in, palette PNG out.

    segtrain export --checkpoint runs/x/checkpoints/best.keras --format onnx --nchw
    python examples/deploy_opencv.py --model runs/x/checkpoints/best-nchw.onnx \\
        --image street.jpg --output street_mask.png --size 480x360 --palette camvid

The exported graph takes raw RGB pixel values (0..255) and normalises them itself, so
the blob is built with scalefactor 1, zero mean and swapRB=True (OpenCV reads BGR).
With an ``--nchw`` export the output blob is ``(1, num_classes, H, W)`` float32 logits;
the class of pixel (y, x) is ``argmax(out[0, :, y, x])``. See docs/export.md.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from PIL import Image

from segtrain.data.palette import CAMVID_COLORS, CAMVID_VOID_COLOR, VOC_COLORS, VOC_VOID_COLOR, pil_palette

PALETTES = {"voc": (VOC_COLORS, VOC_VOID_COLOR), "camvid": (CAMVID_COLORS, CAMVID_VOID_COLOR)}


def segment(net: cv2.dnn.Net, bgr: np.ndarray, size: tuple[int, int], nchw: bool = True) -> np.ndarray:
    """BGR image (any size) -> uint8 class mask of the same size."""
    width, height = size
    # (1, 3, H, W) float32, RGB order, raw 0..255 values: the model normalises inside.
    blob = cv2.dnn.blobFromImage(bgr, scalefactor=1.0, size=(width, height), mean=(0, 0, 0), swapRB=True, crop=False)
    net.setInput(blob if nchw else np.ascontiguousarray(blob.transpose(0, 2, 3, 1)))
    logits = net.forward()  # nchw: (1, classes, H, W); nhwc: (1, H, W, classes)
    mask = np.argmax(logits[0], axis=0 if nchw else -1).astype(np.uint8)  # (H, W) class indices
    # Back to the photo's own size; nearest keeps class indices intact.
    return cv2.resize(mask, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX file from `segtrain export --format onnx`")
    parser.add_argument("--image", required=True)
    parser.add_argument("--output", required=True, help="palette PNG to write")
    parser.add_argument("--size", required=True, help="the export's input size WIDTHxHEIGHT, e.g. 480x360")
    parser.add_argument("--palette", choices=sorted(PALETTES), default="voc")
    parser.add_argument("--nhwc", action="store_true", help="the model was exported without --nchw")
    args = parser.parse_args()

    net = cv2.dnn.readNet(args.model)
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"error: cannot read image {args.image}")
    width, height = (int(v) for v in args.size.lower().split("x"))
    mask = segment(net, bgr, (width, height), nchw=not args.nhwc)

    colors, void = PALETTES[args.palette]
    png = Image.fromarray(mask, mode="P")
    png.putpalette(pil_palette(colors, void))
    png.save(args.output)
    print(f"wrote {args.output}: {mask.shape[1]}x{mask.shape[0]}, classes present {np.unique(mask).tolist()}")


if __name__ == "__main__":
    main()
