"""convert-labels speed on CamVid annotations colourised to RGB, project vs baselines in one run.

1. Colour lookup, megapixels/s: segtrain's ``RgbLookup`` (one packed gather) vs the naive
   per-class loop ``out[np.all(rgb == c, axis=-1)] = i``. Target >= 20x the naive loop.
2. End to end, files/s: ``convert_labels('rgb-to-index', ..., jobs=1)`` writing palette
   PNGs vs the floor of only decoding each RGB PNG and re-encoding it (same PNG
   compress_level on both sides). Target >= 0.7x. A stricter floor is printed too: decode
   the RGB PNG and encode the already-converted single-channel output (no lookup, no
   file handling), i.e. everything except the conversion's own work.

Usage: python benchmarks/bench_convert_labels.py [--files 60] [--repeats 3] [--compress-level 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtrain.data.formats import palette as pal  # noqa: E402
from segtrain.tools.convert_labels import convert_labels  # noqa: E402
from results_file import write_results  # noqa: E402

CAMVID_ANNOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "trainannot"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (builds tables, fills caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=CAMVID_ANNOT)
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compress-level", type=int, default=6)
    args = parser.parse_args()

    names = sorted(args.annotations.glob("*.png"))[: args.files]
    colours, void = pal.CAMVID_COLORS, pal.CAMVID_VOID_COLOR
    with tempfile.TemporaryDirectory() as tmp:
        rgb_dir, out_dir, floor_dir = Path(tmp, "rgb"), Path(tmp, "out"), Path(tmp, "floor")
        rgb_dir.mkdir(), floor_dir.mkdir()
        arrays = []
        for path in names:
            index = np.array(Image.open(path))
            rgb = pal.index_to_rgb(np.where(index == 11, 255, index).astype(np.uint8), colours, void)
            Image.fromarray(rgb).save(rgb_dir / path.name, compress_level=args.compress_level)
            arrays.append(rgb)
        megapixels = sum(a.shape[0] * a.shape[1] for a in arrays) / 1e6
        h, w = arrays[0].shape[:2]
        print(f"{len(arrays)} CamVid annotations colourised to RGB ({w}x{h}), PNG compress_level={args.compress_level}")

        # 1. lookup only, arrays in memory
        lookup = pal.RgbLookup(colours, void)
        table = np.vstack([colours, [void]])
        targets = list(range(len(colours))) + [pal.VOID]

        def naive():
            for rgb in arrays:
                out = np.full(rgb.shape[:2], pal.VOID, dtype=np.uint8)
                for i, c in zip(targets, table):
                    out[np.all(rgb == c, axis=-1)] = i

        t_lookup = _median_time(lambda: [lookup(a) for a in arrays], args.repeats)
        t_naive = _median_time(naive, max(1, args.repeats // 3))
        print("\nlookup (median, Mpx/s)")
        print(f"  naive per-class loop   {megapixels / t_naive:8.1f}")
        print(f"  palette.RgbLookup      {megapixels / t_lookup:8.1f}   ({t_naive / t_lookup:.1f}x naive; target >= 20x)")

        # 2. end to end, files on disk
        rgb_files = sorted(rgb_dir.glob("*.png"))

        def floor_reencode():
            for path in rgb_files:
                with Image.open(path) as im:
                    im.load()
                    im.save(floor_dir / path.name, compress_level=args.compress_level)

        outputs = {}
        for path in rgb_files:
            mask, _ = lookup(np.asarray(Image.open(path)))
            image = Image.fromarray(mask)
            image.putpalette(pal.pil_palette(colours, void))
            outputs[path.name] = image

        def floor_strict():
            for path in rgb_files:
                with Image.open(path) as im:
                    im.load()
                outputs[path.name].save(floor_dir / path.name, compress_level=args.compress_level)

        def project():
            convert_labels("rgb-to-index", rgb_dir, out_dir, palette="camvid", jobs=1,
                           compress_level=args.compress_level, progress=False)

        n = len(rgb_files)
        t_floor = _median_time(floor_reencode, args.repeats)
        t_strict = _median_time(floor_strict, args.repeats)
        t_project = _median_time(project, args.repeats)
        print("\nend to end, one process (median, files/s)")
        print(f"  floor: decode RGB + re-encode RGB               {n / t_floor:7.1f}")
        print(f"  strict floor: decode RGB + encode index output  {n / t_strict:7.1f}")
        print(f"  convert-labels rgb-to-index (palette PNG)       {n / t_project:7.1f}   "
              f"({t_floor / t_project:.2f}x floor, target >= 0.7x; {t_strict / t_project:.2f}x strict floor)")
        figures = {"files": n, "megapixels": megapixels, "lookup_mp_per_s": megapixels / t_lookup,
                   "naive_mp_per_s": megapixels / t_naive, "lookup_speedup": t_naive / t_lookup,
                   "floor_files_per_s": n / t_floor, "strict_floor_files_per_s": n / t_strict,
                   "convert_files_per_s": n / t_project, "convert_vs_floor": t_floor / t_project,
                   "convert_vs_strict_floor": t_strict / t_project}
    write_results("convert_labels", figures, [
        "| what | segtrain | baseline | ratio |", "|---|---|---|---|",
        f"| colour lookup | {figures['lookup_mp_per_s']:.1f} MP/s | naive per-class loop {figures['naive_mp_per_s']:.1f} MP/s "
        f"| {figures['lookup_speedup']:.1f}x |",
        f"| label conversion end to end | {figures['convert_files_per_s']:.1f} files/s | decode + re-encode floor "
        f"{figures['floor_files_per_s']:.1f} files/s (strict {figures['strict_floor_files_per_s']:.1f}) "
        f"| {figures['convert_vs_floor']:.2f}x ({figures['convert_vs_strict_floor']:.2f}x strict) |"],
        [f"{n} CamVid annotations colourised to RGB ({w}x{h}), PNG compress_level={args.compress_level}, "
         f"median of {args.repeats}."])


if __name__ == "__main__":
    main()
