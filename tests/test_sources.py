"""Dataset sources: VOC / CamVid list files / folders layouts, the sample dataset, missing-file errors."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.config import DataConfig
from segtrain.data.formats import sample_dataset as synthetic
from segtrain.data.formats.decode import read_image, read_mask
from segtrain.data.formats.splits import list_samples, scan_samples
from segtrain.errors import SegtrainError
from conftest import SHARED_DATA, shared_data

CAMVID = SHARED_DATA / "camvid"
VOC = SHARED_DATA / "voc"


def camvid_cfg(root=CAMVID) -> DataConfig:
    return DataConfig(format="camvid", root=str(root), num_classes=11, classes="camvid", ignore_index=11)


def test_camvid_lists_parse_resolve_and_decode():
    shared_data("camvid")
    cfg = camvid_cfg()
    for split, count in (("train", 367), ("val", 101)):
        samples = list_samples(cfg, split)
        assert len(samples) == count
        lines = (CAMVID / f"{split}.txt").read_text().split("\n")
        first_image, first_mask = lines[0].split()
        assert first_image.startswith("/SegNet/CamVid/")
        assert samples[0].image == CAMVID / Path(first_image).parent.name / Path(first_image).name
        assert samples[0].mask == CAMVID / Path(first_mask).parent.name / Path(first_mask).name
        assert all(s.image.parent.name == split and s.mask.parent.name == f"{split}annot" for s in samples)
        for sample in samples[:: max(1, count // 3)][:3]:
            mask = read_mask(sample.mask, cfg)
            raw = np.asarray(Image.open(sample.mask))
            np.testing.assert_array_equal(mask, np.where(raw == 11, 255, raw))  # void 11 -> 255, rest unchanged
            assert set(np.unique(mask).tolist()) <= set(range(11)) | {255}
            assert read_image(sample.image).shape == (360, 480, 3)


def test_real_voc_layout():
    shared_data("voc")
    cfg = DataConfig(format="voc", root=str(VOC), num_classes=21)
    assert [s.name for s in list_samples(cfg, "train")] == ["2011_000003", "2011_000006", "2011_000025", "2011_003066"]
    assert [s.name for s in list_samples(cfg, "val")] == ["2007_000123", "2007_000129", "2007_008260"]
    sample = list_samples(cfg, "val")[0]
    assert sample.image == VOC / "JPEGImages" / "2007_000123.jpg" and sample.mask == VOC / "SegmentationClass" / "2007_000123.png"


def make_voc(root: Path, names=("a", "b"), mask_dir="SegmentationClass") -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / mask_dir).mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(np.ones((4, 4), np.uint8), mode="L").save(root / mask_dir / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names) + "\n")
    return root


def test_voc_configurable_mask_folder(tmp_path):
    root = make_voc(tmp_path / "voc", mask_dir="SegmentationClassRaw")
    cfg = DataConfig(format="voc", root=str(root), num_classes=21, mask_dir="SegmentationClassRaw")
    samples = list_samples(cfg, "train")
    assert [s.mask for s in samples] == [root / "SegmentationClassRaw" / "a.png", root / "SegmentationClassRaw" / "b.png"]
    with pytest.raises(SegtrainError, match=r"SegmentationClass: folder not found.*data.mask_dir"):
        list_samples(DataConfig(format="voc", root=str(root), num_classes=21), "train")


def test_missing_mask_and_empty_split_name_the_file(tmp_path):
    root = make_voc(tmp_path / "voc", names=("a", "b", "c"))
    (root / "SegmentationClass" / "b.png").unlink()
    (root / "SegmentationClass" / "c.png").unlink()
    cfg = DataConfig(format="voc", root=str(root), num_classes=21)
    with pytest.raises(SegtrainError, match=r"SegmentationClass/b\.png: mask for b\.jpg is missing.*\(and 1 more"):
        list_samples(cfg, "train")
    samples, problems = scan_samples(cfg, "train")
    assert [s.name for s in samples] == ["a"] and len(problems) == 2
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n  \n")
    with pytest.raises(SegtrainError, match=r"val\.txt: split file is empty"):
        list_samples(cfg, "val")
    with pytest.raises(SegtrainError, match=r"test\.txt: split file not found"):
        list_samples(cfg, "test")
    with pytest.raises(SegtrainError, match=r"data\.root.*nowhere"):
        list_samples(DataConfig(format="voc", root=str(tmp_path / "nowhere"), num_classes=21), "train")


def test_camvid_relative_and_missing_entries(tmp_path):
    root = tmp_path / "cv"
    for folder in ("train", "trainannot"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "train" / "x.png")
    Image.fromarray(np.zeros((2, 2), np.uint8), mode="L").save(root / "trainannot" / "x.png")
    (root / "train.txt").write_text("train/x.png trainannot/x.png\n/SegNet/CamVid/train/y.png /SegNet/CamVid/trainannot/y.png\n")
    samples, problems = scan_samples(camvid_cfg(root), "train")
    assert samples[0].image == root / "train" / "x.png"
    assert len(problems) == 1 and str(root / "train" / "y.png") in problems[0] and "line 2" in problems[0]
    (root / "train.txt").write_text("only_one_path.png\n")
    with pytest.raises(SegtrainError, match=r"train\.txt: line 1: expected 'image_path mask_path'"):
        list_samples(camvid_cfg(root), "train")


def test_utf8_bom_in_list_files_is_not_part_of_the_first_id(tmp_path):
    root = make_voc(tmp_path / "voc")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    cfg = DataConfig(format="voc", root=str(root), num_classes=21)
    assert [s.image for s in list_samples(cfg, "train")] == [root / "JPEGImages" / "a.jpg", root / "JPEGImages" / "b.jpg"]
    cv = tmp_path / "cv"
    for folder in ("train", "trainannot"):
        (cv / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(cv / "train" / "x.png")
    Image.fromarray(np.zeros((2, 2), np.uint8), mode="L").save(cv / "trainannot" / "x.png")
    (cv / "train.txt").write_bytes(b"\xef\xbb\xbftrain/x.png trainannot/x.png\n")
    assert list_samples(camvid_cfg(cv), "train")[0].image == cv / "train" / "x.png"
    (cv / "train.txt").write_bytes(b"train/x.png trainannot/x.png\ntrain/\xe9.png trainannot/x.png\n")
    with pytest.raises(SegtrainError, match=r"train\.txt: line 2: not UTF-8 text \(byte 0xe9\)"):
        list_samples(camvid_cfg(cv), "train")


def test_folders_matched_by_stem_any_extension(tmp_path):
    root = tmp_path / "f"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    rgb = np.zeros((3, 3, 3), np.uint8)
    Image.fromarray(rgb).save(root / "train" / "images" / "b.JPEG")
    Image.fromarray(rgb).save(root / "train" / "images" / "a.tif")
    Image.fromarray(rgb).save(root / "train" / "images" / "c.png")
    Image.fromarray(rgb[..., 0], mode="L").save(root / "train" / "masks" / "a.png")
    Image.fromarray(rgb[..., 0], mode="L").save(root / "train" / "masks" / "b.bmp")
    (root / "train" / "masks" / "notes.txt").write_text("not an image")
    cfg = DataConfig(format="folders", root=str(root), num_classes=2, classes=["x", "y"], image_dir="images", mask_dir="masks")
    samples, problems = scan_samples(cfg, "train")
    assert [(s.name, s.image.name, s.mask.name) for s in samples] == [("a", "a.tif", "a.png"), ("b", "b.JPEG", "b.bmp")]
    assert problems == [f"{root / 'train' / 'masks' / 'c'}: no mask for c.png"]
    with pytest.raises(SegtrainError, match=r"images: no images"):
        list_samples(cfg, "val")
    # flat folders + a split file of stems
    flat = tmp_path / "flat"
    shutil.copytree(root / "train", flat)
    (flat / "train.txt").write_text("b\na\n")
    cfg_flat = DataConfig(format="folders", root=str(flat), num_classes=2, classes=["x", "y"], image_dir="images", mask_dir="masks")
    assert [s.name for s in list_samples(cfg_flat, "train")] == ["b", "a"]
    with pytest.raises(SegtrainError, match=r"no split 'val' found"):
        list_samples(cfg_flat, "val")


def _voc_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_dataset_is_deterministic_voc_layout(tmp_path):
    a = synthetic.ensure_sample_dataset(tmp_path / "a")
    b = synthetic.ensure_sample_dataset(tmp_path / "b")
    files = _voc_files(a)
    assert files == _voc_files(b)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no temporary folders left behind
    split = lambda name: (a / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()
    assert len(split("train")) == synthetic.NUM_TRAIN and len(split("val")) == synthetic.NUM_VAL
    assert split("trainval") == split("train") + split("val") and not set(split("train")) & set(split("val"))
    cfg = DataConfig(format="voc", root=str(a), num_classes=4, classes=list(synthetic.SAMPLE_CLASSES))
    seen = set()
    for sample in list_samples(cfg, "train")[:10]:
        im = Image.open(sample.mask)
        assert im.mode == "P" and Image.open(sample.image).format == "JPEG"
        mask = read_mask(sample.mask, cfg)
        seen |= set(np.unique(mask).tolist())
        # VOC-style void border: no object pixel touches a background pixel directly
        padded = np.pad(mask, 1, constant_values=255)
        for dy, dx in ((0, 1), (1, 0), (1, 2), (2, 1)):
            neighbour = padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
            assert not np.any((mask >= 1) & (mask <= 3) & (neighbour == 0))
    assert seen == {0, 1, 2, 3, 255}


def test_sample_dataset_write_is_atomic_and_generated_on_use(tmp_path, monkeypatch):
    def broken(folder, seed):
        (folder / "JPEGImages").mkdir(parents=True)
        raise KeyboardInterrupt  # killed half-way

    monkeypatch.setattr(synthetic, "_write", broken)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_sample_dataset(tmp_path / "sample")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    cfg = DataConfig(format="voc", root=str(tmp_path / "sample"), num_classes=4, sample=True, classes=list(synthetic.SAMPLE_CLASSES))
    assert len(list_samples(cfg, "val")) == synthetic.NUM_VAL


def test_isbi_membrane_folders_with_label_map():
    """ISBI labels use 255 as a class (cell interior): label_map {255: 1} turns it into class 1, not void."""
    root = shared_data("isbi_membrane")
    cfg = DataConfig(format="folders", root=str(root), num_classes=2, classes=["membrane", "cell"],
                     image_dir="image", mask_dir="label", label_map={255: 1})
    samples = list_samples(cfg, "train")
    assert len(samples) == 30 and samples[0].image == root / "train" / "image" / "0.png"
    for sample in samples[:2]:
        raw = np.asarray(Image.open(sample.mask))
        np.testing.assert_array_equal(read_mask(sample.mask, cfg), (raw == 255).astype(np.uint8))
        assert read_image(sample.image).shape == raw.shape + (3,)
