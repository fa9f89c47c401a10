"""How far ``data.elastic`` moves pixels: the displacement of segtrain's elastic warp.

``data.elastic: p`` adds albumentations' ``ElasticTransform(alpha=100, sigma=10)`` to the
training pipeline (segtrain/data/transforms/image.py); docs/data.md calls it a mild warp and
quotes how far it moves a pixel. This script builds that very step from a config
(``train_transform`` with ``data.elastic: 1`` and ``data.hflip: false``, nothing else on) and
warps an image whose first two channels hold each pixel's own row and column (bilinear
sampling of a linear ramp returns the source position exactly) and whose third is 1, so an
output pixel that blended in any of the 0 fill from outside the image is told apart and left
out. Printed and written: the mean displacement over all draws and pixels, the range of the
per-draw means, the 99th percentile over all pixels, the median of the per-draw maxima and the
largest displacement seen (the largest sit at the image's corners and edges).

    python benchmarks/elastic_displacement.py [--size 128] [--draws 200]
"""

from __future__ import annotations

import argparse

import numpy as np

from results_file import write_results  # benchmarks/results_file.py
from segtrain.config import from_dict
from segtrain.data.transforms.image import train_transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels")
    parser.add_argument("--draws", type=int, default=200, help="random warps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="elastic_displacement", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    n = args.size
    config = from_dict({"data": {"format": "folders", "root": "/unused", "num_classes": 2, "elastic": 1.0, "hflip": False}})
    transform = train_transform(config.data)
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    scale = float(n)  # coordinates / scale lie in [0, 1), the range albumentations expects of float images
    ramp = np.stack([rows / scale, cols / scale, np.ones_like(rows)], -1)  # 3 channels: what an RGB pipeline sees
    mask = np.zeros((n, n), np.uint8)
    rng = np.random.default_rng(args.seed)
    means, maxima, pooled, with_fill = [], [], [], []
    for _ in range(args.draws):
        transform.set_random_seed(int(rng.integers(2**31)))
        out = transform(image=ramp, mask=mask)["image"]
        inside = out[..., 2] > 1 - 1e-4  # no share of the 0 fill from outside the image
        shift = np.hypot(out[..., 0] * scale - rows, out[..., 1] * scale - cols)[inside]
        means.append(float(shift.mean()))
        maxima.append(float(shift.max()))
        pooled.append(shift)
        with_fill.append(float(1.0 - inside.mean()))
    pooled = np.concatenate(pooled)
    figures = {"size": n, "draws": args.draws, "alpha": 100.0, "sigma": 10.0,
               "mean_px": float(pooled.mean()), "min_draw_mean_px": min(means), "max_draw_mean_px": max(means),
               "p99_px": float(np.percentile(pooled, 99)), "median_draw_max_px": float(np.median(maxima)),
               "max_px": max(maxima), "mean_share_with_outside_fill": float(np.mean(with_fill))}
    print(figures)
    table = ["| image | draws | mean displacement (px) | per-draw means (px) | 99th percentile (px) "
             "| per-draw maximum, median (px) | largest (px) | pixels with some outside fill (share) |",
             "|---|---|---|---|---|---|---|---|",
             f"| {n}x{n} | {args.draws} | {figures['mean_px']:.2f} | {figures['min_draw_mean_px']:.2f}-"
             f"{figures['max_draw_mean_px']:.2f} | {figures['p99_px']:.2f} | {figures['median_draw_max_px']:.2f} "
             f"| {figures['max_px']:.2f} | {figures['mean_share_with_outside_fill']:.4f} |"]
    notes = ["The step is segtrain's own (`train_transform` with `data.elastic: 1.0`, `data.hflip: false`, nothing "
             "else on): albumentations ElasticTransform(alpha=100, sigma=10), bilinear for the image, 0 fill outside. "
             "Displacement = distance between an output pixel and the source position its bilinear sample came from, "
             "over output pixels with no share of the 0 fill from outside the image (a third channel of ones stays 1 "
             "there); coordinates are carried as float32 channels scaled into [0, 1)."]
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
