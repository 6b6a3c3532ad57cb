"""Small ground truth and predictions whose matches are worked out by hand (see each test)."""

from __future__ import annotations

import pytest

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 5, "name": "star"}]


def box_gt() -> dict:
    images = [{"id": i, "file_name": f"img_{i}.png", "width": 128, "height": 128} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 20, 20]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30]},
        {"id": 4, "image_id": 3, "category_id": 3, "bbox": [5, 5, 10, 10]},
    ]
    for a in anns:
        a.update(area=a["bbox"][2] * a["bbox"][3], iscrowd=0)
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def box_predictions() -> list[dict]:
    return [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},   # right
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.8},   # the square, called a circle
        {"image_id": 1, "category_id": 1, "bbox": [100, 100, 10, 10], "score": 0.3},  # nothing there
        {"image_id": 3, "category_id": 3, "bbox": [5, 5, 10, 10], "score": 0.6},     # right
        {"image_id": 3, "category_id": 3, "bbox": [6, 6, 10, 10], "score": 0.55},    # duplicate of it
    ]                                                                                # image 2's circle: missed


@pytest.fixture
def gt():
    return box_gt()


@pytest.fixture
def predictions():
    return box_predictions()


# -- a written experiment folder (what training leaves), without training ---------------------
def _history(metric: str, epochs: int = 3) -> list[dict]:
    rows = [{"epoch": 0, metric: 0.05}]  # the base, scored before training
    for e in range(1, epochs + 1):
        rows.append({"epoch": e, "train_loss": 3.0 / e, "lr": 1e-3 / e, "seconds": 2.0, metric: 0.1 * e + 0.0123,
                     "val_only_big": 104.6 + e})
    return rows


def write_experiment(root, data_dir) -> dict:
    """An experiment folder with both shipped teachers' report files; returns what was put in."""
    import json

    from teacherkit.data.masks import mask_to_rle, segmentation_to_mask
    from teacherkit.data.synthetic import make_coco_dataset
    from teacherkit.reporting.paths import ReportPaths
    from teacherkit.reporting.pictures import EvaluationPictures
    from teacherkit.reporting.results import plot_results, write_results_csv

    val = make_coco_dataset(data_dir, num_images=5, size=(64, 64), seed=3)
    gt = json.loads(val.read_text())
    root.mkdir(parents=True)
    (root / "teacher_config.yaml").write_text("training:\n  epochs: 3\n  lr: 0.001\n")
    classes = [c["name"] for c in gt["categories"]]
    (root / "dataset_info.json").write_text(json.dumps({"num_images": 5, "num_annotations": len(gt["annotations"]),
                                                        "num_classes": 3, "class_names": classes}))
    teachers = {"grounding_dino": {"best_epoch": 3, "best_metric": 0.3123, "epochs_run": 3, "stopped_early": False},
                "sam": {"best_epoch": 2, "best_metric": 0.2123, "epochs_run": 3, "stopped_early": False}}
    (root / "metadata.json").write_text(json.dumps({
        "status": "finished", "teachers": teachers,
        "data": {"train": {"path": "train.json"}, "val": {"path": str(val)}, "annotation_kinds": ["boxes", "masks"],
                 "classes": classes}}))
    boxes = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.8}
             for a in gt["annotations"]]
    masks = [{"image_id": a["image_id"], "annotation_id": a["id"], "category_id": a["category_id"], "score": 0.7,
              "segmentation": mask_to_rle(segmentation_to_mask(a["segmentation"], 64, 64))} for a in gt["annotations"]]
    for name, kind, preds, metric in (("grounding_dino", "bbox", boxes, "bbox_AP"),
                                      ("sam", "prompted_mask", masks, "mIoU")):
        paths = ReportPaths.of(root, name)
        write_results_csv(_history(metric), paths.results_csv)
        plot_results(_history(metric), paths.results_png, title=name)
        pictures = EvaluationPictures(paths, gt, val.parent, kind, name)
        pictures.write(preds, tag="last", best=True, epoch=3)
    return {"gt": gt, "classes": classes}


@pytest.fixture(scope="session")
def experiment(tmp_path_factory):
    """Built once (drawing the pictures takes seconds); tests must not change it."""
    base = tmp_path_factory.mktemp("reporting")
    facts = write_experiment(base / "exp", base / "val")
    return base / "exp", facts
