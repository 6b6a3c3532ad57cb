"""``teacherkit label --data GT.json``: how good are the pseudo-labels a student will learn
from? The labels written (after the score cut) are scored against a labelled subset of the
images: precision, recall and F1 of the kept boxes at IoU 0.5 (what the student sees as
truth), COCO box AP (and mask AP when the labels have masks). Images are matched by
``file_name`` (relative to ``--images``), categories by name, as ``evaluate`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError


def _matched(labels: dict[str, Any], gt: Any, gt_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth of the labelled images, and the labels with its image ids."""
    ids_by_name = {img["file_name"]: int(img["id"]) for img in labels.get("images", [])}
    images = [img for img in gt.images if img.file_name in ids_by_name]
    if not images:
        raise DataError(f"--data {gt_path}: none of its {len(gt.images)} images is among the labelled ones "
                        "(file_name is matched relative to --images)")
    keep = {img.id for img in images}
    truth = gt.to_dict()
    truth["images"] = [img for img in truth["images"] if img["id"] in keep]
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in keep]
    to_gt = {ids_by_name[img.file_name]: img.id for img in images}
    labelled = [dict(a, image_id=to_gt[a["image_id"]]) for a in labels.get("annotations", [])
                if a["image_id"] in to_gt]
    return truth, labelled


def score_labels(labels_path: Path, gt_path: Path, experiment_info: Any) -> dict[str, Any]:
    """Scores of the COCO file ``labels_path`` (what ``label`` wrote) against ``gt_path``.

    :raises DataError: the ground truth cannot be read, has a category the experiment does
        not know, or shares no image with the labels.
    """
    from teacherkit.data.coco import load_coco
    from teacherkit.evaluation.coco_metrics import bbox_metrics, segm_metrics
    from teacherkit.evaluation.run import check_scorable, match_categories, remap_categories, undefined_as_none
    from teacherkit.reporting.matching import f1_curve

    gt = load_coco(gt_path)
    check_scorable(gt, gt_path)
    gt = remap_categories(gt, match_categories(experiment_info, gt, gt_path), experiment_info)
    labels = json.loads(Path(labels_path).read_text(encoding="utf-8"))
    truth, labelled = _matched(labels, gt, gt_path)
    curve = f1_curve(truth, labelled)
    result: dict[str, Any] = {
        "data": str(gt_path), "images_scored": len(truth["images"]),
        "images_not_labelled": len(gt.images) - len(truth["images"]),
        "objects": len(truth["annotations"]), "labels": len(labelled),
        # threshold 0 keeps every label written: the set the student gets
        "precision@0.5": curve["precision"][0], "recall@0.5": curve["recall"][0], "f1@0.5": curve["f1"][0],
        "boxes": undefined_as_none(bbox_metrics(truth, labelled), truth),
    }
    masked = [a for a in labelled if a.get("segmentation")]
    if masked and any(a.get("segmentation") for a in truth["annotations"]):
        result["masks"] = undefined_as_none(segm_metrics(truth, masked), truth)
    return result


def describe_scores(scores: dict[str, Any]) -> list[str]:
    """The lines ``label`` prints about the scores."""
    lines = [f"pseudo-labels vs {scores['data']} ({scores['images_scored']} images, {scores['objects']} objects, "
             f"{scores['labels']} labels): precision {scores['precision@0.5']:.3f}, recall {scores['recall@0.5']:.3f}, "
             f"F1 {scores['f1@0.5']:.3f} at IoU 0.5; box AP {_num(scores['boxes'].get('bbox_AP'))}"
             + (f", mask AP {_num(scores['masks'].get('segm_AP'))}" if "masks" in scores else "")]
    if scores["images_not_labelled"]:
        lines.append(f"note: {scores['images_not_labelled']} image(s) of {scores['data']} were not among the "
                     "labelled images and are not scored")
    return lines


def _num(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.3f}"


def scores_path(output: Path) -> Path:
    """Where the scores go: ``<output stem>.scores.json`` next to the labels."""
    return output.with_name(f"{output.stem}.scores.json")
