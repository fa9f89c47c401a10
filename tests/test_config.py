"""Config loading: _base_ inheritance, dotted overrides, and errors that name the key and the file."""

import re
from pathlib import Path

import pytest
import yaml

from segtrain.config import from_dict, load_config, load_raw, save_config, to_dict
from segtrain.config.loading import _merge
from segtrain.data.formats.decode import class_names
from segtrain.errors import SegtrainError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def bases(tmp_path):
    write(tmp_path / "_base_" / "data.yaml", "data: {format: voc, root: ../ds, num_classes: 21, crop: [64, 64]}\n")
    write(tmp_path / "_base_" / "train.yaml", "train: {epochs: 5, batch_size: 2, optimizer: {name: adam}}\n")
    return tmp_path


def test_base_list_inheritance_later_keys_override(bases):
    cfg_file = write(
        bases / "exp" / "x.yaml",
        "_base_: [../_base_/data.yaml, ../_base_/train.yaml]\ntrain: {epochs: 7}\ndata: {num_classes: 4, classes: [a, b, c, d]}\n",
    )
    config = load_config(cfg_file)
    assert config.train.epochs == 7 and config.train.batch_size == 2  # merged key by key
    assert config.train.optimizer.name == "adam" and config.train.optimizer.learning_rate == 0.01
    assert config.data.num_classes == 4 and config.data.crop == [64, 64]
    assert config.data.root == str((bases / "ds").resolve())  # relative to the file that set it
    assert config.source == str(cfg_file)


def test_single_base_and_chain(bases):
    write(bases / "mid.yaml", "_base_: _base_/data.yaml\ntrain: {seed: 3}\n")
    config = load_config(write(bases / "top.yaml", "_base_: mid.yaml\ntrain: {seed: 4, epochs: 2}\n"))
    assert config.train.seed == 4 and config.train.epochs == 2 and config.data.format == "voc"


def test_dotted_overrides(bases):
    config = load_config(
        bases / "_base_" / "data.yaml",
        ["train.epochs=3", "data.crop=[256,256]", "train.optimizer.learning_rate=0.5", "data.hflip=false"],
    )
    assert config.train.epochs == 3 and config.data.crop == [256, 256]
    assert config.train.optimizer.learning_rate == 0.5 and config.data.hflip is False
    with pytest.raises(SegtrainError, match=r"--set 'train\.epochs': expected key=value"):
        load_config(bases / "_base_" / "data.yaml", ["train.epochs"])


def test_unknown_key_names_dotted_key_and_file(bases):
    path = write(bases / "u.yaml", "_base_: _base_/data.yaml\ntrain: {optimizer: {lr: 0.1}}\n")
    with pytest.raises(SegtrainError, match=r"u\.yaml: unknown key 'train\.optimizer\.lr'"):
        load_config(path)
    with pytest.raises(SegtrainError, match=r"unknown key 'data\.croop'"):
        load_config(bases / "_base_" / "data.yaml", ["data.croop=[1,1]"])


def test_wrong_type_names_key_and_file(bases):
    path = write(bases / "t.yaml", "_base_: _base_/data.yaml\ntrain: {epochs: many}\n")
    with pytest.raises(SegtrainError, match=r"t\.yaml: key 'train\.epochs': expected int, got 'many'"):
        load_config(path)
    with pytest.raises(SegtrainError, match=r"key 'data\.format': must be one of voc, camvid, folders"):
        load_config(bases / "_base_" / "data.yaml", ["data.format=coco"])
    with pytest.raises(SegtrainError, match=r"data\.yaml with --set data\.crop=\[64, big\]: key 'data\.crop\[1\]'"):
        load_config(bases / "_base_" / "data.yaml", ["data.crop=[64, big]"])


def test_missing_required_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "m.yaml", "data: {format: voc, root: .}\n")
    with pytest.raises(SegtrainError, match=r"m\.yaml: missing required key 'data\.num_classes'"):
        load_config(path)
    with pytest.raises(SegtrainError, match=r"missing required key 'data'"):
        load_config(write(tmp_path / "empty.yaml", "train: {epochs: 1}\n"))


