"""convert-labels importers (labelme, COCO, CVAT): pixel sets against hand-built expectations,
round trips (rasterise -> polygons / RLE -> rasterise), label errors, real labelme masks, check-dataset."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from segtrain.cli import main as cli_main
from segtrain.data.check import check_dataset
from segtrain.data.formats.palette import VOC_COLORS, ColorTable
from segtrain.errors import SegtrainError
from segtrain.tools.importers.base import ImportOptions, LabelNames, load_class_list
from segtrain.tools.importers.cvat import parse_labelmap
from segtrain.tools.importers.labelme import draw_shapes
from segtrain.tools.importers.run import import_annotations

from conftest import need_module, sample_config, shared_data

ABC = LabelNames(load_class_list("background,a,b,c"))


def _labelme(folder: Path, name: str, shapes: list[dict], size=(32, 40)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"version": "5.5.0", "shapes": shapes, "imagePath": f"{name}.jpg", "imageData": None,
                                "imageHeight": size[0], "imageWidth": size[1]}))
    return path


def _shape(label: str, points, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": [list(map(float, p)) for p in points], "shape_type": shape_type, "group_id": None, "flags": {}}


def _draw(shapes, size=(32, 40), **options) -> np.ndarray:
    mask, unknown = draw_shapes(shapes, size, ABC, ImportOptions(**options))
    assert unknown == {}
    return mask


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


# ----------------------------------------------------------------------------- labelme shapes


def test_rectangle_is_its_exact_pixel_block_whichever_corners_are_given():
    expected = np.zeros((32, 40), np.uint8)
    expected[3:9, 5:12] = 2  # rows 3..8, columns 5..11: both corners inclusive, as labelme's Pillow rectangle
    for corners in ([(5, 3), (11, 8)], [(11, 8), (5, 3)], [(11, 3), (5, 8)]):
        np.testing.assert_array_equal(_draw([_shape("b", corners, "rectangle")]), expected)


def test_triangle_interior_by_half_planes_and_labelmes_rule():
    corners = np.array([(3.0, 2.0), (36.0, 7.0), (12.0, 29.0)])
    mask = _draw([_shape("a", corners)])
    ys, xs = np.mgrid[0:32, 0:40]
    # Signed distance of every pixel centre to each edge (positive inside, counter-clockwise order fixed below).
    (ax, ay), (bx, by) = corners[1] - corners[0], corners[2] - corners[0]
    if ax * by - ay * bx < 0:
        corners = corners[::-1]
    distances = []
    for p, q in zip(corners, np.roll(corners, -1, axis=0)):
        edge = q - p
        distances.append((edge[0] * (ys - p[1]) - edge[1] * (xs - p[0])) / np.hypot(*edge))
    inside_by = np.min(distances, axis=0)
    assert (mask[inside_by > 1] == 1).all()  # well inside: in
    assert (mask[inside_by < -1] == 0).all()  # well outside: out
    assert 30 < (abs(inside_by) <= 1).sum()  # a boundary band exists, decided by labelme's rule:
    reference = Image.new("L", (40, 32), 0)  # labelme's shape_to_mask: Pillow polygon, fill and outline
    ImageDraw.Draw(reference).polygon([tuple(p) for p in corners], fill=1, outline=1)
    np.testing.assert_array_equal(mask, np.asarray(reference))


def test_circle_line_strip_and_point_cover_what_their_geometry_says():
    ys, xs = np.mgrid[0:32, 0:40]
    circle = _draw([_shape("c", [(20, 16), (20, 23)], "circle")])  # centre, a point on the circle: radius 7
    distance = np.hypot(xs - 20, ys - 16)
    assert (circle[distance < 6.5] == 3).all() and (circle[distance > 7.5] == 0).all()

    def to_segment(p, q, ends):  # distance of every pixel centre to segment p-q; ends=False: flat ends (inf beyond them)
        p, q = np.asarray(p, float), np.asarray(q, float)
        t = ((xs - p[0]) * (q - p)[0] + (ys - p[1]) * (q - p)[1]) / np.sum((q - p) ** 2)
        distance = np.hypot(xs - p[0] - np.clip(t, 0, 1) * (q - p)[0], ys - p[1] - np.clip(t, 0, 1) * (q - p)[1])
        return distance if ends else np.where((t > 0) & (t < 1), distance, np.inf)

    corners = [(5, 10), (30, 10), (30, 28)]
    # Pillow's lines have flat ends; joint="curve" rounds the corner (distance to the joint point).
    near = np.minimum(to_segment(*corners[:2], ends=True), to_segment(*corners[1:], ends=True))
    along = np.minimum.reduce([to_segment(*corners[:2], ends=False), to_segment(*corners[1:], ends=False),
                               np.hypot(xs - 30, ys - 10)])
    for width in (4, 9):
        strip = _draw([_shape("a", corners, "linestrip")], line_width=width)
        assert (strip[along < width / 2 - 1] == 1).all() and (strip[near > width / 2 + 1] == 0).all()
        assert (strip == 1).sum() > width * 40  # the band really is `width` wide

    point = _draw([_shape("b", [(20, 16)], "point")], point_size=3)
    assert (point[distance < 2.5] == 2).all() and (point[distance > 3.5] == 0).all()


def test_later_shapes_are_drawn_over_earlier_ones_and_fill_and_ignore():
    big, small = _shape("a", [(2, 2), (30, 25)], "rectangle"), _shape("b", [(10, 10), (15, 15)], "rectangle")
    assert (_draw([big, small])[10:16, 10:16] == 2).all()
    assert (_draw([small, big])[10:16, 10:16] == 1).all()  # labelme's order: the later shape wins
    ignored = _draw([big, _shape("__ignore__", [(10, 10), (15, 15)], "rectangle")], fill=3)
    assert (ignored[10:16, 10:16] == 255).all() and (ignored[0, 0] == 3) and (ignored[2, 2] == 1)


def test_round_trip_labelme_shapes_contours_labelme_shapes_is_identical():
    rng = np.random.default_rng(7)
    shapes = []
    for cell in range(12):  # one convex shape per 20x20 cell: no holes, so polygons can say it all
        x0, y0, label = 20 * (cell % 4), 20 * (cell // 4), "abc"[cell % 3]
        jitter = rng.uniform(1, 5, size=6)
        kind = cell % 3
        if kind == 0:
            shapes.append(_shape(label, [(x0 + jitter[0], y0 + jitter[1]), (x0 + 18 - jitter[2], y0 + 9), (x0 + 8, y0 + 18 - jitter[3])]))
        elif kind == 1:
            shapes.append(_shape(label, [(x0 + 10, y0 + 10), (x0 + 10 + jitter[4], y0 + 10 + jitter[5])], "circle"))
        else:
            shapes.append(_shape(label, [(x0 + jitter[0], y0 + jitter[1]), (x0 + 17, y0 + 16)], "rectangle"))
    first = _draw(shapes, size=(60, 80))
    assert len(np.unique(first)) == 4
    traced = []
    for value, label in ((1, "a"), (2, "b"), (3, "c")):
        contours, _ = cv2.findContours((first == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        traced += [_shape(label, c[:, 0].tolist()) for c in contours]
    assert len(traced) == 12
    np.testing.assert_array_equal(_draw(traced, size=(60, 80)), first)


def test_mask_shape_is_pasted_at_its_corner(tmp_path):
    patch = np.zeros((4, 6), np.uint8)
    patch[1:3, 2:5] = 255
    buffer = tmp_path / "patch.png"
    Image.fromarray(patch).save(buffer)
    shape = _shape("c", [(10.2, 5.4), (15.0, 8.0)], "mask") | {"mask": base64.b64encode(buffer.read_bytes()).decode()}
    expected = np.zeros((32, 40), np.uint8)
    expected[5 + 1:5 + 3, 10 + 2:10 + 5] = 3
    np.testing.assert_array_equal(_draw([shape]), expected)


# ----------------------------------------------------------------------------- labelme command


def test_unknown_label_is_one_error_naming_file_and_label_and_void_on_request(tmp_path, capsys):
    annotations = tmp_path / "ann"
    _labelme(annotations / "sub", "one", [_shape("a", [(1, 1), (5, 5)], "rectangle"), _shape("potted plant", [(8, 8), (12, 12)], "rectangle")])
    _labelme(annotations, "two", [_shape("cat", [(1, 1), (5, 5)], "rectangle")])
    out = tmp_path / "out"
    assert cli_main(["convert-labels", "labelme", str(annotations), str(out), "--classes", "voc"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "'a' in sub/one.json" in err and "'potted plant' in sub/one.json (did you mean 'pottedplant'?)" in err
    assert not (out / "sub" / "one.png").exists() and (out / "two.png").exists()  # clean files are written

    assert cli_main(["convert-labels", "labelme", str(annotations), str(out), "--classes", "voc", "--unknown", "void"]) == 0
    mask = _png(out / "sub" / "one.png")
    assert (mask[1:6, 1:6] == 255).all() and (mask[8:13, 8:13] == 255).all() and mask[20, 20] == 0

    renamed = ["--rename", "potted plant=pottedplant", "--rename", "a=void"]
    assert cli_main(["convert-labels", "labelme", str(annotations), str(out), "--classes", "voc", *renamed]) == 0
    mask = _png(out / "sub" / "one.png")
    assert (mask[8:13, 8:13] == 16).all() and (mask[1:6, 1:6] == 255).all()
    assert (_png(out / "two.png")[1:6, 1:6] == 8).all()  # voc: cat = 8


def test_bad_shape_and_misused_options_are_one_line(tmp_path, capsys):
    annotations = tmp_path / "ann"
    _labelme(annotations, "bad", [_shape("a", [(1, 1), (5, 5)])])  # a polygon of two points
    assert cli_main(["convert-labels", "labelme", str(annotations), str(tmp_path / "o"), "--classes", "background,a"]) == 1
    err = capsys.readouterr().err
    assert "bad.json: shape 0 (label 'a'): a polygon needs at least 3 points, it has 2" in err
    assert cli_main(["convert-labels", "labelme", str(annotations), str(tmp_path / "o"), "--classes", "voc", "--overlap", "order"]) == 1
    assert "--overlap: does not apply to convert-labels labelme" in capsys.readouterr().err
    assert cli_main(["convert-labels", "rgb-to-index", str(annotations), str(tmp_path / "o"), "--classes", "voc"]) == 1
    assert "--classes: does not apply to convert-labels rgb-to-index" in capsys.readouterr().err
    assert cli_main(["convert-labels", "labelme", str(annotations), str(tmp_path / "o")]) == 1
    assert "--classes is missing" in capsys.readouterr().err
    assert cli_main(["convert-labels", "labelme", str(annotations), str(tmp_path / "o"), "--classes", "voc", "--line-width", "0"]) == 1
    assert "--line-width 0" in capsys.readouterr().err
    assert cli_main(["convert-labels", "labelme", str(annotations), str(annotations / "o"), "--classes", "voc"]) == 1
    assert "lies inside INPUT" in capsys.readouterr().err


def test_class_list_forms_and_labelme_names_file(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("__ignore__\n_background_\ncat\n\ntv/monitor\n")
    table = load_class_list(names)
    assert table.names == ("_background_", "cat", "tv/monitor")
    labels = LabelNames(table)
    assert labels.index("tv/monitor") == 2 and labels.index("__ignore__") == 255 and labels.index("dog") is None
    assert load_class_list("a, b").names == ("a", "b") and len(load_class_list("voc")) == 21
    with pytest.raises(SegtrainError, match="listed twice"):
        load_class_list("a,b,a")
    with pytest.raises(SegtrainError, match="not a built-in table"):
        load_class_list("nonsense")


# ----------------------------------------------------------------------------- real labelme masks


def _components_as_shapes(mask: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    """Every connected region of every value as one labelme polygon, enclosing regions first
    (a region inside another's hole has the smaller filled area, so it is drawn later, on top)."""
    regions = []
    for value in np.unique(mask):
        contours, hierarchy = cv2.findContours((mask == value).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
            if parent != -1:
                continue  # a hole: its contents are regions of their own
            filled = np.zeros(mask.shape, np.uint8)
            cv2.drawContours(filled, [contour], -1, 1, -1)
            points = contour[:, 0].tolist()
            kind = {1: "point", 2: "linestrip"}.get(len(points), "polygon")
            regions.append((int(filled.sum()), "__ignore__" if value == 255 else names[value], points, kind))
    regions.sort(key=lambda r: -r[0])
    return [_shape(label, points, kind) for _, label, points, kind in regions]


def test_real_labelme_masks_through_polygons_and_back_and_against_voc(tmp_path):
    extras, voc = shared_data("voc", "extras_labelme"), shared_data("voc")
    classes = extras / "class_names.txt"  # labelme's own class list: '_background_', 'potted plant', 'tv/monitor'
    names = load_class_list(classes).names
    annotations = tmp_path / "ann"
    ids = ["2011_000003", "2011_000006", "2011_000025"]
    originals = {}
    for stem in ids:
        originals[stem] = np.asarray(Image.open(extras / "SegmentationClass" / f"{stem}.png"))
        _labelme(annotations, stem, _components_as_shapes(originals[stem], names), originals[stem].shape)
    root = tmp_path / "voc"
    report = import_annotations("labelme", annotations, root / "SegmentationClass", classes=classes,
                                options=ImportOptions(line_width=1, point_size=0))
    assert report.written == 3
    for stem in ids:
        imported = _png(root / "SegmentationClass" / f"{stem}.png")
        differ = int((imported != originals[stem]).sum())
        # Identical but for 1-pixel diagonal cracks that 8-connected contours step over (12 px in 2011_000006).
        assert differ <= 20, (stem, differ)
        truth = np.asarray(Image.open(voc / "SegmentationClass" / f"{stem}.png"))
        both = (imported != 255) & (truth != 255)
        assert (imported == truth)[both].mean() > 0.975  # labelme's polygons vs the official VOC mask: 97.9-99.9 %

    # The output is a dataset check-dataset accepts, with the real images.
    (root / "JPEGImages").mkdir()
    for stem in ids:
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes((voc / "JPEGImages" / f"{stem}.jpg").read_bytes())
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(ids[2] + "\n")
    config = sample_config(root, classes=list(names), num_classes=len(names))
    for split in ("train", "val"):
        checked = check_dataset(config, split)
        assert checked.ok, checked.format()


# ----------------------------------------------------------------------------- COCO


def _rle_by_numpy(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE written independently: runs over the column-major pixels, starting with zeros."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _coco(path: Path, images: list[tuple[int, str, int, int]], annotations: list[dict], categories: dict[int, str]) -> Path:
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in images],
        "annotations": [{"id": n, "iscrowd": 0, **a} for n, a in enumerate(annotations, 1)],
        "categories": [{"id": k, "name": v} for k, v in categories.items()],
    }))
    return path


