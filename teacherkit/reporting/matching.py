"""Detections matched to ground truth at one IoU: the counts behind the F1-vs-confidence
curve and the confusion matrix.

Matching is COCO's greedy rule: detections in falling score order, each takes the
unmatched ground-truth box it overlaps most (IoU at least ``iou``). Because the order is by
score, the matches of the detections above a threshold do not depend on those below it,
so one matching serves every threshold. Crowd regions (``iscrowd``) are left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4], COCO ``xywh``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(gt_boxes: np.ndarray, gt_classes: np.ndarray, det_boxes: np.ndarray, det_classes: np.ndarray,
                 det_scores: np.ndarray, *, iou: float = 0.5, same_class: bool = True) -> np.ndarray:
    """For each detection, the index of the ground truth it matched, or -1."""
    matched = np.full(len(det_boxes), -1, dtype=np.int64)
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    overlaps = box_iou(det_boxes, gt_boxes)
    if same_class:
        overlaps = np.where(np.asarray(det_classes)[:, None] == np.asarray(gt_classes)[None], overlaps, 0.0)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-np.asarray(det_scores), kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            matched[d] = best
            taken[best] = True
    return matched


def _by_image(gt: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> dict[Any, tuple[list, list]]:
    groups: dict[Any, tuple[list, list]] = defaultdict(lambda: ([], []))
    for image in gt.get("images", []):
        groups[image["id"]]
    for ann in gt.get("annotations", []):
        if ann.get("bbox") and not ann.get("iscrowd", 0):
            groups[ann["image_id"]][0].append(ann)
    for pred in predictions:
        if pred.get("bbox") is not None and pred.get("image_id") in groups:
            groups[pred["image_id"]][1].append(pred)
    return groups


def _arrays(items: list[dict[str, Any]], with_scores: bool) -> tuple[np.ndarray, ...]:
    boxes = np.asarray([i["bbox"] for i in items], dtype=np.float64).reshape(-1, 4)
    classes = np.asarray([i["category_id"] for i in items], dtype=np.int64)
    if not with_scores:
        return boxes, classes
    return boxes, classes, np.asarray([i.get("score", 1.0) for i in items], dtype=np.float64)


def scored_matches(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *,
                   iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """``(scores, classes, is_true_positive)`` of every detection (class-aware matching) and
    the number of ground-truth boxes per category id."""
    scores, classes, hits = [], [], []
    gt_counts: dict[int, int] = defaultdict(int)
    for anns, dets in _by_image(gt, predictions).values():
        gt_boxes, gt_classes = _arrays(anns, False)
        for c in gt_classes:
            gt_counts[int(c)] += 1
        if not dets:
            continue
        det_boxes, det_classes, det_scores = _arrays(dets, True)
        matched = greedy_match(gt_boxes, gt_classes, det_boxes, det_classes, det_scores, iou=iou)
        scores.append(det_scores)
        classes.append(det_classes)
        hits.append(matched >= 0)
    if not scores:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), dict(gt_counts)
    return np.concatenate(scores), np.concatenate(classes), np.concatenate(hits), dict(gt_counts)


def prf_at(scores: np.ndarray, hits: np.ndarray, num_gt: int,
           thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 keeping the detections scored at least each threshold.
    With no detection kept, precision is 1 (nothing wrong was said) and F1 is 0."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_hits = scores[order], hits[order].astype(np.int64)
    tp_cum = np.concatenate([[0], np.cumsum(sorted_hits)])
    # kept(t) = number of detections with score >= t (scores sorted descending)
    kept = np.searchsorted(-sorted_scores, -np.asarray(thresholds, dtype=np.float64), side="right")
    tp = tp_cum[kept].astype(np.float64)
    precision = np.where(kept > 0, tp / np.maximum(kept, 1), 1.0)
    recall = tp / num_gt if num_gt else np.zeros(len(kept))
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return precision, recall, f1


def f1_curve(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *, iou: float = 0.5,
             steps: int = 101) -> dict[str, Any]:
    """F1 (and precision, recall) against the confidence threshold, over all classes
    (micro) and per class; ``best_threshold`` maximises the overall F1 (the lowest such
    threshold on a tie)."""
    thresholds = np.linspace(0.0, 1.0, steps)
    scores, classes, hits, gt_counts = scored_matches(gt, predictions, iou=iou)
    precision, recall, f1 = prf_at(scores, hits, sum(gt_counts.values()), thresholds)
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    per_class = {}
    for cat_id, name in names.items():
        keep = classes == cat_id
        per_class[name] = prf_at(scores[keep], hits[keep], gt_counts.get(cat_id, 0), thresholds)[2].tolist()
    best = int(np.argmax(f1))
    return {"iou": iou, "thresholds": thresholds.tolist(), "precision": precision.tolist(),
            "recall": recall.tolist(), "f1": f1.tolist(), "per_class_f1": per_class,
            "best_threshold": float(thresholds[best]), "best_f1": float(f1[best]),
            "num_ground_truth": int(sum(gt_counts.values())), "num_detections": int(len(scores))}


def confusion_matrix(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *, threshold: float,
                     iou: float = 0.5) -> dict[str, Any]:
    """Counts at ``threshold``: rows are the predicted class, columns the true class, the
    last row and column ``background``. Matching ignores the class (so a box found with
    the wrong class lands off the diagonal): a matched pair counts in [predicted, true], a
    missed object in [background, true], a detection of nothing in [predicted, background].
    The total is matched + missed + false detections."""
    categories = [c["id"] for c in gt.get("categories", [])]
    index = {cat: i for i, cat in enumerate(categories)}
    bg = len(categories)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    counts = {"matched": 0, "missed": 0, "false_detections": 0}
    for anns, dets in _by_image(gt, predictions).values():
        dets = [d for d in dets if d.get("score", 1.0) >= threshold and d["category_id"] in index]
        gt_boxes, gt_classes = _arrays(anns, False)
        det_boxes, det_classes, det_scores = _arrays(dets, True)
        matched = greedy_match(gt_boxes, gt_classes, det_boxes, det_classes, det_scores, iou=iou, same_class=False)
        for d, g in enumerate(matched):
            true = bg if g < 0 else index[int(gt_classes[g])]
            matrix[index[int(det_classes[d])], true] += 1
            counts["matched" if g >= 0 else "false_detections"] += 1
        found = set(matched[matched >= 0].tolist())
        for g, c in enumerate(gt_classes):
            if g not in found and int(c) in index:
                matrix[bg, index[int(c)]] += 1
                counts["missed"] += 1
    labels = [c["name"] for c in gt.get("categories", [])] + ["background"]
    return {"threshold": threshold, "iou": iou, "labels": labels, "matrix": matrix.tolist(), **counts}
