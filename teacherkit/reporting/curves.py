"""Curves of one evaluation: precision-recall per class (COCOeval's precision array),
F1 against confidence with the best threshold, the confusion matrix at that threshold
(box teachers); the IoU histogram and IoU per class (mask teachers). Each is a PNG
under ``pictures/`` and numbers in ``curves.json``, whose ``best_threshold`` is the
confidence a box teacher's labels should be cut at by default."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_bytes, atomic_write_json
from teacherkit.reporting.matching import confusion_matrix, f1_curve
from teacherkit.reporting.paths import ReportPaths

#: Recall points of COCOeval's precision array (0, 0.01, ..., 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def precision_recall(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *,
                     iou: float = 0.5) -> dict[str, Any]:
    """Interpolated precision at COCO's 101 recall points, at IoU ``iou`` (area all, 100
    detections per image): per class (``None`` for a class without ground truth) and the
    mean over the classes that have ground truth. COCOeval's precision is already the
    envelope (never rising with recall); recall points a class never reaches are 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = [c["name"] for c in gt.get("categories", [])]
    empty = {"iou": iou, "recall": RECALL_POINTS.tolist(), "per_class": dict.fromkeys(names),
             "overall": [0.0] * len(RECALL_POINTS)}
    dets = [dict(p) for p in predictions if p.get("bbox") is not None]
    data = copy.deepcopy(gt)
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann and ann.get("bbox"):
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        if not dets or not coco_gt.getAnnIds():
            return empty
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    t = int(np.argmin(np.abs(evaluator.params.iouThrs - iou)))
    precision = evaluator.eval["precision"][t, :, :, 0, -1]  # [R, K]
    per_class: dict[str, list[float] | None] = dict.fromkeys(names)
    by_id = {c["id"]: c["name"] for c in gt.get("categories", [])}
    valid = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        column = precision[:, k]
        if (column > -1).any():  # -1 everywhere: no ground truth of this class
            curve = np.clip(column, 0.0, None)
            per_class[by_id[cat_id]] = curve.tolist()
            valid.append(curve)
    overall = np.mean(valid, axis=0) if valid else np.zeros(len(RECALL_POINTS))
    return {"iou": iou, "recall": RECALL_POINTS.tolist(), "per_class": per_class, "overall": overall.tolist()}