def test_coco_rle_both_forms_and_polygon_block(tmp_path):
    mask_api = need_module("pycocotools.mask", "coco")
    rng = np.random.default_rng(3)
    blob = rng.random((24, 30)) < 0.4
    blob2 = np.zeros((24, 30), bool)
    blob2[2:7, 20:28] = True
    compressed = mask_api.encode(np.asfortranarray(blob2.astype(np.uint8)))
    ann = [
        {"image_id": 1, "category_id": 7, "segmentation": _rle_by_numpy(blob)},
        {"image_id": 1, "category_id": 9, "segmentation": {"size": [24, 30], "counts": compressed["counts"].decode()}},
        {"image_id": 2, "category_id": 9, "segmentation": [[2, 3, 7, 3, 7, 6, 2, 6]]},  # a 5x3 box as a polygon
    ]
    images = [(1, "train2017/a.jpg", 24, 30), (2, "b.jpg", 10, 10), (3, "c.jpg", 4, 5)]
    source = _coco(tmp_path / "instances.json", images, ann, {7: "a", 9: "b"})
    assert cli_main(["convert-labels", "coco", str(source), str(tmp_path / "out"), "--classes", "background,a,b", "--overlap", "order"]) == 0
    expected = np.zeros((24, 30), np.uint8)
    expected[blob] = 1
    expected[blob2] = 2
    np.testing.assert_array_equal(_png(tmp_path / "out" / "a.png"), expected)
    box = np.zeros((10, 10), np.uint8)
    box[3:6, 2:7] = 2  # pycocotools' rule: pixels inside the outline, area 5 x 3
    np.testing.assert_array_equal(_png(tmp_path / "out" / "b.png"), box)
    assert (_png(tmp_path / "out" / "c.png") == 0).all()  # an image without annotations is all --fill
    # The same decoding as pycocotools' own decoder of the uncompressed form.
    np.testing.assert_array_equal(mask_api.decode(mask_api.frPyObjects(_rle_by_numpy(blob), 24, 30)), blob)


