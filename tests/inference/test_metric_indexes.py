"""Per-epoch metrics without per-epoch rebuilding: prompted-mask IoU and dice computed on
RLEs agree with the pixels, and a ground truth indexed once scores later epochs exactly as
pycocotools does from scratch."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from teacherkit.evaluation.mask_metrics import MaskTruth, iou_and_dice, prompted_mask_metrics
from teacherkit.evaluation.run import GroundTruth, evaluator, metrics_for


def _blob(rng, h, w):
    mask = np.zeros((h, w), np.uint8)
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    mask[y : y + rng.integers(2, h - y), x : x + rng.integers(2, w - x)] = 1
    mask[rng.random((h, w)) < 0.05] ^= 1  # ragged edges: many runs
    return mask


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _dataset(seed=0, images=3, per_image=4, h=48, w=64):
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    masks, preds = {}, []
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for j in range(per_image):
            ann_id = i * 10 + j
            mask = _blob(rng, h, w)
            masks[ann_id] = mask
            bbox = list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).tolist())
            seg = _rle(mask) if j % 2 else [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                             bbox[0] + bbox[2], bbox[1] + bbox[3]]]  # a polygon too
            gt["annotations"].append({"id": ann_id, "image_id": i, "category_id": 1 + j % 2, "bbox": bbox,
                                      "area": float(mask.sum()), "iscrowd": 0, "segmentation": seg})
            if j == 3:
                continue  # an instance without a prediction counts 0
            pred = np.zeros_like(mask) if j == 2 else _blob(rng, h, w) | mask * (rng.random((h, w)) < 0.7)
            preds.append({"image_id": i, "annotation_id": ann_id, "category_id": 1 + j % 2, "score": 0.9 - 0.1 * j,
                          "segmentation": _rle(pred.astype(np.uint8))})
    return gt, preds


def _pixel_reference(gt, preds):
    """The same metric the slow way: decode both masks to pixels and count."""
    by_ann = {p["annotation_id"]: p for p in preds}
    ious, dices = [], []
    for ann in gt["annotations"]:
        img = next(i for i in gt["images"] if i["id"] == ann["image_id"])
        h, w = img["height"], img["width"]
        seg = ann["segmentation"]
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else \
            {"size": seg["size"], "counts": seg["counts"].encode()}
        truth = mask_utils.decode(rle).astype(bool)
        pred = by_ann.get(ann["id"])
        if pred is None:
            ious.append(0.0)
            dices.append(0.0)
            continue
        seg = pred["segmentation"]
        pixels = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        iou, dice = iou_and_dice(pixels, truth)
        ious.append(iou)
        dices.append(dice)
    return float(np.mean(ious)), float(np.mean(dices))


def test_rle_iou_and_dice_agree_with_the_decoded_pixels():
    gt, preds = _dataset()
    result = prompted_mask_metrics(gt, preds)
    miou, mdice = _pixel_reference(gt, preds)
    assert result["mIoU"] == pytest.approx(miou, abs=1e-9) and result["mDice"] == pytest.approx(mdice, abs=1e-9)
    assert result["num_instances"] == 12 and result["num_predicted"] == 9
    assert 0.0 < result["mIoU"] < 1.0  # neither all-perfect nor all-zero: the comparison means something


def test_two_empty_masks_agree_and_an_empty_prediction_scores_zero():
    gt, _ = _dataset(images=1, per_image=1)
    empty = np.zeros((48, 64), np.uint8)
    gt["annotations"][0]["segmentation"] = _rle(empty)
    pred = [{"image_id": 1, "annotation_id": gt["annotations"][0]["id"], "segmentation": _rle(empty)}]
    assert prompted_mask_metrics(gt, pred)["mIoU"] == 1.0 and prompted_mask_metrics(gt, pred)["mDice"] == 1.0
    gt, _ = _dataset(images=1, per_image=1)
    assert prompted_mask_metrics(gt, pred)["mIoU"] == 0.0


def test_a_prediction_of_the_wrong_size_is_named():
    from teacherkit.data.masks import SegmentationError

    gt, preds = _dataset(images=1)
    preds[0]["segmentation"] = _rle(np.zeros((10, 10), np.uint8))
    with pytest.raises(SegmentationError, match=r"prediction for ground truth annotation 10: RLE size"):
        prompted_mask_metrics(MaskTruth(gt), preds)


def _pycocotools_from_scratch(gt, preds, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator_ = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(preds)), iou_type)
        evaluator_.evaluate()
        evaluator_.accumulate()
        evaluator_.summarize()
    return [max(float(s), 0.0) for s in evaluator_.stats]


@pytest.mark.parametrize("kind", ["bbox", "prompted_mask"])
def test_a_ground_truth_indexed_once_scores_every_epoch_as_pycocotools_from_scratch(kind):
    gt, preds = _dataset(seed=3)
    for p in preds:
        p["bbox"] = list(mask_utils.toBbox({"size": p["segmentation"]["size"],
                                            "counts": p["segmentation"]["counts"].encode()}).tolist())
    evaluate = evaluator(kind, gt)
    prefix, iou_type = ("bbox", "bbox") if kind == "bbox" else ("segm", "segm")
    rng = np.random.default_rng(0)
    for _epoch in range(3):  # the scores change each epoch; the index is reused
        for p in preds:
            p["score"] = float(rng.random())
        got = evaluate([dict(p) for p in preds])
        want = _pycocotools_from_scratch(gt, [dict(p, segmentation=dict(p["segmentation"])) for p in preds], iou_type)
        assert [got[f"{prefix}_{n}"] for n in ("AP", "AP50", "AP75", "AR100")] == pytest.approx(
            [want[0], want[1], want[2], want[8]], abs=1e-12)


def test_the_index_is_built_once_and_reused():
    gt, preds = _dataset()
    truth = GroundTruth(gt)
    metrics_for("prompted_mask", truth, preds)
    built = (truth.coco("segm"), truth.masks())
    metrics_for("prompted_mask", truth, preds)
    assert (truth.coco("segm"), truth.masks()) == built and all(b is c for b, c in zip(built, (truth.coco("segm"),
                                                                                            truth.masks())))
