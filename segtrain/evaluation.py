"""`segtrain evaluate`: the split-wide report of a checkpoint, or of a folder of predictions.

Every image adds to one confusion matrix (``segtrain.metrics``), and the metrics come
from that matrix once at the end: see docs/evaluation.md for why that, and not an average
over images, is the number to compare. Writes ``metrics.json``, ``confusion_matrix.json``
and a row-normalised ``confusion_matrix.png``. With ``--pred-dir`` no model (and no
TensorFlow) is involved: predictions made by any tool are scored the same way. Where
predictions come from (``ModelPredictions``, ``FolderPredictions``) and how they are scored
(``score``) are separate; the dataset format says how a sample is read and predicted (NIfTI
volumes and 1-D series whole, by N-D sliding windows). Label groups (BRATS' whole tumour,
tumour core, enhancing) are scored as binary classes from the same matrix.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from segtrain import prediction_options
from segtrain.config import Config, DataConfig, load_config
from segtrain.data.formats import get_format
from segtrain.data.formats.decode import class_names
from segtrain.data.formats.splits import list_samples, split_name
from segtrain.errors import SegtrainError
from segtrain.heads import SOFTMAX, Head, head_of
from segtrain.inference import check_outputs, load_checkpoint, predict_samples, published_config
from segtrain.io_utils import atomic_write, progress, read_ahead, write_json
from segtrain.metrics import ConfusionMatrix, format_groups, format_table, group_metrics
from segtrain.prediction_options import PredictOptions
from segtrain.series_scores import format_summary, series_scores, split_summary


class ModelPredictions:
    """Predictions made now by a model, the way each sample's format is predicted (``PredictOptions``)
    and its outputs are read (``segtrain.heads.Head``: softmax classes or sigmoid regions)."""

    def __init__(self, model, data_cfg: DataConfig, options: PredictOptions, head: Head = SOFTMAX):
        self.model, self.data_cfg, self.options, self.head = model, data_cfg, options, head
        self.format = get_format(data_cfg.format)

    def stream(self, samples: Sequence) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """(ground truth, prediction, what to name in an error) of each sample in order: files decoded
        ahead on a thread while the model runs, images of one size batched (``inference.predict_samples``)."""
        decoded = read_ahead(lambda sample: (sample, self.format.read(sample, self.data_cfg)), samples)
        for (sample, read), mask in predict_samples(self.model, decoded, lambda pair: pair[1].image, self.data_cfg,
                                                     self.options, head=self.head, region_of=lambda pair: pair[1].region):
            yield read.label, mask, sample.name


class FolderPredictions:
    """Finished predictions in a folder, ``<sample name><the format's prediction extension>``, made by any tool."""

    def __init__(self, pred_dir: str | Path, samples: Sequence, data_cfg: DataConfig):
        self.data_cfg, self.format = data_cfg, get_format(data_cfg.format)
        self.files = dict(zip((s.name for s in samples), _prediction_files(Path(pred_dir), [s.name for s in samples], self.format.prediction_extension)))

    def stream(self, samples: Sequence) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """(ground truth, prediction, the prediction's file) of each sample in order."""
        for sample in samples:
            path = self.files[sample.name]
            truth = self.format.read_labels(sample, self.data_cfg)
            yield truth, self.format.read_prediction(path, sample, truth, self.data_cfg), str(path)


def _prediction_files(pred_dir: Path, names: Sequence[str], extension: str) -> list[Path]:
    """The prediction for each sample name (``<name><extension>``); every missing one is listed."""
    if not pred_dir.is_dir():
        raise SegtrainError(f"{pred_dir}: --pred-dir folder not found")
    found = {p.name[: -len(extension)]: p for p in pred_dir.iterdir() if p.name.lower().endswith(extension)}
    missing = [name for name in names if name not in found]
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:6])}{', ...' if len(missing) > 6 else ''})" if len(missing) > 1 else ""
        raise SegtrainError(f"{pred_dir / (missing[0] + extension)}: no prediction for sample {missing[0]}{more}")
    return [found[name] for name in names]