def test_python_tag_refused_naming_file(tmp_path):
    path = write(tmp_path / "evil.yaml", "data: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SegtrainError, match=r"evil\.yaml: line 1: tag not allowed"):
        load_config(path)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(SegtrainError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(SegtrainError, match=r"bad\.yaml: not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "data: {format: voc\n"))


def test_saved_config_round_trips(bases, tmp_path):
    config = load_config(bases / "_base_" / "data.yaml", ["train.seed=9", f"output_dir={tmp_path / 'run'}"])
    save_config(config, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == to_dict(config)
    again = load_config(tmp_path / "run" / "config.yaml")
    assert to_dict(again) == to_dict(config)


BASE_CLASSES = {"sample": 4, "camvid": 11, "voc": 21, "cityscapes": 19, "ade20k": 150, "coco_stuff": 171, "geotiff_example": 4}


@pytest.mark.parametrize("name", sorted(BASE_CLASSES))
def test_shipped_base_data_configs_validate(name):
    config = load_config(REPO / "configs" / "_base_" / "datasets" / f"{name}.yaml")
    assert Path(config.data.root).is_absolute()
    assert config.data.num_classes == BASE_CLASSES[name] == len(class_names(config.data))


CONFIGS = REPO / "configs"
LEAVES = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.parts and "palettes" not in p.parts)
FRAGMENTS = sorted(p for p in (CONFIGS / "_base_").rglob("*.yaml") if "datasets" not in p.parts)


@pytest.mark.parametrize("path", LEAVES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads_and_names_its_run_folder_after_its_stem(path, tmp_path, monkeypatch):
    """Loads (no training: the shipped configs are trained by their own tests and benchmarks)."""
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    folder = "" if path.parent == CONFIGS else path.parent.name
    assert config.output_dir == str(tmp_path / "runs" / folder / path.stem)


def test_no_two_shipped_configs_share_a_default_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = [load_config(path).output_dir for path in LEAVES]
    assert len(set(folders)) == len(folders)


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_base_fragment_validates_on_top_of_a_dataset(path):
    raw = _merge(load_raw(CONFIGS / "_base_" / "datasets" / "sample.yaml"), load_raw(path))
    from_dict(raw, source=str(path))


def test_leaf_configs_resolve_to_the_paper_recipes():
    """The values the four CamVid leaves had when each spelled out its 26 lines."""
    for decoder in ("unpool", "transposed", "resize_conv", "bilinear"):
        c = load_config(CONFIGS / "camvid" / f"segnet_basic_{decoder}.yaml")
        assert (c.data.format, c.data.num_classes, c.data.ignore_index, c.data.crop, c.data.scale, c.data.hflip) == (
            "camvid", 11, 11, None, [1.0, 1.0], True)
        assert (c.model.name, c.model.decoder, c.model.norm, c.model.width) == ("segnet_basic", decoder, "batch", 64)
        t = c.train
        assert (t.epochs, t.batch_size, t.seed, t.class_weights, t.val_every) == (150, 12, 0, "median_frequency", 5)
        assert (t.optimizer.name, t.optimizer.learning_rate, t.optimizer.momentum, t.schedule.name) == (
            "sgd", 0.1, 0.9, "constant")
    large = load_config(CONFIGS / "voc" / "dilated_context_large.yaml")
    assert (large.model.name, large.model.context, large.model.decoder) == ("dilated_context", "large", "bilinear")
    assert (large.train.schedule.name, large.train.schedule.warmup_steps, large.train.optimizer.weight_decay) == (
        "poly", 500, 0.0005)


def test_output_dir_in_the_file_wins_over_the_default(bases, tmp_path):
    path = write(bases / "o.yaml", "_base_: _base_/data.yaml\noutput_dir: out/here\n")
    assert load_config(path).output_dir == str(bases / "out" / "here")


@pytest.mark.parametrize("setting, key", [
    ("train.optimizer.learning_rate=-0.1", "train.optimizer.learning_rate"),
    ("train.optimizer.learning_rate=0", "train.optimizer.learning_rate"),
    ("train.optimizer.learning_rate=.nan", "train.optimizer.learning_rate"),
    ("train.steps=-5", "train.steps"),
    ("train.steps=0", "train.steps"),
    ("train.schedule.step_size=0", "train.schedule.step_size"),
    ("train.schedule.warmup_steps=-1", "train.schedule.warmup_steps"),
    ("data.color_jitter=5", "data.color_jitter"),
    ("data.color_jitter=-0.1", "data.color_jitter"),
    ("train.val_every=0", "train.val_every"),
    ("train.seed=-1", "train.seed"),
    ("model.width=0", "model.width"),
    ("data.num_parallel_calls=-7", "data.num_parallel_calls"),
    ("data.decode_processes=-1", "data.decode_processes"),
    ("train.checkpoint_every_steps=-1", "train.checkpoint_every_steps"),
    ("data.rotate=200", "data.rotate"),
    ("data.shift=-0.1", "data.shift"),
    ("data.gamma=1.0", "data.gamma"),
    ("data.noise=2", "data.noise"),
    ("data.blur=0.01", "data.blur"),
    ("data.elastic=1.5", "data.elastic"),
    ("data.grid_distortion=-1", "data.grid_distortion"),
])
def test_out_of_range_values_are_one_line_errors_naming_the_key(bases, setting, key):
    with pytest.raises(SegtrainError, match=rf"key '{re.escape(key)}' must be") as err:
        load_config(bases / "_base_" / "data.yaml", [setting])
    assert "\n" not in str(err.value)


def test_range_errors_in_the_file_blame_the_file(bases):
    path = write(bases / "lr.yaml", "_base_: _base_/data.yaml\ntrain: {optimizer: {learning_rate: -1.0}}\n")
    with pytest.raises(SegtrainError, match=r"lr\.yaml: key 'train\.optimizer\.learning_rate' must be a positive"):
        load_config(path)


def test_duplicate_yaml_keys_are_refused_with_file_and_line(bases):
    path = write(bases / "dup.yaml", "_base_: _base_/data.yaml\ntrain:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(SegtrainError, match=r"dup\.yaml: line 4: key 'epochs' given twice \(first on line 3\)"):
        load_config(path)
    with pytest.raises(SegtrainError, match=r"dup2\.yaml: line 2: key 'train' given twice"):
        load_config(write(bases / "dup2.yaml", "train: {seed: 1}\ntrain: {seed: 2}\n"))
    with pytest.raises(SegtrainError, match=r"--set .*key 1 given twice"):
        load_config(bases / "_base_" / "data.yaml", ["data.label_map={1: 0, 1: 2}"])


def test_yaml_exponent_without_dot_is_a_float_where_a_float_is_expected(bases):
    path = write(bases / "e.yaml", "_base_: _base_/data.yaml\ntrain: {optimizer: {learning_rate: 1e-3, clipnorm: 5E+1}}\n")
    config = load_config(path, ["train.schedule.min_lr=1e-6"])
    assert config.train.optimizer.learning_rate == 1e-3 and isinstance(config.train.optimizer.learning_rate, float)
    assert config.train.optimizer.clipnorm == 50.0 and config.train.schedule.min_lr == 1e-6
    with pytest.raises(SegtrainError, match=r"key 'train\.epochs': expected int, got '1e3'"):
        load_config(path, ["train.epochs=1e3"])  # an int key does not guess


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("# a comment\ndata: {format: voc, root: caf\xe9, num_classes: 2}\n".encode("latin-1"))
    with pytest.raises(SegtrainError, match=r"latin\.yaml: line 2: not UTF-8 text \(byte 0xe9\); save the config as UTF-8$"):
        load_config(path)


def test_utf8_bom_in_a_config_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfdata: {format: voc, root: ., num_classes: 2}\n")
    assert load_config(path).data.num_classes == 2


def test_missing_base_names_the_including_file_and_the_base(bases):
    path = write(bases / "exp" / "leaf.yaml", "_base_: [../_base_/data.yaml, ../_base_/nope.yaml]\n")
    with pytest.raises(SegtrainError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}: _base_ '../_base_/nope.yaml' not found (looked for {bases / '_base_' / 'nope.yaml'})")
    assert "--config" not in text


def test_output_dir_that_is_a_file_is_refused(bases, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SegtrainError, match=r"key 'output_dir': .*afile is a file, not a folder"):
        load_config(bases / "_base_" / "data.yaml", [f"output_dir={tmp_path / 'afile'}"])
