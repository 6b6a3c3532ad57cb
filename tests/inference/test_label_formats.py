"""``teacherkit label --format yolo|yolo-seg``: the COCO file and, next to it, an Ultralytics
dataset with the same objects (read back with supervision, a student trainer's own reader)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from teacherkit.cli import run
from teacherkit.errors import OutputExistsError, TeacherkitError
from teacherkit.inference.label_formats import FormatRequest, check_format_output, yolo_dir


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"name": "voc"}, "--format voc: expected one of coco, yolo, yolo-seg"),
    ({"name": "yolo", "link_images": "move"}, "--link-images move: expected one of symlink, hardlink, copy"),
    ({"name": "yolo", "val_fraction": 1.0}, r"--val-fraction 1.0: must be in \[0, 1\)"),
    ({"name": "coco", "val_fraction": 0.2}, "--val-fraction splits a YOLO dataset"),
])
def test_bad_format_options_are_refused_by_flag(kwargs, says):
    with pytest.raises(TeacherkitError, match=says):
        FormatRequest(**kwargs)


def test_an_existing_yolo_folder_is_refused_before_labelling(tmp_path):
    out = tmp_path / "labels.json"
    assert yolo_dir(out) == tmp_path / "labels-yolo"
    check_format_output(FormatRequest("yolo"), out, overwrite=False)  # nothing there yet
    yolo_dir(out).mkdir()
    with pytest.raises(OutputExistsError, match="labels-yolo already exists; use --overwrite"):
        check_format_output(FormatRequest("yolo"), out, overwrite=False)
    check_format_output(FormatRequest("yolo"), out, overwrite=True)
    check_format_output(FormatRequest("coco"), out, overwrite=False)  # coco writes no folder


@pytest.mark.slow
def test_label_writes_a_yolo_seg_dataset_that_supervision_reads_as_the_coco_file(tiny_experiment, tmp_path, capsys):
    sv = pytest.importorskip("supervision", reason="supervision is not installed (the test extra has it)")
    images = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))
    out = tmp_path / "pseudo.json"
    args = ["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out), "--device", "cpu",
            "--score-threshold", "0", "--format", "yolo-seg", "--link-images", "copy"]
    assert run(args) == 0
    assert "YOLO dataset: 3 train images" in capsys.readouterr().out
    coco = json.loads(out.read_text())
    folder = tmp_path / "pseudo-yolo"
    data = sv.DetectionDataset.from_yolo(str(folder / "images" / "train"), str(folder / "labels" / "train"),
                                         str(folder / "data.yaml"), force_masks=True)
    assert len(data) == 3
    names = {c["id"]: c["name"] for c in coco["categories"]}
    with_masks = [a for a in coco["annotations"] if a.get("segmentation")]
    assert with_masks, "the tiny teachers should give at least one mask"
    for path, _image, detections in data:
        stem = path.rsplit("/", 1)[-1]
        image = next(i for i in coco["images"] if i["file_name"] == stem)
        want = [a for a in with_masks if a["image_id"] == image["id"]]
        assert len(detections) == len(want)
        got_classes = sorted(data.classes[c] for c in detections.class_id)
        assert got_classes == sorted(names[a["category_id"]] for a in want)
        assert detections.mask is not None and detections.mask.shape[1:] == (image["height"], image["width"])
        assert all(np.count_nonzero(m) > 0 for m in detections.mask)
    # an existing dataset is not overwritten without the flag: refused before any labelling
    out.unlink()
    assert run(args) == 2
    assert "pseudo-yolo already exists" in capsys.readouterr().err and not out.exists()