def score(samples: Sequence, predictions, num_classes: int, groups: dict, *, per_case: bool, label: str, verbose: bool,
          margin: float | None = None) -> tuple[ConfusionMatrix, list[dict] | None]:
    """One confusion matrix over every sample of a split, from any source of predictions (its
    ``stream(samples)`` yields (truth, prediction, where) per sample, in order); with ``per_case`` also
    each sample's Dice (per class and label group), and with ``margin`` (1-D series) its segment
    covering and change-point F1 (``segtrain.series_scores``)."""
    matrix, cases = ConfusionMatrix(num_classes), []
    for sample, (truth, pred, where) in zip(samples, progress(predictions.stream(samples), label, enabled=verbose,
                                                               total=len(samples))):
        case = ConfusionMatrix(num_classes)
        try:
            case.update(truth, pred)
        except SegtrainError as err:
            raise SegtrainError(f"{where}: {err}") from None
        matrix.merge(case)
        if per_case:
            cases.append({"name": sample.name, "dice": case.metrics()["per_class_dice"],
                          "groups": {g: v["dice"] for g, v in group_metrics(case.result(), groups).items()},
                          **(series_scores(truth, pred, margin) if margin is not None else {})})
    return matrix, cases if per_case else None


def scored_groups(config: Config) -> dict[str, list[int]]:
    """The label groups a report scores: ``evaluate.groups``, else the regions of a sigmoid head
    (``data.regions`` needs one)."""
    return dict(config.evaluate.groups or config.data.regions)


def parse_groups(text: str) -> dict[str, list[int]]:
    """``--groups "whole=1,2,3,4;core=1,3,4;enhancing=4"`` -> {name: classes}."""
    groups = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, classes = part.partition("=")
        try:
            members = [int(c) for c in classes.split(",")]
        except ValueError:
            members = []
        if not name.strip() or not members:
            raise SegtrainError(f"--groups {text!r}: expected name=class,class;name=class, e.g. whole=1,2,3,4;core=1,3,4;enhancing=4")
        groups[name.strip()] = members
    return groups


def evaluate(
    config: Config,
    split: str = "val",
    *,
    checkpoint: str | Path | None = None,
    pred_dir: str | Path | None = None,
    model=None,
    options: PredictOptions = PredictOptions(),
    precise_bn: int = 0,
    groups: dict[str, Sequence[int]] | None = None,
    output_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    verbose: bool = True,
) -> dict:
    """Score a checkpoint (or an in-memory ``model``, or the files in ``pred_dir``) on ``split``.

    A checkpoint is evaluated in float32 whatever precision it was trained in; with
    ``precise_bn`` > 0 its BatchNorm statistics are first recomputed over that many
    training batches (``segtrain.precise_bn``). ``options`` say how the model is run
    (test-time flips and scales, sliding windows); formats that train on patches are
    predicted whole, by N-D sliding windows of ``data.patch`` unless a window is given, and
    their report also has ``per_case`` Dice (per class and group). 1-D series are also scored as
    segmentations in time: ``series`` holds the mean segment covering and change-point F1 of
    ``segtrain.series_scores`` (margin ``evaluate.change_point_margin``), ``per_case`` each series'.

    ``groups`` (default ``evaluate.groups`` of the config, else the regions of a sigmoid head)
    are label groups scored as binary classes from the same matrix
    (``segtrain.metrics.group_metrics``). A sigmoid head's outputs become one label map by
    ``segtrain.heads``' rule, whose groups are the predicted regions.

    Returns the ``compute_metrics`` dict plus ``split``, ``num_images``, ``confusion_matrix`` and ``groups``.
    Files are written to ``output_dir`` when given (``metrics.json`` goes to ``json_path``
    if that is given); nothing is written when both are None.
    """
    if sum(x is not None for x in (checkpoint, pred_dir, model)) != 1:
        raise SegtrainError("give exactly one of --checkpoint or --pred-dir")
    data_cfg = config.data
    samples = list_samples(data_cfg, split)
    groups = scored_groups(config) if groups is None else dict(groups)
    group_metrics(ConfusionMatrix(data_cfg.num_classes).result(), groups)  # a bad group fails before any prediction
    if pred_dir is not None:
        predictions = FolderPredictions(pred_dir, samples, data_cfg)
    else:
        head = head_of(config.model.head, data_cfg.regions)
        predictions = ModelPredictions(_model_to_score(config, checkpoint, model, precise_bn), data_cfg, options, head)
    fmt = get_format(data_cfg.format)
    margin = config.evaluate.change_point_margin if fmt.spatial_rank == 1 else None  # segmentations in time
    matrix, per_case = score(samples, predictions, data_cfg.num_classes, groups, per_case=fmt.patches or margin is not None,
                             label=f"evaluate {split_name(data_cfg, split)}", verbose=verbose, margin=margin)
    names = class_names(data_cfg)
    metrics = matrix.metrics(names)
    metrics.update(split=split_name(data_cfg, split), num_images=len(samples), confusion_matrix=matrix.result().tolist(),
                   groups=group_metrics(matrix.result(), groups))
    if per_case is not None:
        metrics["per_case"] = per_case
    if margin is not None:
        metrics["series"] = split_summary(per_case, margin)
    if verbose:
        print(format_table(metrics, names))
        if groups:
            print(format_groups(metrics["groups"]))
        if margin is not None:
            print(format_summary(metrics["series"]))
    source = str(checkpoint) if checkpoint is not None else (str(pred_dir) if pred_dir is not None else "model")
    if output_dir is not None or json_path is not None:
        report_options = {**options.as_dict(), "resize": data_cfg.resize, "precise_bn": precise_bn}
        written = write_report(metrics, source, report_options, output_dir, json_path)
        if verbose:
            print("wrote " + ", ".join(map(str, written)))
    return metrics


