"""`segtrain evaluate` images/s vs onnxruntime on the exported ONNX of the same checkpoint (issue 31.2).

One process, the running Keras backend (``KERAS_BACKEND``): each round times, in turn,
(a) ``evaluate`` per image (one forward per image: the default on CPU), (b) ``evaluate`` batched
(``--batch`` images of one size share a forward pass: the default on a GPU); both decode the
files ahead on a thread, (c) onnxruntime (CPU) running the ONNX export of the same checkpoint image by image
on the *already decoded* images (decoding excluded: the harsher comparison). (a) and (b)
include decoding the files and the confusion matrix. Splits: CamVid val (101 images, all
360x480; ``--camvid-images`` keeps the first N) and ../shared/data/voc val (images of several sizes). The checkpoint is a
segnet_basic of ``--width`` at its seeded initialisation (speed does not depend on training);
the ONNX is written by a TensorFlow subprocess, one file per image size (batch 1).

    KERAS_BACKEND=tensorflow python benchmarks/bench_inference.py [--width 16] [--rounds 3] [--batch 4] [--camvid-images N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from results_file import write_results  # noqa: E402
from segtrain.config import from_dict  # noqa: E402
from segtrain.data.formats import get_format  # noqa: E402
from segtrain.data.formats.splits import list_samples  # noqa: E402
from segtrain.engines import thread_settings  # noqa: E402
from segtrain.evaluation import evaluate  # noqa: E402
from segtrain.metrics import ConfusionMatrix  # noqa: E402
from segtrain.models import build_model  # noqa: E402
from segtrain.prediction_options import PredictOptions  # noqa: E402
import segtrain.inference as inference  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SPLITS = {
    "camvid": {"format": "camvid", "root": str(DATA / "camvid"), "classes": "camvid", "num_classes": 11, "ignore_index": 11},
    "voc": {"format": "voc", "root": str(DATA / "voc"), "classes": "voc", "num_classes": 21},
}
# One ONNX file per image size (1, H, W, 3): SegNet's pad-to-stride does not export with dynamic sizes.
EXPORT = """
import json, pathlib, sys
from segtrain.export.onnx import write
from segtrain.inference import load_checkpoint
model = load_checkpoint(sys.argv[1])
for h, w in json.loads(sys.argv[3]):
    write(model, (1, h, w, 3), False, pathlib.Path(sys.argv[2]) / f"{h}x{w}.onnx")
