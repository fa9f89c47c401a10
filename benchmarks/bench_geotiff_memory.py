"""Peak memory of `segtrain predict` on a 20k x 20k GeoTIFF scene, streamed window by window, vs reading the scene whole.

A 3-band uint8 scene (tiled, deflate; a cheap periodic pattern so it is quick to write) is
generated once. Each measurement runs in a fresh subprocess (peak RSS, ``resource.getrusage``,
is per process), after Keras and the model are loaded and one window has been predicted, so
the import footprint is recorded separately as ``base``:

- segtrain: ``inference.predict_scene`` over the whole scene (windows of ``--window``, margin
  blend, a 3x3-conv model with 2 classes) into the format's streamed GeoTIFF writer, as
  ``segtrain predict --input scene.tif`` does;
- baseline: rasterio reading the scene whole (``dataset.read()``, uint8), the least any
  whole-array prediction holds (its float32 input alone is 4x that, its logits more).

The ratio printed is (segtrain peak - base) / (baseline peak - base); the written prediction
is checked to have the source's CRS and transform. Results: benchmarks/results/geotiff_memory.*

    python benchmarks/bench_geotiff_memory.py [--size 20000] [--window 512] [--repeats 1] [--folder DIR]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results_file import write_results  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np
import keras, rasterio
from segtrain.config import from_dict
from segtrain.data.formats.geotiff import GeoScene, open_scene
from segtrain.inference import _forward, predict_scene
from segtrain.prediction_options import PredictOptions

mode, scene_path, out_path, window = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3, padding="same")])
_forward(model, np.zeros((1, window, window, 3), np.float32))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if mode == "segtrain":
    config = from_dict({"data": {"format": "geotiff", "root": ".", "num_classes": 2, "bands": [1, 2, 3]}})
    scene = open_scene(GeoScene("scene", scene_path), config.data)
    with scene.prediction_writer(out_path) as write:
        predict_scene(model, scene, config.data, write, PredictOptions(window=window, stride=window, batch_size=1))
else:
    with rasterio.open(scene_path) as ds:
        whole = ds.read()
    del whole
seconds = time.perf_counter() - t
print(json.dumps({"base_mib": base, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def write_scene(path: Path, size: int) -> float:
    """A tiled, deflate-compressed 3-band uint8 scene of ``size`` x ``size``, written 512 rows at a time."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    t = time.perf_counter()
    cols = np.arange(size)
    rows = np.stack([(cols * k) % 256 for k in (1, 3, 7)]).astype(np.uint8)[:, None, :]
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5200000.0, 10.0, 10.0), tiled=True, compress="deflate") as ds:
        for row in range(0, size, 512):
            n = min(512, size - row)
            ds.write(np.broadcast_to(rows, (3, n, size)), window=rasterio.windows.Window(0, row, size, n))
    return time.perf_counter() - t


def measure(mode: str, scene: Path, out: Path, window: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # this checkout's segtrain
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(scene), str(out), str(window)], check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--folder", help="where the scene is written (default: a temporary folder)")
    args = parser.parse_args()
    import rasterio

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        scene, out = Path(tmp) / "scene.tif", Path(tmp) / "pred.tif"
        write_s = write_scene(scene, args.size)
        runs = {"segtrain": [], "baseline": []}
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(measure(mode, scene, out, args.window))
        with rasterio.open(scene) as src, rasterio.open(out) as pred:
            same_grid = (src.crs == pred.crs and src.transform == pred.transform and (src.height, src.width) == (pred.height, pred.width))
            tiled = pred.block_shapes[0] == (256, 256) and pred.dtypes[0] == "uint8"
        scene_mib, pred_mib = scene.stat().st_size / 2**20, out.stat().st_size / 2**20
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()}
    above = {mode: m["peak_mib"] - m["base_mib"] for mode, m in med.items()}
    ratio = above["segtrain"] / above["baseline"]
    in_memory = {"uint8": args.size**2 * 3 / 2**20, "float32": args.size**2 * 3 * 4 / 2**20}
    print(f"scene {args.size}x{args.size}x3 uint8 ({in_memory['uint8']:.0f} MiB in memory, {in_memory['float32']:.0f} MiB as float32; "
          f"{scene_mib:.0f} MiB on disk, written in {write_s:.0f} s)")
    for mode in runs:
        print(f"{mode}: peak RSS {med[mode]['peak_mib']:.0f} MiB, {above[mode]:.0f} MiB above the {med[mode]['base_mib']:.0f} MiB "
              f"of Keras and the model, {med[mode]['seconds']:.1f} s")
    print(f"ratio (segtrain above base) / (whole uint8 read above base): {ratio:.3f}; prediction on the source grid: {same_grid}, tiled uint8: {tiled}")
    figures = {"size": args.size, "window": args.window, "repeats": args.repeats, "scene_write_s": write_s, "scene_file_mib": scene_mib,
               "prediction_file_mib": pred_mib, "scene_in_memory_mib": in_memory, "medians": med, "above_base_mib": above,
               "ratio_segtrain_over_whole_read": ratio, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__, "same_grid": same_grid, "tiled_uint8": tiled, "runs": runs}
    table = ["| | peak RSS (MiB) | above Keras + model (MiB) | seconds |", "|---|---:|---:|---:|",
             *(f"| {mode} | {med[mode]['peak_mib']:.0f} | {above[mode]:.0f} | {med[mode]['seconds']:.1f} |" for mode in runs)]
    notes = [f"Scene {args.size} x {args.size} x 3 bands uint8: {in_memory['uint8']:.0f} MiB in memory, {in_memory['float32']:.0f} MiB as the "
             f"float32 array a whole-array prediction takes as input. segtrain: predict_scene, windows {args.window} (stride = window, "
             "margin blend), streamed into a tiled deflate uint8 GeoTIFF; baseline: rasterio reading the scene whole (uint8).",
             f"Ratio (segtrain above base) / (baseline above base): {ratio:.3f}. Prediction on the source CRS/transform: {same_grid}.",
             f"rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}; both figures include GDAL's block cache (default 5 % of RAM)."]
    write_results("geotiff_memory", figures, table, notes)


if __name__ == "__main__":
    main()
