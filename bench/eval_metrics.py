"""Per-epoch evaluation cost of a mask teacher: teacherkit's metrics next to the plain way.

The plain way (the reference, what a loop written from pycocotools' docs does, and what
teacherkit did before): each epoch, decode every ground-truth and predicted mask to pixels
for IoU and dice, and build pycocotools' ``COCO`` index of the ground truth again for COCOeval.
teacherkit: IoU and dice on run-length encodings, the ground truth encoded and indexed once
per run (``teacherkit.evaluation.run.evaluator``). Both give the same numbers (checked here).

    python bench/eval_metrics.py                       # 200 images of 640x480, 7 masks each, 3 epochs
    python bench/eval_metrics.py --images 50 --json-out bench/results/eval_metrics-DATE.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils


def ellipse(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.05, 0.2) * w
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask))
    return {"size": out["size"], "counts": out["counts"].decode("ascii")}


def dataset(images: int, per_image: int, h: int, w: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    preds = []
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for j in range(per_image):
            mask = ellipse(rng, h, w)
            ann_id = i * 100 + j
            box = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).tolist()
            gt["annotations"].append({"id": ann_id, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": 0,
                                      "area": float(mask.sum()), "segmentation": rle(mask)})
            shifted = np.roll(mask, int(rng.integers(-6, 7)), axis=1)
            preds.append({"image_id": i, "annotation_id": ann_id, "category_id": 1, "score": float(rng.random()),
                          "segmentation": rle(shifted)})
    return gt, preds


def plain_epoch(gt: dict, preds: list[dict]) -> float:
    """mIoU by decoding every mask, and COCOeval segm on a freshly built index."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    by_ann = {p["annotation_id"]: p for p in preds}
    ious = []
    for ann in gt["annotations"]:
        truth = mask_utils.decode({"size": ann["segmentation"]["size"],
                                   "counts": ann["segmentation"]["counts"].encode()}).astype(bool)
        seg = by_ann[ann["id"]]["segmentation"]
        pred = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        union = np.logical_or(pred, truth).sum()
        ious.append(float(np.logical_and(pred, truth).sum() / union) if union else 1.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(preds)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(np.mean(ious))


def timed(fn, *args) -> tuple[float, object]:
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-image", type=int, default=7)
    parser.add_argument("--size", default="480x640", help="HxW of the images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    gt, preds = dataset(args.images, args.per_image, h, w)
    from teacherkit.evaluation.run import evaluator

    evaluate = evaluator("prompted_mask", gt)
    rows = []
    for epoch in range(1, args.epochs + 1):
        plain_s, plain_miou = timed(plain_epoch, gt, copy.deepcopy(preds))
        ours_s, ours = timed(evaluate, copy.deepcopy(preds))
        assert abs(ours["mIoU"] - plain_miou) < 1e-9, (ours["mIoU"], plain_miou)
        rows.append({"epoch": epoch, "plain_cpu_s": round(plain_s, 3), "teacherkit_cpu_s": round(ours_s, 3),
                     "ratio": round(plain_s / max(ours_s, 1e-9), 2)})
        print(f"epoch {epoch}: plain {plain_s:7.2f} s   teacherkit {ours_s:7.2f} s   "
              f"{plain_s / max(ours_s, 1e-9):5.1f}x faster (CPU seconds; same mIoU {plain_miou:.4f})")
    if args.json_out:
        import pycocotools

        import teacherkit

        record = {"benchmark": "eval_metrics", "date": time.strftime("%Y-%m-%d"),
                  "machine": {"platform": platform.platform(), "processor": platform.processor(),
                              "cpus": __import__("os").cpu_count()},
                  "versions": {"python": platform.python_version(), "teacherkit": teacherkit.__version__,
                               "numpy": np.__version__, "pycocotools": getattr(pycocotools, "__version__", "?")},
                  "command": "python bench/eval_metrics.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "settings": {"images": args.images, "per_image": args.per_image, "size": args.size},
                  "unit": "CPU seconds per epoch of evaluation (mIoU + COCO segm AP)", "rows": rows}
        args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
