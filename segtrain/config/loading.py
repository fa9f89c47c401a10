"""YAML files -> a typed, checked ``Config``.

A config file is plain UTF-8 YAML read with a safe loader (so ``!!python/...`` tags are
refused) that also refuses a key given twice in one mapping (YAML's default is "last wins").
``_base_: path`` or ``_base_: [a, b]`` pulls in other files first (paths relative to the
including file; later files and the including file override earlier ones, dicts merge key
by key). ``--set a.b=value`` overrides are parsed as YAML scalars/lists and applied last.
A config that sets no ``output_dir`` (itself or through its bases) trains into
``runs/<config folder>/<config file stem>`` under the current directory, as mmsegmentation's work_dirs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from segtrain.config.checks import check_values, format_of
from segtrain.config.schema import Config
from segtrain.config.typed import NOT_KEYS, build
from segtrain.errors import SegtrainError




class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        self.detail = f"key {key!r} given twice (first on line {first_line}); keep one"
        super().__init__(f"line {line}: {self.detail}")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise _DuplicateKey(key, line, first[key])
                    first[key] = line
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text_or_stream) -> Any:
    return yaml.load(text_or_stream, Loader=_StrictLoader)


def _read_yaml(path: Path, included_by: Path | None = None, as_written: str = "") -> dict:
    if not path.is_file():
        if included_by is not None:
            raise SegtrainError(f"{included_by}: _base_ {as_written!r} not found (looked for {path}); fix the path, it is relative to this file")
        raise SegtrainError(f"{path}: config file not found; check the --config path")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw_bytes[: err.start].count(b"\n") + 1
        raise SegtrainError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw_bytes[err.start]:02x}); save the config as UTF-8"
        ) from None
    try:
        data = _yaml_load(text)
    except _DuplicateKey as err:
        raise SegtrainError(f"{path}: {err}") from None
    except yaml.constructor.ConstructorError as err:
        raise SegtrainError(
            f"{path}: line {err.problem_mark.line + 1 if err.problem_mark else '?'}: "
            f"tag not allowed ({err.problem}); configs are plain YAML, remove the tag"
        ) from None
    except yaml.YAMLError as err:
        raise SegtrainError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegtrainError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_paths(raw: dict, folder: Path) -> None:
    """Make data.root, a data.classes table file, output_dir, a model.encoder_weights path and
    splits written as ./ or ../ paths (list files kept next to the config) absolute against the folder of the file that set them."""
    data = raw.get("data")
    for key in ("train_split", "val_split"):
        if isinstance(data, dict) and isinstance(data.get(key), str) and data[key].startswith(("./", "../")):
            data[key] = str((folder / data[key]).resolve())
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = str((folder / os.path.expanduser(data["root"])).resolve())
    if isinstance(data, dict) and isinstance(data.get("classes"), str) and data["classes"].lower().endswith((".yaml", ".yml", ".json")):
        data["classes"] = str((folder / os.path.expanduser(data["classes"])).resolve())  # a colour-table file
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str((folder / os.path.expanduser(raw["output_dir"])).resolve())
    model = raw.get("model")  # model.encoder_weights: a path unless none / imagenet
    if isinstance(model, dict) and model.get("encoder_weights") not in (None, "none", "imagenet"):
        model["encoder_weights"] = str((folder / os.path.expanduser(str(model["encoder_weights"]))).resolve())
    if isinstance(model, dict) and _is_folder(model.get("preset")):  # a local keras-hub preset
        model["preset"] = str((folder / os.path.expanduser(model["preset"])).resolve())
    hub_encoder = model.get("encoder") if isinstance(model, dict) else None
    if isinstance(hub_encoder, str) and hub_encoder.startswith("keras_hub:") and _is_folder(hub_encoder[10:]):
        model["encoder"] = "keras_hub:" + str((folder / os.path.expanduser(hub_encoder[10:])).resolve())


def _is_folder(preset) -> bool:
    """A keras-hub preset written as a path (names have no '/', handles have '://')."""
    return isinstance(preset, str) and "://" not in preset and (preset.startswith(("~", ".")) or "/" in preset)


def load_raw(path: str | os.PathLike, _seen: tuple = (), _as_written: str = "") -> dict:
    """Read one YAML file with its ``_base_`` chain merged in; returns a plain dict."""
    path = Path(path).resolve()
    if path in _seen:
        raise SegtrainError(f"{path}: _base_ includes itself (cycle: {' -> '.join(map(str, _seen))})")
    raw = _read_yaml(path, _seen[-1] if _seen else None, _as_written)
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SegtrainError(f"{path}: key '_base_' must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, load_raw(path.parent / os.path.expanduser(base), _seen + (path,), base))
    _resolve_paths(raw, path.parent)
    return _merge(merged, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise SegtrainError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=3")
    key, value = text.split("=", 1)
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except _DuplicateKey as err:
        raise SegtrainError(f"--set {text!r}: {err.detail}") from None
    except yaml.YAMLError:
        raise SegtrainError(f"--set {text!r}: value is not valid YAML") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = dict(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        if keys[-1] in ("root", "output_dir") and isinstance(value, str):
            value = str(Path(os.path.expanduser(value)).resolve())  # relative to cwd on the CLI
        node[keys[-1]] = value
    return raw


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Validate a plain dict (already merged) into a ``Config``."""
    config = build(Config, raw, "", source)
    config.source = source
    fmt = format_of(config)
    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if fmt.normalizes_itself:  # inputs arrive scaled by the data layer: the ImageNet default does not apply
        for key in ("mean", "std"):
            if key not in model_raw:
                setattr(config.model, key, None)
    config.output_dir = str(Path(os.path.expanduser(config.output_dir)).resolve())
    check_values(config)
    return config


def default_output_dir(path: str | os.PathLike) -> Path:
    """``runs/<config folder>/<config file stem>`` under the current directory (``runs/<stem>`` for a
    config directly in ``configs/``): where a config without ``output_dir`` trains. The folder
    keeps ``configs/camvid/unet.yaml`` and ``configs/voc/unet.yaml`` out of each other's runs."""
    path = Path(path).resolve()
    folder = path.parent.name
    return Path.cwd() / "runs" / ("" if folder in ("configs", "") else folder) / path.stem


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load ``path`` with its ``_base_`` chain, apply ``--set`` overrides, validate."""
    raw = load_raw(path)
    raw.setdefault("output_dir", str(default_output_dir(path)))
    merged = apply_overrides(raw, overrides or [])
    try:
        return from_dict(merged, source=str(path))
    except SegtrainError:
        try:
            from_dict(raw, source=str(path))
        except SegtrainError:
            raise  # the file itself is wrong: blame the file
        # The file is fine on its own, so an override broke it: say which.
        from_dict(merged, source=f"{path} with --set {' '.join(overrides or [])}")
        raise


def to_dict(config: Config) -> dict:
    out = dataclasses.asdict(config)
    for key in NOT_KEYS:
        out.pop(key, None)
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``: dotted keys, as ``--set`` writes them
    (an empty section stays one key). Tracking parameters and ``runtime.auto_resume``'s comparison use it."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the fully resolved config (what actually ran) as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)
