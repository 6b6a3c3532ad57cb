"""``teacherkit label --data GT.json``: the pseudo-labels scored against ground truth of some
of the images, checked against pycocotools' COCOeval run directly on the two files."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from teacherkit.cli import run


def _cocoeval_box_ap(gt_path, labels):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
        to_gt = {img["id"]: by_name[img["file_name"]] for img in labels["images"] if img["file_name"] in by_name}
        dets = [{"image_id": to_gt[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": a["score"]} for a in labels["annotations"] if a["image_id"] in to_gt]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(float(ev.stats[0]), 0.0)


@pytest.mark.slow
def test_label_scores_its_labels_against_the_ground_truth_given(tiny_experiment, tmp_path, capsys):
    images = tmp_path / "unlabeled"
    shutil.copytree(tiny_experiment["test"].parent, images, ignore=shutil.ignore_patterns("*.json"))
    gt = json.loads(tiny_experiment["test"].read_text())
    # the ground truth names one image the labelled folder does not have
    gt["images"].append({"id": 999, "file_name": "elsewhere.png", "width": 64, "height": 64})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "pseudo.json"
    assert run(["label", str(tiny_experiment["path"]), "--images", str(images), "--output", str(out),
                "--device", "cpu", "--score-threshold", "0", "--data", str(gt_path)]) == 0
    printed = capsys.readouterr().out
    assert f"pseudo-labels vs {gt_path} (3 images" in printed and "box AP" in printed and "mask AP" in printed
    assert "1 image(s) of" in printed and "not scored" in printed
    scores = json.loads((tmp_path / "pseudo.scores.json").read_text())
    labels = json.loads(out.read_text())
    assert scores["images_scored"] == 3 and scores["images_not_labelled"] == 1
    assert scores["labels"] == len(labels["annotations"]) > 0
    assert scores["boxes"]["bbox_AP"] == pytest.approx(_cocoeval_box_ap(gt_path, labels), abs=1e-12)
    assert 0.0 <= scores["precision@0.5"] <= 1.0 and 0.0 <= scores["recall@0.5"] <= 1.0


def test_ground_truth_sharing_no_image_with_the_labels_is_refused(tmp_path):
    from teacherkit.data.coco import CocoDataset
    from teacherkit.errors import DataError
    from teacherkit.inference.label_scores import _matched

    gt = CocoDataset.from_dict({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                                "annotations": [], "categories": [{"id": 1, "name": "x"}]})
    labels = {"images": [{"id": 1, "file_name": "b.png"}], "annotations": []}
    with pytest.raises(DataError, match=r"--data gt.json: none of its 1 images is among the labelled ones"):
        _matched(labels, gt, "gt.json")


def test_a_missing_ground_truth_file_is_refused_before_any_work(tmp_path, capsys):
    assert run(["label", str(tmp_path / "no-exp"), "--images", str(tmp_path), "--output", str(tmp_path / "o.json"),
                "--data", str(tmp_path / "missing.json")]) == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "o.json").exists()