def test_coco_overlap_rule_crowd_and_unknown_category(tmp_path, capsys):
    need_module("pycocotools", "coco")
    grass = np.ones((20, 20), np.uint8)
    person = [[5, 5, 12, 5, 12, 14, 5, 14]]
    ann = [
        {"image_id": 1, "category_id": 1, "segmentation": person},
        {"image_id": 1, "category_id": 2, "segmentation": _rle_by_numpy(grass)},  # stuff after thing in the file
        {"image_id": 1, "category_id": 1, "segmentation": [[15, 15, 19, 15, 19, 19, 15, 19]], "iscrowd": 1},
    ]
    source = _coco(tmp_path / "both.json", [(1, "x.jpg", 20, 20)], ann, {1: "person", 2: "grass"})
    out = tmp_path / "out"
    common = ["convert-labels", "coco", str(source), str(out), "--classes", "background,person,grass"]
    assert cli_main(common) == 0  # default: larger area first, so the person stays visible
    mask = _png(out / "x.png")
    assert (mask[5:14, 5:12] == 1).all() and mask[0, 0] == 2 and (mask[15:19, 15:19] == 1).all()
    assert cli_main([*common, "--overlap", "order"]) == 0  # file order: the grass covers the person
    assert (_png(out / "x.png")[5:14, 5:12] == 2).all()
    assert cli_main([*common, "--crowd", "void"]) == 0
    mask = _png(out / "x.png")
    assert (mask[15:19, 15:19] == 255).all() and (mask[5:14, 5:12] == 1).all()

    capsys.readouterr()
    assert cli_main(["convert-labels", "coco", str(source), str(out), "--classes", "background,person"]) == 1
    err = capsys.readouterr().err
    assert "'grass' in x.jpg" in err and "--rename" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- CVAT


LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:250,50,83::\ndog:61,61,245:head,tail:\n"


def _cvat(root: Path, labels: np.ndarray, colours: np.ndarray, labelmap: str | None = LABELMAP) -> Path:
    (root / "SegmentationClass").mkdir(parents=True)
    if labelmap is not None:
        (root / "labelmap.txt").write_text(labelmap)
    Image.fromarray(colours[labels]).save(root / "SegmentationClass" / "frame_000001.png")
    return root


def test_cvat_labelmap_parsing(tmp_path):
    path = tmp_path / "labelmap.txt"
    path.write_text(LABELMAP)
    table = parse_labelmap(path)
    assert table.names == ("background", "cat", "dog")
    np.testing.assert_array_equal(table.colors, [[0, 0, 0], [250, 50, 83], [61, 61, 245]])
    path.write_text("# label:color_rgb:parts:actions\nbackground:::\ncar:::\n")  # no colours: VOC's map by position
    np.testing.assert_array_equal(parse_labelmap(path).colors, VOC_COLORS[:2])
    for bad, message in (("cat:1,2,3:\n", "has 3 ':'-separated fields"), ("cat:1,2,300::\n", "is not r,g,b"),
                         ("cat:1,2,3::\ncat:4,5,6::\n", "listed twice"), ("a:1,2,3::\nb:::\n", "have no colour")):
        path.write_text(bad)
        with pytest.raises(SegtrainError, match=message):
            parse_labelmap(path)


