"""`segtrain evaluate`: the split-wide report of a checkpoint, or of a folder of predicted PNGs.

Every image adds to one confusion matrix (``segtrain.metrics``), and the metrics come
from that matrix once at the end: see docs/evaluation.md for why that, and not an average
over images, is the number to compare. Writes ``metrics.json``, ``confusion_matrix.json``
and a row-normalised ``confusion_matrix.png``. With ``--pred-dir`` no model (and no
TensorFlow) is involved: predictions made by any tool are scored the same way.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segtrain.config import Config, load_config
from segtrain.data.decode import class_names, read_mask, read_pair
from segtrain.data.sources import list_samples, split_name
from segtrain.errors import SegtrainError
from segtrain.inference import add_tta_arguments, predict_at_training_size, tta_options
from segtrain.io_utils import atomic_write, open_image, progress, write_json
from segtrain.metrics import ConfusionMatrix, format_table


def read_prediction(path: Path) -> np.ndarray:
    """A predicted PNG -> uint8 class indices: palette indices ('P') or grey values ('L')."""
    with open_image(path) as image:
        mode = image.mode
        array = np.asarray(image)
    if mode not in ("P", "L"):
        raise SegtrainError(
            f"{path}: prediction PNG is mode {mode!r}; save predictions as palette (P) or grey (L) PNGs of "
            "class indices (`segtrain convert-labels` turns colour PNGs into indices)"
        )
    return array.astype(np.uint8)


def _prediction_files(pred_dir: Path, names: Sequence[str]) -> list[Path]:
    """The prediction for each sample name, matched by file stem; every missing one is listed."""
    if not pred_dir.is_dir():
        raise SegtrainError(f"{pred_dir}: --pred-dir folder not found")
    found = {p.stem: p for p in pred_dir.iterdir() if p.suffix.lower() == ".png"}
    missing = [name for name in names if name not in found]
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:6])}{', ...' if len(missing) > 6 else ''})" if len(missing) > 1 else ""
        raise SegtrainError(f"{pred_dir / (missing[0] + '.png')}: no prediction for sample {missing[0]}{more}")
    return [found[name] for name in names]


def evaluate(
    config: Config,
    split: str = "val",
    *,
    checkpoint: str | Path | None = None,
    pred_dir: str | Path | None = None,
    model=None,
    output_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window=None,
    stride=None,
    batch_size: int = 4,
    blend: str | None = None,
    precise_bn: int = 0,
    verbose: bool = True,
) -> dict:
    """Score a checkpoint (or an in-memory ``model``, or ``pred_dir`` PNGs) on ``split``.

    A checkpoint is evaluated in float32 whatever precision it was trained in; with
    ``precise_bn`` > 0 its BatchNorm statistics are first recomputed over that many
    training batches (``segtrain.precise_bn``).

    Returns the ``compute_metrics`` dict plus ``split``, ``num_images`` and ``confusion_matrix``.
    Files are written to ``output_dir`` when given (``metrics.json`` goes to ``json_path``
    if that is given); nothing is written when both are None.
    """
    if sum(x is not None for x in (checkpoint, pred_dir, model)) != 1:
        raise SegtrainError("give exactly one of --checkpoint or --pred-dir")
    data_cfg = config.data
    samples = list_samples(data_cfg, split)
    names = class_names(data_cfg)
    matrix = ConfusionMatrix(data_cfg.num_classes)
    label = f"evaluate {split_name(data_cfg, split)}"
    if pred_dir is not None:
        predictions = _prediction_files(Path(pred_dir), [s.name for s in samples])
        for sample, pred_path in progress(list(zip(samples, predictions)), label, enabled=verbose):
            gt, pred = read_mask(sample.mask, data_cfg), read_prediction(pred_path)
            if gt.shape != pred.shape:
                raise SegtrainError(
                    f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth {sample.mask} is "
                    f"{gt.shape[1]}x{gt.shape[0]} (width x height); predict at the image's size"
                )
            try:
                matrix.update(gt, pred)
            except SegtrainError as err:
                raise SegtrainError(f"{pred_path}: {err}") from None
    else:
        from segtrain.inference import load_checkpoint, num_outputs
        from segtrain.precise_bn import recompute_for_config
        from segtrain.precision import float32_copy

        model = float32_copy(load_checkpoint(checkpoint)) if model is None else model
        if precise_bn:
            recompute_for_config(model, config, precise_bn)
        if num_outputs(model) != data_cfg.num_classes:
            raise SegtrainError(
                f"{checkpoint or 'model'}: predicts {num_outputs(model)} classes but data.num_classes is "
                f"{data_cfg.num_classes} in {config.source}"
            )
        options = {"flip": flip, "scales": scales, "window": window, "stride": stride, "batch_size": batch_size, "blend": blend}
        for sample in progress(samples, label, enabled=verbose):
            image, gt = read_pair(sample.image, sample.mask, data_cfg)
            matrix.update(gt, predict_at_training_size(model, image, data_cfg.resize, **options))
    metrics = matrix.metrics(names)
    metrics.update(split=split_name(data_cfg, split), num_images=len(samples), confusion_matrix=matrix.result().tolist())
    if verbose:
        print(format_table(metrics, names))
    source = str(checkpoint) if checkpoint is not None else (str(pred_dir) if pred_dir is not None else "model")
    options = {"flip": flip, "scales": list(scales), "window": window, "stride": stride, "resize": data_cfg.resize,
               "precise_bn": precise_bn}
    if output_dir is not None or json_path is not None:
        written = write_report(metrics, source, options, output_dir, json_path)
        if verbose:
            print("wrote " + ", ".join(map(str, written)))
    return metrics


def _json_safe(value):
    """NaN -> null (JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_report(metrics: dict, source: str, options: dict, output_dir, json_path) -> list[Path]:
    """metrics.json (to ``json_path`` if given), plus confusion_matrix.json/.png in ``output_dir``."""
    written = []
    summary = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
    summary.update(source=source, options=options)
    metrics_path = Path(json_path) if json_path is not None else Path(output_dir) / "metrics.json"
    write_json(metrics_path, _json_safe(summary), indent=2, fsync=False)
    written.append(metrics_path)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        cm_json = {"rows": "ground truth", "columns": "prediction", "class_names": metrics["class_names"],
                   "matrix": metrics["confusion_matrix"]}
        write_json(out / "confusion_matrix.json", cm_json, indent=None, fsync=False)
        plot_confusion(np.asarray(metrics["confusion_matrix"]), metrics["class_names"], out / "confusion_matrix.png")
        written += [out / "confusion_matrix.json", out / "confusion_matrix.png"]
    return written


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrix (each ground-truth class sums to 1) with class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.45 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (rows normalised)")
    if len(names) <= 25:
        for i, j in np.ndindex(norm.shape):
            if rows[i, 0]:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), fsync=False)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (dataset, classes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .keras checkpoint to evaluate")
    source.add_argument("--pred-dir", help="a folder of predicted PNGs (palette or grey, named <sample>.png)")
    parser.add_argument("--split", default="val", help="train, val or a split name (default: val)")
    parser.add_argument("--json", help="where to write metrics.json (default: OUTPUT_DIR/metrics.json)")
    parser.add_argument("--output-dir", help="folder for the report (default: <output_dir>/eval/<checkpoint or pred-dir name>_<split>)")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="recompute BatchNorm statistics over N training batches first (for checkpoints trained without it)")
    add_tta_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    options = tta_options(args)
    if args.pred_dir and (options["flip"] or options["scales"] != (1.0,) or options["window"] or options["stride"]):
        raise SegtrainError("--tta, --scales, --window and --stride apply to --checkpoint; --pred-dir scores finished predictions")
    if args.precise_bn < 0:
        raise SegtrainError(f"--precise-bn {args.precise_bn}: give a number of training batches (0 = off)")
    if args.precise_bn and args.pred_dir:
        raise SegtrainError("--precise-bn applies to --checkpoint; --pred-dir scores finished predictions")
    source = Path(args.checkpoint or args.pred_dir)
    output_dir = args.output_dir or Path(config.output_dir) / "eval" / f"{source.stem}_{split_name(config.data, args.split)}"
    evaluate(
        config,
        args.split,
        checkpoint=args.checkpoint,
        pred_dir=args.pred_dir,
        output_dir=output_dir,
        json_path=args.json,
        precise_bn=args.precise_bn,
        **options,
    )
    return 0