def _model_to_score(config: Config, checkpoint: str | Path | None, model, precise_bn: int):
    """The model ``evaluate`` runs: the checkpoint loaded as float32 (or ``model``), BatchNorm statistics recomputed if asked."""
    # Keras and its backend load only when a model is scored: `evaluate --pred-dir` needs neither.
    from segtrain.precise_bn import recompute_for_config
    from segtrain.precision import float32_copy  # (Keras too)

    model = float32_copy(load_checkpoint(checkpoint)) if model is None else model
    if checkpoint is not None and model.name != config.model.name:  # the checkpoint carries its architecture
        print(f"note: model.name: {checkpoint} is a {model.name}, not the {config.model.name} of {config.source}; "
              "the checkpoint's architecture is evaluated and the config's model.* keys are ignored", file=sys.stderr)
    if precise_bn:
        recompute_for_config(model, config, precise_bn)
    check_outputs(model, config, checkpoint)
    return model


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
    import matplotlib  # plotting only when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (after choosing the Agg backend)

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


def default_output_dir(config: Config, source: Path, split: str) -> Path:
    """``<output_dir>/eval/<checkpoint or folder name>_<split>``; a split given as a list file
    (``data.val_split: ./splits/x_val.txt``) is named by the file's stem, not its path."""
    return Path(config.output_dir) / "eval" / f"{source.stem}_{Path(split_name(config.data, split)).stem}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML (dataset, classes); default for a folder written by "
                                          "`segtrain publish`: its config.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .keras checkpoint to evaluate, or a folder written by `segtrain publish`")
    source.add_argument("--pred-dir", help="a folder of predictions named <sample>.png (palette or grey), <case>.nii.gz (nifti) or <name>.npy (series)")
    parser.add_argument("--groups", help="label groups scored as binary classes, e.g. whole=1,2,3,4;core=1,3,4;enhancing=4 (default: evaluate.groups)")
    parser.add_argument("--split", default="val", help="train, val or a split name (default: val)")
    parser.add_argument("--json", help="where to write metrics.json (default: OUTPUT_DIR/metrics.json)")
    parser.add_argument("--output-dir", help="folder for the report (default: <output_dir>/eval/<checkpoint or pred-dir name>_<split>)")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="recompute BatchNorm statistics over N training batches first (for checkpoints trained without it)")
    prediction_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config_path = args.config or (published_config(args.checkpoint) if args.checkpoint else None)
    if config_path is None:
        raise SegtrainError("--config: required (the dataset to score on); only a folder written by `segtrain publish` "
                            "brings its own")
    config = load_config(config_path, args.overrides)
    options = PredictOptions.from_args(args)
    if args.pred_dir and not options.plain:
        raise SegtrainError("--tta, --scales, --window, --stride and --blend apply to --checkpoint; --pred-dir scores finished predictions")
    if args.precise_bn < 0:
        raise SegtrainError(f"--precise-bn {args.precise_bn}: give a number of training batches (0 = off)")
    if args.precise_bn and get_format(config.data.format).patches:
        raise SegtrainError(f"--precise-bn: not available for data.format {config.data.format} yet (it draws 2-D training batches)")
    if args.precise_bn and args.pred_dir:
        raise SegtrainError("--precise-bn applies to --checkpoint; --pred-dir scores finished predictions")
    source = Path(args.checkpoint or args.pred_dir)
    output_dir = args.output_dir or default_output_dir(config, source, args.split)
    evaluate(
        config,
        args.split,
        checkpoint=args.checkpoint,
        pred_dir=args.pred_dir,
        output_dir=output_dir,
        json_path=args.json,
        precise_bn=args.precise_bn,
        groups=None if args.groups is None else parse_groups(args.groups),
        options=options,
    )
    return 0