def mask_ious(gt: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """IoU of each prompted mask with its ground truth (a missing prediction counts 0, as
    in ``mIoU``), and the mean per class."""
    from teacherkit.data.masks import segmentation_to_mask
    from teacherkit.evaluation.mask_metrics import iou_and_dice

    images = {img["id"]: img for img in gt.get("images", [])}
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    by_ann = {int(p["annotation_id"]): p for p in predictions if "annotation_id" in p}
    ious: list[float] = []
    per_class: dict[str, list[float]] = {}
    for ann in gt.get("annotations", []):
        if not ann.get("segmentation") or ann.get("iscrowd", 0):
            continue
        img = images[ann["image_id"]]
        h, w = int(img["height"]), int(img["width"])
        pred = by_ann.get(int(ann["id"]))
        iou = 0.0
        if pred is not None:
            iou = iou_and_dice(segmentation_to_mask(pred["segmentation"], h, w).astype(bool),
                               segmentation_to_mask(ann["segmentation"], h, w).astype(bool))[0]
        ious.append(iou)
        per_class.setdefault(names.get(ann["category_id"], str(ann["category_id"])), []).append(iou)
    return {"ious": ious, "per_class_mean": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
            "per_class_count": {k: len(v) for k, v in sorted(per_class.items())}}


# -- pictures ----------------------------------------------------------------------------------
def plot_pr(pr: dict[str, Any], title: str) -> bytes:
    from teacherkit.reporting.figures import figure_png, pyplot

    fig, ax = pyplot().subplots(figsize=(6, 5))
    for name, curve in pr["per_class"].items():
        if curve is not None:
            ax.plot(pr["recall"], curve, linewidth=1, alpha=0.7, label=f"{name} {np.mean(curve):.3f}")
    ax.plot(pr["recall"], pr["overall"], linewidth=2.5, color="black",
            label=f"all classes {np.mean(pr['overall']):.3f} AP@{pr['iou']:g}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, loc="lower left")
    return figure_png(fig)


def plot_f1(curve: dict[str, Any], title: str) -> bytes:
    from teacherkit.reporting.figures import figure_png, pyplot

    fig, ax = pyplot().subplots(figsize=(6, 5))
    for name, values in curve["per_class_f1"].items():
        ax.plot(curve["thresholds"], values, linewidth=1, alpha=0.6, label=name)
    ax.plot(curve["thresholds"], curve["f1"], linewidth=2.5, color="black", label="all classes")
    best, f1 = curve["best_threshold"], curve["best_f1"]
    ax.axvline(best, color="tab:red", linestyle="--", linewidth=1)
    ax.annotate(f"best {f1:.3f} at {best:.2f}", (best, f1), textcoords="offset points", xytext=(5, 5),
                color="tab:red", fontsize=8)
    ax.set(xlabel="confidence threshold", ylabel=f"F1 (IoU {curve['iou']:g})", xlim=(0, 1), ylim=(0, 1.02),
           title=title)
    ax.legend(fontsize=7)
    return figure_png(fig)


def plot_confusion(confusion: dict[str, Any], title: str) -> bytes:
    from teacherkit.reporting.figures import figure_png, pyplot

    matrix = np.asarray(confusion["matrix"])
    labels = confusion["labels"]
    side = 2.5 + 0.45 * len(labels)
    fig, ax = pyplot().subplots(figsize=(side + 1, side))
    image = ax.imshow(matrix, cmap="Blues")
    for (r, c), value in np.ndenumerate(matrix):
        if value:
            ax.text(c, r, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="true", ylabel="predicted",
           title=f"{title}\nconfidence \u2265 {confusion['threshold']:.2f}, IoU \u2265 {confusion['iou']:g}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return figure_png(fig)


def plot_iou_histogram(ious: dict[str, Any], title: str) -> bytes:
    from teacherkit.reporting.figures import figure_png, pyplot

    fig, ax = pyplot().subplots(figsize=(6, 4))
    ax.hist(ious["ious"], bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    if ious["ious"]:
        ax.axvline(float(np.mean(ious["ious"])), color="tab:red", linestyle="--", label="mean")
        ax.legend(fontsize=8)
    ax.set(xlabel="IoU of the prompted mask", ylabel="instances", xlim=(0, 1), title=title)
    return figure_png(fig)


def plot_iou_per_class(ious: dict[str, Any], title: str) -> bytes:
    from teacherkit.reporting.figures import figure_png, pyplot

    names = list(ious["per_class_mean"])
    fig, ax = pyplot().subplots(figsize=(max(4, 0.6 * len(names) + 2), 4))
    ax.bar(range(len(names)), [ious["per_class_mean"][n] for n in names], color="tab:green")
    ax.set_xticks(range(len(names)), [f"{n}\n({ious['per_class_count'][n]})" for n in names], fontsize=7)
    ax.set(ylabel="mean IoU", ylim=(0, 1), title=title)
    return figure_png(fig)


# -- writing -----------------------------------------------------------------------------------
def write_box_curves(paths: ReportPaths, gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *,
                     title: str, epoch: int | None = None) -> dict[str, Any]:
    """PR, F1 and confusion pictures and ``curves.json``; returns what ``curves.json`` holds."""
    pr = precision_recall(gt, predictions)
    f1 = f1_curve(gt, predictions)
    confusion = confusion_matrix(gt, predictions, threshold=f1["best_threshold"])
    atomic_write_bytes(paths.curve("pr_curve"), plot_pr(pr, f"{title}: precision-recall"))
    atomic_write_bytes(paths.curve("f1_curve"), plot_f1(f1, f"{title}: F1 against confidence"))
    atomic_write_bytes(paths.curve("confusion_matrix"), plot_confusion(confusion, f"{title}: confusion"))
    record = {"kind": "bbox", "epoch": epoch, "best_threshold": f1["best_threshold"], "best_f1": f1["best_f1"],
              "precision_recall": pr, "f1": f1, "confusion": confusion}
    atomic_write_json(paths.curves_json, record)
    return record


def write_mask_curves(paths: ReportPaths, gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *,
                      title: str, epoch: int | None = None) -> dict[str, Any]:
    """IoU histogram and IoU-per-class pictures and ``curves.json``."""
    ious = mask_ious(gt, predictions)
    atomic_write_bytes(paths.curve("iou_histogram"), plot_iou_histogram(ious, f"{title}: IoU of each instance"))
    atomic_write_bytes(paths.curve("iou_per_class"), plot_iou_per_class(ious, f"{title}: IoU per class"))
    record = {"kind": "mask", "epoch": epoch, "mean_iou": float(np.mean(ious["ious"])) if ious["ious"] else None,
              **ious}
    atomic_write_json(paths.curves_json, record)
    return record


def recorded_threshold(teacher_dir: Path) -> float | None:
    """The best F1 confidence recorded for a box teacher (``None`` when none was written),
    the default cut for ``teacherkit label``."""
    path = ReportPaths(Path(teacher_dir)).curves_json
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("best_threshold")
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else None