def test_cvat_round_trip_and_classes_by_name(tmp_path, capsys):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=(12, 16)).astype(np.uint8)
    colours = np.array([[0, 0, 0], [250, 50, 83], [61, 61, 245]], np.uint8)
    export = _cvat(tmp_path / "export", labels, colours)
    assert cli_main(["convert-labels", "cvat", str(export), str(tmp_path / "own"), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == f"frame_000001.png -> {tmp_path / 'own' / 'frame_000001.png'}"
    assert not (tmp_path / "own").exists()
    assert cli_main(["convert-labels", "cvat", str(export), str(tmp_path / "own")]) == 0  # the labelmap is the class list
    with Image.open(tmp_path / "own" / "frame_000001.png") as im:
        np.testing.assert_array_equal(np.asarray(im), labels)
        assert im.getpalette()[3:6] == [250, 50, 83]
    assert cli_main(["convert-labels", "cvat", str(export), str(tmp_path / "voc"), "--classes", "voc"]) == 0
    np.testing.assert_array_equal(_png(tmp_path / "voc" / "frame_000001.png"), np.array([0, 8, 12], np.uint8)[labels])

    assert cli_main(["convert-labels", "cvat", str(export), str(tmp_path / "x"), "--classes", "background,cat"]) == 1
    assert "'dog' in frame_000001.png" in capsys.readouterr().err
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(export / "SegmentationClass" / "frame_000002.png")
    assert cli_main(["convert-labels", "cvat", str(export), str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert "frame_000002.png: 16 pixels have colours (7,7,7)" in err and len(err.strip().splitlines()) == 1


def test_cvat_export_without_labelmap_uses_voc_colours(tmp_path):
    labels = np.array([[0, 15, 15], [8, 0, 255]], np.uint8)
    colours = np.zeros((256, 3), np.uint8)
    colours[:21] = VOC_COLORS
    labels[1, 2] = 0  # CVAT never writes void
    export = _cvat(tmp_path / "export", labels, colours, labelmap=None)
    report = import_annotations("cvat", export, tmp_path / "out")
    assert report.table.names[15] == "person"
    np.testing.assert_array_equal(_png(tmp_path / "out" / "frame_000001.png"), labels)
    assert isinstance(report.table, ColorTable)
