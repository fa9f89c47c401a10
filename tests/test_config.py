"""Config loading: _base_ inheritance, dotted overrides, and errors that name the key and the file."""

from pathlib import Path

import pytest
import yaml

from segtrain.config import load_config, save_config, to_dict
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


@pytest.mark.parametrize("name", ["sample", "camvid", "voc"])
def test_shipped_base_data_configs_validate(name):
    config = load_config(REPO / "configs" / "_base_" / f"{name}.yaml")
    assert Path(config.data.root).is_absolute()
    assert config.data.num_classes == {"sample": 4, "camvid": 11, "voc": 21}[name]
