"""The one metric dispatch (``teacherkit.evaluation.run.metrics_for``): built-in box and
mask metrics, a teacher's own metric, and undefined per-class AP shown as a dash; and what
``evaluate`` adds around it: categories matched by name, the recorded data as the default,
``evaluation.json`` and the base/tuned grids for the report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from teacherkit.evaluation.run import evaluator, metrics_for
from teacherkit.teachers import TeacherSpec


def _square_rle(x: int, y: int, side: int, h: int = 32, w: int = 32) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    m = np.zeros((h, w), np.uint8)
    m[y : y + side, x : x + side] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _gt() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100.0,
             "segmentation": _square_rle(4, 4, 10), "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [20, 20, 8, 8], "area": 64.0, "iscrowd": 0},
        ],
    }


def _spec(**kwargs: Any) -> TeacherSpec:
    from teacherkit.config import TeacherConfig

    return TeacherSpec(name="probe", learns_from="boxes", config_model=TeacherConfig, **kwargs)


def test_box_metrics_and_undefined_per_class_ap():
    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [20, 20, 8, 8], "score": 0.8}]
    metrics = metrics_for(_spec(evaluation="bbox"), _gt(), dets)
    assert 0.0 < metrics["bbox_AP"] <= 1.0
    # "circle" has no ground truth in this file: its AP is undefined, never 0
    assert metrics["bbox_per_class_AP"]["circle"] is None
    assert metrics["bbox_per_class_AP"]["square"] > 0.0
    empty = metrics_for("bbox", _gt(), [])
    assert empty["bbox_per_class_AP"] == {"square": 0.0, "circle": None}


def test_prompted_masks_get_segm_ap_in_training_and_evaluation_alike():
    preds = [{"image_id": 1, "annotation_id": 10, "category_id": 1, "segmentation": _square_rle(4, 4, 10),
              "score": 0.9}]
    spec = _spec(evaluation="prompted_mask")
    metrics = metrics_for(spec, _gt(), preds)
    assert metrics["mIoU"] == 1.0 and metrics["segm_AP"] > 0.0  # the box-only instance is no mask to score
    assert evaluator(spec, _gt())(preds) == metrics  # what the training loop calls each epoch


def test_a_teacher_that_declares_its_metric_is_scored_by_it():
    seen = []

    def mean_keypoint_error(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append((len(gt["annotations"]), len(predictions)))
        return {"keypoint_error": 1.5}

    preds = [{"image_id": 1, "keypoints": [3.0, 4.0, 2], "score": 1.0}]
    assert metrics_for(_spec(metric=mean_keypoint_error), _gt(), preds) == {"keypoint_error": 1.5}
    assert seen == [(2, 1)]
    assert metrics_for(_spec(), _gt(), preds) == {}  # evaluation "none" and no metric: not scored


def test_evaluate_table_shows_undefined_as_a_dash_and_plugin_metrics(capsys):
    from teacherkit.evaluation.commands import UNDEFINED, print_tables

    per_class = {"square": 0.5, "circle": None}
    box = {"bbox_AP": 0.5, "bbox_AP50": 0.7, "bbox_per_class_AP": per_class}
    result = {"adapter_scale": 1.0, "teachers": {
        "grounding_dino": {"data": {"base": {**box, "bbox_AP": 0.25}, "tuned": box}},
        "keypoint_centroid": {"data": {"base": {"keypoint_error": 3.0}, "tuned": {"keypoint_error": 1.0}}},
    }}
    print_tables(result)
    out = capsys.readouterr().out
    circle = next(line for line in out.splitlines() if "circle" in line)
    assert UNDEFINED in circle and "0.0000" not in circle
    assert "+0.2500" in out  # gain of bbox_AP
    assert "keypoint_error" in out and "-2.0000" in out


def test_undefined_headline_stats_become_none_for_people_only():
    from teacherkit.evaluation.run import undefined_as_none

    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9}]
    metrics = metrics_for("bbox", _gt(), dets)  # both objects are small (areas 100 and 64)
    assert metrics["bbox_APl"] == 0.0 and metrics["bbox_APm"] == 0.0  # what the training loop reads
    shown = undefined_as_none(metrics, _gt())
    assert shown["bbox_APl"] is None and shown["bbox_APm"] is None and shown["bbox_ARl"] is None
    assert shown["bbox_APs"] == metrics["bbox_APs"] and shown["bbox_AP"] == metrics["bbox_AP"]
    crowd_only = dict(_gt(), annotations=[dict(a, iscrowd=1) for a in _gt()["annotations"]])
    assert all(v is None for k, v in undefined_as_none(metrics, crowd_only).items()
               if k.startswith("bbox_A") and k != "bbox_per_class_AP")


# -- evaluate: categories matched by name, the recorded data, what it leaves for the report ---

def _info(categories: list[tuple[int, str]]) -> Any:
    from teacherkit.data.info import DatasetInfo

    cats = [{"id": i, "name": n} for i, n in categories]
    return DatasetInfo(categories=cats, class_names=[n for _, n in categories],
                       class_mapping={i: k for k, (i, _) in enumerate(categories)})


def _coco(categories: list[tuple[int, str]], used: list[int]) -> Any:
    from teacherkit.data.coco import CocoDataset

    return CocoDataset.from_dict({
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "categories": [{"id": i, "name": n} for i, n in categories],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": [1, 1, 5, 5], "area": 25.0}
                        for k, c in enumerate(used)]})


def test_same_names_with_other_ids_are_remapped_with_one_notice(tmp_path):
    from teacherkit.evaluation.run import match_categories, remap_categories, remap_notice

    info = _info([(1, "square"), (2, "circle"), (3, "triangle")])
    coco = _coco([(7, "Circle"), (1, " square "), (9, "triangle")], used=[7, 1, 9, 7])
    mapping = match_categories(info, coco, tmp_path / "test.json")
    assert mapping == {7: 2, 1: 1, 9: 3}  # case and spacing ignored, as validate and replay compare names
    remapped = remap_categories(coco, mapping, info)
    assert [a.category_id for a in remapped.annotations] == [2, 1, 3, 2]
    assert [(c.id, c.name) for c in remapped.categories] == [(2, "circle"), (1, "square"), (3, "triangle")]
    assert [a.category_id for a in coco.annotations] == [7, 1, 9, 7]  # the loaded file is left as it was
    notice = remap_notice(tmp_path / "test.json", coco, mapping)
    assert notice.count("\n") == 0 and "'Circle' 7->2" in notice and "'triangle' 9->3" in notice
    assert "square" not in notice  # same id: nothing to say


def test_a_file_with_the_experiments_ids_and_names_is_used_as_it_is(tmp_path):
    from teacherkit.evaluation.run import match_categories, remap_categories, remap_notice

    info = _info([(1, "square"), (2, "circle")])
    coco = _coco([(1, "square"), (2, "circle")], used=[1, 2])
    mapping = match_categories(info, coco, tmp_path / "t.json")
    assert remap_categories(coco, mapping, info) is coco and remap_notice(tmp_path / "t.json", coco, mapping) is None


def test_a_same_id_with_another_name_is_refused_with_both_names(tmp_path):
    from teacherkit.errors import DataError
    from teacherkit.evaluation.run import match_categories

    info = _info([(1, "square"), (2, "circle")])
    with pytest.raises(DataError, match=r"t\.json: category id 2 is 'hexagon' in this file but 'circle' in the "
                                        r"experiment's training data"):
        match_categories(info, _coco([(1, "square"), (2, "hexagon")], used=[1]), tmp_path / "t.json")
    with pytest.raises(DataError, match=r"category 'star' \(id 5\) was not in the experiment's training data; its "
                                        r"teachers only know square, circle"):
        match_categories(info, _coco([(5, "star")], used=[5]), tmp_path / "t.json")
    with pytest.raises(DataError, match="two categories are named 'square'"):
        match_categories(info, _coco([(1, "square"), (4, "Square")], used=[1]), tmp_path / "t.json")


def _experiment_with_metadata(root, data: Any) -> Any:
    from teacherkit.layout import ExperimentLayout

    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.json").write_text(json.dumps({"data": data}))
    return SimpleNamespace(layout=ExperimentLayout(root))


def test_the_recorded_test_file_is_preferred_then_the_validation_file(tmp_path):
    from teacherkit.evaluation.run import recorded_data

    val, test = tmp_path / "val.json", tmp_path / "test.json"
    val.write_text("{}")
    test.write_text("{}")
    exp = _experiment_with_metadata(tmp_path / "a", {"val": {"path": str(val)}, "test": None})
    assert recorded_data(exp) == ("val", val, None)
    exp = _experiment_with_metadata(tmp_path / "b", {"val": {"path": str(val)},
                                                     "test": {"path": str(test), "images": str(tmp_path)}})
    assert recorded_data(exp) == ("test", test, tmp_path)


def test_without_a_recorded_file_evaluate_asks_for_data(tmp_path):
    from teacherkit.errors import DataError
    from teacherkit.evaluation.run import recorded_data

    with pytest.raises(DataError, match=r"records no validation or test file \(trained without --val\); give --data"):
        recorded_data(_experiment_with_metadata(tmp_path / "a", {"train": {"path": "t.json"}, "val": None}))
    gone = tmp_path / "moved" / "val.json"
    with pytest.raises(DataError, match=rf"the recorded val file {re.escape(str(gone))} is not found .*give --data"):
        recorded_data(_experiment_with_metadata(tmp_path / "b", {"val": {"path": str(gone)}}))
    with pytest.raises(DataError, match="cannot read the recorded data"):
        recorded_data(SimpleNamespace(layout=SimpleNamespace(metadata=tmp_path / "none.json")))


def test_a_relative_recorded_path_falls_back_to_the_absolute_one_from_another_folder(tmp_path, monkeypatch):
    from teacherkit.evaluation.run import recorded_data
    from teacherkit.training.metadata import data_section

    (tmp_path / "data").mkdir()
    val = tmp_path / "data" / "val.json"
    val.write_text("{}")
    monkeypatch.chdir(tmp_path)  # training ran here, with relative paths
    info = SimpleNamespace(num_images=1, num_annotations=0, class_names=[], annotation_kinds=[])
    section = data_section(Path("data/val.json"), Path("data/val.json"), None, info,
                           {"train": None, "val": None}, images={"train": None, "val": Path("data")})
    assert section["val"]["path"] == "data/val.json" and section["val"]["absolute"] == str(val)
    exp = _experiment_with_metadata(tmp_path / "exp", section)
    monkeypatch.chdir(tmp_path / "exp")  # evaluate runs somewhere else
    assert recorded_data(exp) == ("val", val, tmp_path / "data")


@pytest.mark.slow
def test_evaluate_defaults_to_the_recorded_file_and_leaves_what_the_report_shows(tiny_experiment, capsys):
    from teacherkit.cli import run
    from teacherkit.reporting.paths import ReportPaths
    from teacherkit.reporting.report import build_report

    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    assert run(["evaluate", str(exp), "--json", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"note: no --data given: evaluating on the experiment's recorded val file {test}" in err
    result = json.loads(out)
    assert result["data"] == str(test) and set(result["teachers"]) == {"grounding_dino", "sam"}
    assert json.loads((exp / "evaluation.json").read_text()) == result  # what --json printed
    for name in ("grounding_dino", "sam"):
        paths = ReportPaths(exp / "evaluation" / name)
        for tag in ("base", "tuned"):
            assert paths.grid(tag).stat().st_size > 0
            assert json.loads(paths.grid_info(tag).read_text())["tag"] == tag
    page = build_report(exp)
    assert page.count("gain") >= 2  # base vs tuned, one table per teacher, from evaluation.json
    for tag in ("base", "tuned"):  # and evaluate's grids, one of each per teacher
        assert page.count(f"<figcaption>{tag} (teacherkit evaluate): ground truth | predictions") == 2


@pytest.mark.slow
def test_evaluate_remaps_ids_by_name_and_refuses_a_renamed_id(tiny_experiment, tmp_path, capsys):
    from teacherkit.cli import run

    exp, test = tiny_experiment["path"], tiny_experiment["test"]
    assert run(["evaluate", str(exp), "--data", str(test), "--json", "--device", "cpu", "--models",
                "grounding_dino"]) == 0
    same = json.loads(capsys.readouterr().out)
    gt = json.loads(test.read_text())
    shift = {c["id"]: c["id"] + 10 for c in gt["categories"]}
    for cat in gt["categories"]:
        cat["id"] = shift[cat["id"]]
    for ann in gt["annotations"]:
        ann["category_id"] = shift[ann["category_id"]]
    moved = test.parent / "shifted_ids.json"  # beside its images
    moved.write_text(json.dumps(gt))
    assert run(["evaluate", str(exp), "--data", str(moved), "--json", "--device", "cpu", "--models",
                "grounding_dino"]) == 0
    out, err = capsys.readouterr()
    assert err.count("note:") == 1 and "'square' 11->1" in err
    shifted = json.loads(out)["teachers"]["grounding_dino"]["data"]
    assert shifted == same["teachers"]["grounding_dino"]["data"]  # the same scores as the original ids

    gt["categories"][0]["id"], gt["categories"][0]["name"] = 2, "hexagon"  # circle's id, another name
    renamed = test.parent / "renamed.json"
    renamed.write_text(json.dumps(gt))
    assert run(["evaluate", str(exp), "--data", str(renamed), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "category id 2 is 'hexagon' in this file but 'circle'" in err and "Traceback" not in err