"""


def checkpoint_and_sessions(folder: Path, classes: int, width: int, sizes: list) -> tuple[Path, dict]:
    """The checkpoint and an onnxruntime session of its ONNX export for each image size."""
    keras.utils.set_random_seed(0)
    model = build_model("segnet_basic", classes, (None, None, 3), norm="batch", width=width)
    checkpoint, out = folder / f"segnet_{classes}.keras", folder / f"onnx_{classes}"
    model.save(checkpoint)
    out.mkdir()
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", EXPORT, str(checkpoint), str(out), json.dumps(sizes)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return checkpoint, {tuple(s): ort.InferenceSession(str(out / f"{s[0]}x{s[1]}.onnx"), providers=["CPUExecutionProvider"])
                        for s in sizes}


def run_onnxruntime(sessions: dict, decoded: list, classes: int) -> float:
    matrix = ConfusionMatrix(classes)
    for d in decoded:
        session = sessions[d.image.shape[:2]]
        logits = session.run(None, {session.get_inputs()[0].name: d.image[None].astype(np.float32)})[0]
        matrix.update(d.label, np.argmax(logits[0], axis=-1).astype(np.uint8))
    return matrix.metrics()["miou"]


def first_images(root: Path, folder: Path, count: int) -> Path:
    """A CamVid root whose val.txt lists the first ``count`` pairs (the folders are links to the real ones)."""
    short = folder / f"camvid_first_{count}"
    short.mkdir()
    for entry in root.iterdir():
        if entry.name != "val.txt":
            (short / entry.name).symlink_to(entry)
    (short / "val.txt").write_text("".join((root / "val.txt").read_text().splitlines(keepends=True)[:count]))
    return short


def batched(run):
    """``run()`` with whole images batched ``--window-batch`` at a time even on CPU (the default there is one)."""
    rule = inference.images_per_pass
    inference.images_per_pass = lambda options: options.batch_size
    try:
        return run()
    finally:
        inference.images_per_pass = rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--camvid-images", type=int, default=0, help="first N images of CamVid val (0: all 101)")
    args = parser.parse_args()
    backend = keras.backend.backend()
    figures, table = {"args": vars(args), "backend": backend, "threads": thread_settings()}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in SPLITS.items():
            config = from_dict({"data": data, "model": {"name": "segnet_basic"}, "output_dir": tmp})
            if name == "camvid" and args.camvid_images:  # evaluate and onnxruntime see the same first N images
                config = from_dict({"data": {**data, "root": str(first_images(Path(data["root"]), Path(tmp), args.camvid_images))},
                                    "model": {"name": "segnet_basic"}, "output_dir": tmp})
            fmt = get_format(data["format"])
            decoded = [fmt.read(s, config.data) for s in list_samples(config.data, "val")]
            sizes = sorted({d.image.shape[:2] for d in decoded})
            checkpoint, sessions = checkpoint_and_sessions(Path(tmp), data["num_classes"], args.width, [list(s) for s in sizes])
            model = keras.models.load_model(checkpoint)
            modes = {
                "per_image": lambda: evaluate(config, "val", model=model, options=PredictOptions(batch_size=1), verbose=False)["miou"],
                "batched": lambda: batched(lambda: evaluate(config, "val", model=model, options=PredictOptions(batch_size=args.batch),
                                                            verbose=False)["miou"]),
                "onnxruntime": lambda: run_onnxruntime(sessions, decoded, data["num_classes"]),
            }
            for run in modes.values():  # warm-up: compiles (JAX: one per image size), first-call costs
                run()
            seconds, miou = {m: [] for m in modes}, {}
            for _ in range(args.rounds):  # in turn, so a burst of load on the shared machine hits all alike
                for mode, run in modes.items():
                    start = time.perf_counter()
                    miou[mode] = run()
                    seconds[mode].append(time.perf_counter() - start)
            rate = {m: len(decoded) / statistics.median(t) for m, t in seconds.items()}
            figures[name] = {"images": len(decoded), "sizes": [list(s) for s in sizes], "images_per_second": rate,
                             "seconds": seconds, "miou": miou,
                             "batched_over_onnxruntime": rate["batched"] / rate["onnxruntime"],
                             "per_image_over_onnxruntime": rate["per_image"] / rate["onnxruntime"],
                             "miou_batched_minus_per_image": miou["batched"] - miou["per_image"]}
            f = figures[name]
            print(f"{name} ({len(decoded)} images, {len(sizes)} sizes): " + ", ".join(f"{m} {r:.2f} img/s" for m, r in rate.items())
                  + f"; batched / onnxruntime {f['batched_over_onnxruntime']:.3f}x, per image / onnxruntime "
                  f"{f['per_image_over_onnxruntime']:.3f}x; mIoU batched - per image {f['miou_batched_minus_per_image']:.2e}",
                  flush=True)
            table.append(f"| {name} val ({len(decoded)} images, {len(sizes)} sizes) | {rate['per_image']:.2f} | "
                         f"{rate['batched']:.2f} | {rate['onnxruntime']:.2f} | **{f['batched_over_onnxruntime']:.3f}x** | "
                         f"{f['miou_batched_minus_per_image']:.1e} |")
    write_results(f"inference_{backend}", figures,
                  [f"Backend: {backend}; segnet_basic width {args.width}, batch {args.batch}, {args.rounds} rounds (medians)", "",
                   "| split | evaluate per image img/s | evaluate batched img/s | onnxruntime img/s (decoded images) | "
                   "batched / onnxruntime | mIoU batched - per image |", "|---|---|---|---|---|---|", *table],
                  ["evaluate's figures include decoding the PNG/JPEG files and the confusion matrix; onnxruntime's do not "
                   "(it runs on images decoded beforehand)."])


if __name__ == "__main__":
    main()
