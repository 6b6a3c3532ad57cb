"""YOLO datasets from COCO pseudo-labels (teacherkit.inference.student_formats), read back by
a parser written here and by the consumers' own readers (supervision, pycocotools)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from teacherkit.errors import DataError, OutputExistsError, TeacherkitError
from teacherkit.inference.mask_outline import largest_outline
from teacherkit.inference.student_formats import flat_names, write_yolo_dataset

# Category ids out of order and with gaps: class index = position among the sorted ids.
CATEGORIES = [{"id": 7, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""},
              {"id": 4, "name": "bird", "supercategory": ""}]
CLASS_OF = {2: 0, 4: 1, 7: 2}


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2).astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


@pytest.fixture
def pseudo(tmp_path):
    """Images (two sharing a stem in sub-folders, one without objects) and COCO pseudo-labels
    in the shape ``teacherkit label`` writes: scores, RLE masks, mask_score."""
    images_dir = tmp_path / "unlabelled"
    shapes = {"a/x.png": (48, 64), "b/x.png": (40, 50), "c.jpg": (64, 80), "empty.png": (32, 32)}
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, (h, w)) in enumerate(sorted(shapes.items()), start=1):
        (images_dir / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        if name == "empty.png":
            continue
        for k, (cat, score) in enumerate([(7, 0.9), (2, 0.4), (4, 0.7)]):
            mask = _disk(h, w, cx=w * (0.25 + 0.25 * k), cy=h * 0.5 + k, r=min(h, w) * 0.18)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": _bbox(mask), "score": score, "iscrowd": 0, "area": float(mask.sum()),
                                "segmentation": _rle(mask), "mask_score": 0.8})
    coco = {"info": {"description": "pseudo-labels by teacherkit from runs/train/exp1", "teachers": ["sam"],
                     "images_total": 4, "images_failed": []},
            "images": images, "annotations": annotations, "categories": CATEGORIES}
    coco_path = tmp_path / "labels.json"
    coco_path.write_text(json.dumps(coco))
    return {"coco": coco, "coco_path": coco_path, "images_dir": images_dir, "out": tmp_path / "yolo"}


def _read_labels(out: Path) -> dict[str, list[list[float]]]:
    """Every label line of the dataset by image path relative to images/<split>/, found the way
    Ultralytics does: the last '/images/' of the image path -> '/labels/', suffix -> .txt."""
    found = {}
    for image in sorted((out / "images").glob("*/*")):
        head, _, tail = str(image).rpartition(f"{os.sep}images{os.sep}")
        label = Path(head + f"{os.sep}labels{os.sep}" + tail).with_suffix(".txt")
        lines = label.read_text().splitlines()
        found[image.name] = [[float(v) for v in line.split()] for line in lines]
    return found


def _original(targets: dict[str, str], flat: str) -> str:
    return next(name for name, target in targets.items() if target == flat)


def test_boxes_round_trip_within_a_pixel(pseudo):
    coco, out = pseudo["coco"], pseudo["out"]
    report = write_yolo_dataset(pseudo["coco_path"], pseudo["images_dir"], out, segments=False)
    assert report.images == {"train": 4, "val": 0} and report.objects == {"train": 9, "val": 0}
    assert report.classes == ["dog", "bird", "cat"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"path": str(out.absolute()), "train": "images/train", "val": "images/train",
                    "names": {0: "dog", 1: "bird", 2: "cat"}}
    targets = flat_names([img["file_name"] for img in coco["images"]])
    labels = _read_labels(out)
    assert len(labels) == 4
    for flat, lines in labels.items():
        img = next(i for i in coco["images"] if i["file_name"] == _original(targets, flat))
        w, h = img["width"], img["height"]
        expected = sorted((CLASS_OF[a["category_id"]], *a["bbox"]) for a in coco["annotations"]
                          if a["image_id"] == img["id"])
        got = sorted((int(c), (cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h) for c, cx, cy, bw, bh in lines)
        assert [g[0] for g in got] == [e[0] for e in expected]
        np.testing.assert_allclose([g[1:] for g in got] or np.empty((0, 4)),
                                   [e[1:] for e in expected] or np.empty((0, 4)), atol=1.0)
    assert labels["empty.png"] == [] and (out / "labels" / "train" / "empty.txt").read_text() == ""
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "yolo" and meta["source"]["teachers"] == ["sam"]
    assert meta["classes"] == [{"index": 0, "category_id": 2, "name": "dog"},
                               {"index": 1, "category_id": 4, "name": "bird"},
                               {"index": 2, "category_id": 7, "name": "cat"}]
    assert meta["counts"]["objects"] == {"train": 9, "val": 0}


def test_polygons_rasterise_back_to_the_masks(pseudo):
    coco, out = pseudo["coco"], pseudo["out"]
    report = write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], out, segments=True)
    assert report.objects["train"] == 9 and report.masks_simplified == 0
    targets = flat_names([img["file_name"] for img in coco["images"]])
    for flat, lines in _read_labels(out).items():
        img = next(i for i in coco["images"] if i["file_name"] == _original(targets, flat))
        w, h = img["width"], img["height"]
        sources = {CLASS_OF[a["category_id"]]: mask_utils.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
            for a in coco["annotations"] if a["image_id"] == img["id"]}
        assert sorted(int(line[0]) for line in lines) == sorted(sources)
        for line in lines:
            points = (np.array(line[1:]).reshape(-1, 2) * [w, h]).ravel().tolist()
            back = mask_utils.decode(mask_utils.frPyObjects([points], h, w))[:, :, 0]
            source = sources[int(line[0])]
            assert (back & source).sum() / (back | source).sum() > 0.9


def test_outline_keeps_the_largest_part_and_fills_holes():
    mask = np.zeros((40, 40), np.uint8)
    mask[2:6, 2:6] = 1  # small part
    mask[10:30, 10:30] = 1
    mask[15:20, 15:20] = 0  # hole
    points, outlines = largest_outline(mask)
    assert outlines == 3
    back = mask_utils.decode(mask_utils.frPyObjects([points.ravel().tolist()], 40, 40))[:, :, 0]
    filled = np.zeros_like(mask)
    filled[10:30, 10:30] = 1
    assert (back == filled).all()
    disk = _disk(50, 60, cx=27.3, cy=21.8, r=13.5)
    points, outlines = largest_outline(disk)
    assert outlines == 1
    assert (mask_utils.decode(mask_utils.frPyObjects([points.ravel().tolist()], 50, 60))[:, :, 0] == disk).all()
    single = np.zeros((5, 5), np.uint8)
    single[4, 4] = 1  # one pixel in a corner: a small polygon, still inside the image
    points, _ = largest_outline(single)
    assert len(points) >= 3 and points.min() >= 4 and points.max() <= 5
    assert largest_outline(np.zeros((5, 5), np.uint8)) == (None, 0)


def test_flat_names_never_share_a_label_file():
    names = ["a/x.png", "b/x.png", "x.jpg", "X.png", "a__y.png", "a/y.png", "z.png"]
    flat = flat_names(names)
    stems = [Path(v).stem.casefold() for v in flat.values()]
    assert len(set(stems)) == len(names)
    assert flat["z.png"] == "z.png" and all("/" not in v for v in flat.values())
    assert flat_names(names) == flat  # deterministic


def test_split_is_deterministic_and_sized(pseudo):
    first = write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], pseudo["out"], segments=False,
                               val_fraction=0.5, seed=3)
    assert first.images == {"train": 2, "val": 2}
    val = sorted(p.name for p in (pseudo["out"] / "images" / "val").iterdir())
    again = pseudo["out"].with_name("again")
    write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], again, segments=False, val_fraction=0.5, seed=3)
    assert sorted(p.name for p in (again / "images" / "val").iterdir()) == val
    assert yaml.safe_load((again / "data.yaml").read_text())["val"] == "images/val"
    splits = set()
    for seed in range(8):
        out = pseudo["out"].with_name(f"seed{seed}")
        write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], out, segments=False, val_fraction=0.5, seed=seed)
        splits.add(tuple(sorted(p.name for p in (out / "images" / "val").iterdir())))
    assert len(splits) > 1  # the seed does change the split
    one = {**pseudo["coco"], "images": pseudo["coco"]["images"][:1], "annotations": []}
    with pytest.raises(TeacherkitError, match=r"1 image\(s\) cannot be split"):
        write_yolo_dataset(one, pseudo["images_dir"], pseudo["out"].with_name("one"), segments=False,
                           val_fraction=0.2)


def test_thresholds_per_class_and_for_all(pseudo):
    report = write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], pseudo["out"], segments=False,
                                thresholds=0.5)
    assert report.below_threshold == 3 and report.objects["train"] == 6  # the 0.4 dogs
    per_class = pseudo["out"].with_name("per-class")
    report = write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], per_class, segments=False,
                                thresholds={7: 0.95})
    assert report.below_threshold == 3
    assert all(int(line[0]) != 2 for lines in _read_labels(per_class).values() for line in lines)
    meta = json.loads((per_class / "meta.json").read_text())
    assert meta["thresholds"] == {"2": 0.0, "4": 0.0, "7": 0.95}
    with pytest.raises(TeacherkitError, match=r"category id\(s\) \[99\]"):
        write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], tmp := per_class.with_name("x"), segments=False,
                           thresholds={99: 0.5})
    assert not tmp.exists()


@pytest.mark.parametrize("how", ["symlink", "hardlink", "copy"])
def test_image_link_modes(pseudo, how):
    write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], pseudo["out"], segments=False, link_images=how)
    placed = pseudo["out"] / "images" / "train" / "c.jpg"
    source = pseudo["images_dir"] / "c.jpg"
    assert placed.read_bytes() == source.read_bytes()
    assert placed.is_symlink() == (how == "symlink")
    assert (placed.stat().st_ino == source.stat().st_ino) == (how != "copy")


def test_bad_input_is_named_and_nothing_is_written(pseudo):
    coco, out = pseudo["coco"], pseudo["out"]
    missing = json.loads(json.dumps(coco))
    missing["images"][2]["file_name"] = "gone.png"
    with pytest.raises(DataError, match=r"pseudo-labels: images\[2\]: image file .*gone.png not found"):
        write_yolo_dataset(missing, pseudo["images_dir"], out, segments=False)
    unknown = json.loads(json.dumps(coco))
    unknown["annotations"][4]["category_id"] = 5
    with pytest.raises(DataError, match=r"annotations\[4\] \(id 5\) of 'b/x.png': category_id 5 is not in"):
        write_yolo_dataset(unknown, pseudo["images_dir"], out, segments=False)
    no_mask = json.loads(json.dumps(coco))
    del no_mask["annotations"][0]["segmentation"]
    with pytest.raises(DataError, match=r"labels.json: annotations\[0\] \(id 1\) of 'a/x.png': no segmentation"):
        pseudo["coco_path"].write_text(json.dumps(no_mask))
        write_yolo_dataset(pseudo["coco_path"], pseudo["images_dir"], out, segments=True)
    not_a_number = json.loads(json.dumps(coco))
    not_a_number["annotations"][2]["bbox"][1] = float("nan")
    with pytest.raises(DataError, match=r"annotations\[2\] \(id 3\) of 'a/x.png': bbox \[.*nan.*\] is not"):
        write_yolo_dataset(not_a_number, pseudo["images_dir"], out, segments=False)
    assert not out.exists()
    report = write_yolo_dataset(no_mask, pseudo["images_dir"], out, segments=True, drop_boxes_without_mask=True)
    assert report.without_mask == 1 and report.objects["train"] == 8


def test_existing_output_is_refused_or_replaced_whole(pseudo):
    out = pseudo["out"]
    write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], out, segments=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], out, segments=True)
    before = (out / "labels" / "train" / "c.txt").read_text()
    # a mask that fails to decode is found while writing: the old dataset stays, no temp folder is left
    broken = json.loads(json.dumps(pseudo["coco"]))
    broken["annotations"][-1]["segmentation"]["size"] = [1, 1]
    with pytest.raises(DataError, match="pseudo-labels: annotation 9 of 'c.jpg'"):
        write_yolo_dataset(broken, pseudo["images_dir"], out, segments=True, overwrite=True)
    assert (out / "labels" / "train" / "c.txt").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    write_yolo_dataset(pseudo["coco"], pseudo["images_dir"], out, segments=True, overwrite=True)
    assert len((out / "labels" / "train" / "c.txt").read_text().split("\n")[0].split()) > 5


def _pixel_boxes(coco: dict, file_name: str) -> list[tuple]:
    img = next(i for i in coco["images"] if i["file_name"] == file_name)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return sorted((names[a["category_id"]], *a["bbox"]) for a in coco["annotations"] if a["image_id"] == img["id"])


def _detections_as_boxes(classes: list[str], detections) -> list[tuple]:
    return sorted((classes[c], x0, y0, x1 - x0, y1 - y0) for c, (x0, y0, x1, y1) in
                  zip(detections.class_id, detections.xyxy, strict=True))


def _assert_same_boxes(got: list[tuple], expected: list[tuple]) -> None:
    assert [g[0] for g in got] == [e[0] for e in expected]
    if expected:
        np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=1.0)


def test_supervision_reads_the_yolo_dataset(pseudo):
    sv = pytest.importorskip("supervision", reason="supervision is not installed (pip install supervision)")
    coco, out = pseudo["coco"], pseudo["out"]
    write_yolo_dataset(coco, pseudo["images_dir"], out, segments=False, val_fraction=0.25, seed=1)
    targets = flat_names([img["file_name"] for img in coco["images"]])
    seen = 0
    for split in ("train", "val"):
        ds = sv.DetectionDataset.from_yolo(str(out / "images" / split), str(out / "labels" / split),
                                           str(out / "data.yaml"))
        assert ds.classes == ["dog", "bird", "cat"]
        for path, detections in ds.annotations.items():
            _assert_same_boxes(_detections_as_boxes(ds.classes, detections),
                               _pixel_boxes(coco, _original(targets, Path(path).name)))
            seen += 1
    assert seen == 4


def test_supervision_reads_the_polygons_as_the_masks(pseudo):
    sv = pytest.importorskip("supervision", reason="supervision is not installed (pip install supervision)")
    coco, out = pseudo["coco"], pseudo["out"]
    write_yolo_dataset(coco, pseudo["images_dir"], out, segments=True)
    ds = sv.DetectionDataset.from_yolo(str(out / "images" / "train"), str(out / "labels" / "train"),
                                       str(out / "data.yaml"))
    targets = flat_names([img["file_name"] for img in coco["images"]])
    for path, detections in ds.annotations.items():
        img = next(i for i in coco["images"] if i["file_name"] == _original(targets, Path(path).name))
        sources = {a["category_id"]: mask_utils.decode({"size": a["segmentation"]["size"],
                                                        "counts": a["segmentation"]["counts"].encode()})
                   for a in coco["annotations"] if a["image_id"] == img["id"]}
        assert len(detections) == len(sources)
        if not sources:
            continue
        cat_of = {index: cid for cid, index in CLASS_OF.items()}
        for cls, mask in zip(detections.class_id, detections.mask, strict=True):
            source = sources[cat_of[int(cls)]].astype(bool)
            assert (mask & source).sum() / (mask | source).sum() > 0.85  # its rasteriser truncates to pixels


def test_supervision_and_pycocotools_read_the_coco_pseudo_labels(pseudo):
    sv = pytest.importorskip("supervision", reason="supervision is not installed (pip install supervision)")
    from pycocotools.coco import COCO

    coco = pseudo["coco"]
    api = COCO(str(pseudo["coco_path"]))
    assert sorted(api.getCatIds()) == [2, 4, 7] and len(api.getAnnIds()) == 9
    ds = sv.DetectionDataset.from_coco(str(pseudo["images_dir"]), str(pseudo["coco_path"]))
    assert sorted(ds.classes) == ["bird", "cat", "dog"]
    root = pseudo["images_dir"].resolve()
    for path, detections in ds.annotations.items():
        file_name = Path(path).relative_to(root).as_posix()
        _assert_same_boxes(_detections_as_boxes(ds.classes, detections), _pixel_boxes(coco, file_name))
    assert len(ds.annotations) == 4
