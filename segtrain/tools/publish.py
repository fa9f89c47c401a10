"""`segtrain publish RUN_DIR --output DIR`: a finished run as a folder another user loads with one command.

``segtrain predict --checkpoint DIR --input IMAGES --output OUT`` (and ``evaluate`` / ``export``)
take the folder as it is. It holds the best checkpoint (``model.keras``: loads with ``import
segtrain.models``), keras-hub's preset files for the same model (``config.json``,
``model.weights.h5``, ``metadata.json``: ``keras.saving.deserialize_keras_object`` and
``load_weights`` rebuild it without segtrain's checkpoint code, keras-hub not needed), the run's
resolved ``config.yaml`` made portable (no ``output_dir``; a class-table file inlined as names
and colours), ``classes.yaml`` (a colour table, also for ``--palette``), the best checkpoint's
val report (``metrics.json`` and its confusion matrix: re-evaluated now by ``segtrain
evaluate``'s code, or with ``--from-run`` the figures the run recorded at its best epoch; the
card says which) and a model card, ``README.md``. The folder is written under a temporary name
and renamed when complete, so an interrupted publish leaves no half folder.

``--push-to-hub REPO_ID`` uploads it with ``huggingface_hub`` (the token from ``HF_TOKEN``);
``--dry-run`` lists what would be uploaded, and uploads nothing.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import yaml

import segtrain
from segtrain.checkpoints import CheckpointStore, LoopState
from segtrain.config import Config, flatten, load_config, to_dict
from segtrain.data.formats.decode import color_table
from segtrain.data.formats.palette import VOID, ColorTable, is_table_file
from segtrain.data.formats.splits import split_name
from segtrain.errors import SegtrainError
from segtrain.evaluation import evaluate, write_report
from segtrain.inference import PUBLISHED_CONFIG, PUBLISHED_MODEL, load_checkpoint
from segtrain.io_utils import format_size, make_output_dir, write_json
from segtrain.run_log import COMMAND_NOTE, CWD_NOTE, read_notes

CARD = "README.md"
CLASSES = "classes.yaml"
METRICS = "metrics.json"
# keras-hub's preset layout (keras_hub.src.utils.preset_utils): the model's serialized config, its weights, facts.
PRESET_CONFIG, PRESET_WEIGHTS, PRESET_METADATA = "config.json", "model.weights.h5", "metadata.json"
RUN_FILES = ("curves.png", "log.csv")  # copied from the run folder when it has them
MATCH = 5e-4  # re-evaluated and recorded mIoU this close are "the same" in the card


@dataclass
class ValReport:
    """The best checkpoint's val figures (``segtrain evaluate``'s metrics dict) and a sentence saying where they come from."""

    metrics: dict
    source: str
    reevaluated: bool  # scored now by segtrain evaluate's code (else read from the run's state.json)


def _check_run(run_dir: Path) -> CheckpointStore:
    """The run folder's checkpoints, or one error line saying what is missing."""
    if not run_dir.is_dir():
        raise SegtrainError(f"{run_dir}: no such run folder; pass the output_dir of a `segtrain train` run")
    store = CheckpointStore(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SegtrainError(f"{run_dir / 'config.yaml'}: missing; RUN_DIR must be a run folder written by `segtrain train`")
    if not store.best.is_file():
        raise SegtrainError(f"{store.best}: the run has no best checkpoint (no validation has finished yet); "
                            "train until at least one validation, then publish")
    return store


def _check_output(output: Path) -> Path:
    """``--output`` must be new or an empty folder: publishing never mixes with or overwrites other files."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SegtrainError(f"{output}: --output exists and is not an empty folder; choose a new folder or remove it")
    make_output_dir(output.parent, "--output's parent folder")
    return output


def _from_run(config: Config, state: LoopState | None, names: list[str]) -> ValReport:
    """The figures the run recorded at its best validation (``state.json``), without the dataset."""
    row = next((r for r in (state.history if state else []) if r.get("epoch") == state.best_epoch and "val_miou" in r), None)
    if row is None:
        raise SegtrainError("--from-run: the run's state.json records no best validation; publish without --from-run "
                            "to re-evaluate best.keras on the val split")
    per_class = [_nan(row["val_per_class_iou"].get(n)) for n in names]
    dice = [_nan((row.get("val_per_class_dice") or {}).get(n)) for n in names]
    metrics = {"miou": row["val_miou"], "pixel_accuracy": row["val_pixel_accuracy"], "mean_accuracy": row["val_mean_accuracy"],
               "mdice": row.get("val_mdice", math.nan), "per_class_iou": per_class, "per_class_dice": dice,
               "class_names": names, "split": split_name(config.data, "val"), "epoch": row["epoch"]}
    source = (f"read from the run: its validation at epoch {row['epoch']} (the best), on the "
              f"{metrics['split']} split; not re-evaluated at publish time")
    return ValReport(metrics, source, reevaluated=False)


def _reevaluated(config: Config, store: CheckpointStore, state: LoopState | None, verbose: bool) -> ValReport:
    """``best.keras`` scored now by ``segtrain evaluate``'s code on the run's val split, next to what the run recorded."""
    try:
        metrics = evaluate(config, "val", checkpoint=store.best, verbose=verbose)
    except SegtrainError as err:
        raise SegtrainError(f"{err} (publish re-evaluates best.keras on the run's val split; where the dataset is not "
                            "on this machine, add --from-run to use the figures the run recorded)") from None
    source = (f"re-evaluated at publish time by `segtrain evaluate`'s code on the {metrics['split']} split "
              f"({metrics['num_images']} images)")
    if state is not None and state.best_miou is not None:
        same = abs(metrics["miou"] - state.best_miou) <= MATCH
        source += (f"; the run recorded mIoU {state.best_miou:.4f} at epoch {state.best_epoch}, "
                   + ("the same figure" if same else "which differs (was the dataset changed since?)"))
    return ValReport(metrics, source, reevaluated=True)


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def portable_config(config: Config, table: ColorTable) -> dict:
    """The run's resolved config for another machine: no ``output_dir`` (a new run goes under ``runs/``) and
    a class-table file replaced by its names and colours; the rest as the run had it (``data.root`` too)."""
    raw = to_dict(config)
    raw.pop("output_dir", None)
    if isinstance(raw["data"]["classes"], str) and is_table_file(raw["data"]["classes"]):
        raw["data"].update(classes=list(table.names), colors=table.colors.tolist(),
                           void_color=None if table.void_color is None else list(table.void_color))
    return raw


def _table_file(table: ColorTable) -> dict:
    """A colour-table file's content (``ColorTable.from_file`` reads it back)."""
    out: dict = {"classes": {name: [int(v) for v in color] for name, color in zip(table.names, table.colors)}}
    if table.void_color is not None:
        out["void"] = list(table.void_color)
    return out


def _metadata(model, config: Config, table: ColorTable, report: ValReport) -> dict:
    """keras-hub's ``metadata.json`` keys, plus what a user of the folder needs to feed and read the model."""
    resize = config.data.resize or config.data.crop
    return {
        "keras_version": keras.version(),
        "segtrain_version": segtrain.__version__,
        "parameter_count": int(model.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "segtrain": {
            "task": "semantic-segmentation", "checkpoint": PUBLISHED_MODEL, "config": PUBLISHED_CONFIG, "model": config.model.name,
            "num_classes": len(table), "classes": list(table.names), "colors": table.colors.tolist(), "void_value": VOID,
            "input": {"shape": list(model.input_shape[1:]), "pixels": "raw values as decoded (RGB 0..255), float32; "
                      "the normalisation is the model's first layer", "training_size": resize},
            "output": "logits at the input's size, channels-last; argmax is the class index",
            "val": {"split": report.metrics["split"], "miou": report.metrics["miou"], "source": report.source},
        },
    }


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _table_rows(section: dict) -> list[str]:
    return [f"| `{key}` | `{value}` |" for key, value in flatten(section).items() if value not in (None, [], {})]


def model_card(run_dir: Path, config: Config, portable: dict, table: ColorTable, report: ValReport, state: LoopState | None,
               model, files: list[str]) -> str:
    """README.md: data, recipe, exact training command, val figures with their split, per-class IoU, use, licence."""
    m = report.metrics
    commands, folders = read_notes(run_dir, COMMAND_NOTE), read_notes(run_dir, CWD_NOTE)
    if commands:
        ran = "\n".join(f"{c}    # in {f}" for c, f in zip(commands, folders + [""] * len(commands)))
        started = ("The run was started" + (" and resumed" if len(commands) > 1 else "")
                   + " with (from its `run.log`; paths relative to that folder):\n\n```bash\n" + ran + "\n```")
    else:
        started = "The run's own command line was not recorded (its `run.log` predates segtrain noting it)."
    length = (f"{state.epoch} epochs, {state.step} steps; best validation at epoch {state.best_epoch}"
              + (f"; stopped early: {state.stopped_by}" if state.stopped_by else "")) if state else "unknown (no state.json)"
    data = config.data
    size = data.resize or data.crop
    lines = [
        "---",
        "library_name: keras",
        "tags:", "- segtrain", "- keras", "- semantic-segmentation", "- image-segmentation",
        "pipeline_tag: image-segmentation",
        "# license: set the licence of these weights before sharing (e.g. apache-2.0, cc-by-4.0); the training data's licence applies too",
        "---",
        "",
        f"# {run_dir.resolve().name}: {config.model.name}, {len(table)}-class semantic segmentation",
        "",
        f"Trained with segtrain on a `{data.format}` dataset; {model.count_params():,} parameters. "
        "Predict with one command (this folder is the checkpoint):",
        "",
        "```bash",
        "segtrain predict --checkpoint THIS_FOLDER --input IMAGE_OR_FOLDER --output OUT   # palette PNGs in the class colours",
        "segtrain evaluate --checkpoint THIS_FOLDER --set data.root=YOUR_COPY_OF_THE_DATA  # the figures below",
        "```",
        "",
        "The model takes raw pixels (RGB 0..255, float32, channels-last; the normalisation is its first layer) and "
        "returns logits at the input's size" + (f"; it was trained at {format_size(size)} (`data.{'resize' if data.resize else 'crop'}`)" if size else "")
        + ". In Python: `import segtrain.models; keras.models.load_model('model.keras')`.",
        "",
        "## Data",
        "",
        f"- format `{data.format}`, root `{data.root}` (on the training machine), train split `{split_name(data, data.train_split)}`, "
        f"val split `{m['split']}`",
        f"- {len(table)} classes (index: name, RGB colour; `{VOID}` is void, never predicted, ignored in the figures):",
        "",
        "| index | class | colour |",
        "|---|---|---|",
        *(f"| {i} | {name} | {tuple(int(v) for v in color)} |" for i, (name, color) in enumerate(zip(table.names, table.colors))),
        "",
        "## Recipe",
        "",
        f"Trained for {length}. The full resolved config is `{PUBLISHED_CONFIG}`; the model and training sections:",
        "",
        "| key | value |",
        "|---|---|",
        *_table_rows({"model": portable["model"]}),
        *_table_rows({"train": portable["train"]}),
        "",
        "## Training command",
        "",
        started,
        "",
        "The same run from this folder's resolved config (point `data.root` at your copy of the data):",
        "",
        "```bash",
        f"segtrain train --config {PUBLISHED_CONFIG} --set data.root=YOUR_COPY_OF_THE_DATA",
        "```",
        "",
        "## Validation results",
        "",
        f"Best checkpoint on the **{m['split']}** split, {report.source}. One confusion matrix over the whole split "
        "(void excluded); a class absent from both truth and prediction is n/a. Full report: "
        f"`{METRICS}`" + (", `confusion_matrix.png`." if report.reevaluated else "."),
        "",
        "| metric | value |",
        "|---|---|",
        f"| mIoU | {_fmt(m['miou'])} |",
        f"| pixel accuracy | {_fmt(m['pixel_accuracy'])} |",
        f"| mean class accuracy | {_fmt(m['mean_accuracy'])} |",
        f"| mean Dice | {_fmt(m.get('mdice'))} |",
        "",
        "| class | IoU | Dice |",
        "|---|---|---|",
        *(f"| {n} | {_fmt(iou)} | {_fmt(dice)} |" for n, iou, dice in zip(m["class_names"], m["per_class_iou"], m["per_class_dice"])),
        "",
        "## Intended use",
        "",
        f"Semantic segmentation of images like the training data ({data.format} layout, the classes above, "
        + (f"{format_size(size)} inputs" if size else "its image size") + "). The figures above are this model's on "
        f"the {m['split']} split only; evaluate it on your own data before relying on it, and do not use it where a "
        "wrong mask can harm someone without that evaluation.",
        "",
        "## Licence",
        "",
        "**Not set by the publisher.** Fill in the licence of these weights here and in the `license:` line at the top "
        "of this file before sharing; the licence of the training data applies to them too.",
        "",
        "## Files",
        "",
        *(f"- `{name}`" for name in files),
        "",
    ]
    return "\n".join(lines)


def publish(run_dir: str | Path, output: str | Path, *, from_run: bool = False, verbose: bool = True) -> Path:
    """Write the published folder of ``run_dir`` at ``output`` (new or empty); returns it."""
    run_dir, output = Path(run_dir), Path(output)
    store = _check_run(run_dir)
    _check_output(output)
    config = load_config(run_dir / "config.yaml")
    state = store.load_state()
    table = color_table(config.data)
    model = load_checkpoint(store.best)
    report = _from_run(config, state, list(table.names)) if from_run else _reevaluated(config, store, state, verbose)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.publishing-", dir=output.parent))
    try:
        shutil.copyfile(store.best, staging / PUBLISHED_MODEL)
        model.save_weights(staging / PRESET_WEIGHTS)
        write_json(staging / PRESET_CONFIG, keras.saving.serialize_keras_object(model), indent=2, fsync=False)
        write_json(staging / PRESET_METADATA, _metadata(model, config, table, report), indent=2, fsync=False)
        portable = portable_config(config, table)
        (staging / PUBLISHED_CONFIG).write_text(yaml.safe_dump(portable, sort_keys=False), encoding="utf-8")
        (staging / CLASSES).write_text(yaml.safe_dump(_table_file(table), sort_keys=False), encoding="utf-8")
        options = {"source": "re-evaluated" if report.reevaluated else "run"}
        write_report(report.metrics, str(store.best), options, staging if report.reevaluated else None, staging / METRICS)
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, staging / name)
        files = sorted([CARD, *(p.name for p in staging.iterdir())])
        card = model_card(run_dir, config, portable, table, report, state, model, files)
        (staging / CARD).write_text(card, encoding="utf-8")
        if output.is_dir():
            output.rmdir()  # checked empty
        os.replace(staging, output)
    except OSError as err:
        raise SegtrainError(f"{output}: could not write the published folder ({err.strerror or err}); free space or "
                            "choose another --output (the run folder is untouched)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verbose:
        print(f"wrote {output}: {', '.join(sorted(p.name for p in output.iterdir()))}")
    return output


def upload_plan(folder: Path) -> list[tuple[str, int]]:
    """(path in the repository, bytes) of every file the folder would upload."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def hub_token(repo_id: str, token: str | None) -> str:
    """The Hub token, or one error line saying how to set it."""
    if not token:
        raise SegtrainError(f"--push-to-hub {repo_id}: HF_TOKEN is not set; export HF_TOKEN=<a write token from "
                            "https://huggingface.co/settings/tokens>, or check the upload with --dry-run")
    return token


def push_to_hub(folder: str | Path, repo_id: str, *, dry_run: bool = False, token: str | None = None) -> str:
    """Upload ``folder`` to the Hugging Face model repository ``repo_id`` (created if needed); returns its URL.

    ``dry_run`` prints what would be uploaded and touches no network. A failure is one error line; the
    folder stays complete, to upload later.
    """
    from huggingface_hub import HfApi  # optional: the hub extra
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # (same)

    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise SegtrainError(f"--push-to-hub {repo_id}: not a repository id ({err}); use NAME or OWNER/NAME") from None
    url = f"https://huggingface.co/{repo_id}"
    if dry_run:
        plan = upload_plan(folder)
        print(f"dry run: would upload {len(plan)} files ({sum(s for _, s in plan):,} bytes) to {url}, nothing sent:")
        for name, size in plan:
            print(f"  {name}  {size:,} bytes")
        return url
    api = HfApi(token=hub_token(repo_id, token))
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=f"segtrain publish: {folder.name}")
    except Exception as err:  # noqa: BLE001 - network, token and Hub refusals all end the same way
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise SegtrainError(f"--push-to-hub {repo_id}: upload failed ({reason}); the folder {folder} is complete: fix the "
                            f"token or repository and upload it with `hf upload {repo_id} {folder}`") from None
    print(f"uploaded {folder} to {url}")
    return url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `segtrain train` (its output_dir)")
    parser.add_argument("--output", required=True, help="the folder to write (new, or empty)")
    parser.add_argument("--from-run", action="store_true",
                        help="take the val figures the run recorded at its best epoch instead of re-evaluating "
                             "best.keras (for a machine without the dataset)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hugging Face model repository (token: HF_TOKEN)")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list what would be uploaded, upload nothing")


def run(args: argparse.Namespace) -> int:
    if args.dry_run and not args.push_to_hub:
        raise SegtrainError("--dry-run: lists what --push-to-hub REPO_ID would upload; add --push-to-hub")
    if args.push_to_hub and not args.dry_run:
        hub_token(args.push_to_hub, os.environ.get("HF_TOKEN"))  # before the work, not after it
    folder = publish(args.run_dir, args.output, from_run=args.from_run)
    if args.push_to_hub:
        push_to_hub(folder, args.push_to_hub, dry_run=args.dry_run, token=os.environ.get("HF_TOKEN"))
    return 0
