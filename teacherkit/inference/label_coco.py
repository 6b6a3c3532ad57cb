"""The COCO file of ``teacherkit label``, written as a stream: one image's record is read,
turned into its image and annotation entries and written before the next is read, so
memory does not grow with the number of images.

Annotations are spilled to a temporary file next to the output while the ``images`` array
is written, then copied after it; ``info`` (counts, failures, thresholds) comes last, when
the counts are known. The file is written aside and renamed into place (atomic), like
every output teacherkit writes. Image ids follow the sorted order of ``--images`` and
annotation ids count up in that order, whoever labelled which image.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from teacherkit.atomic import atomic_writer

NOT_LABELLED = "no record in the partial file (not labelled)"


def clip_box(det: dict[str, Any], width: int, height: int) -> list[float] | None:
    """The detection's box inside the image, rounded, or ``None`` when nothing is left."""
    x, y, w, h = (float(v) for v in det["bbox"])
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


class _Counts:
    """What ``info`` reports, gathered while streaming."""

    def __init__(self) -> None:
        self.labelled = 0
        self.annotations = 0
        self.empty_masks = 0
        self.below_threshold = 0
        self.per_class: Counter[int] = Counter()
        self.failed: list[tuple[str, str]] = []


def _annotations(record: dict[str, Any], image_id: int, next_id: int, counts: _Counts) -> list[dict[str, Any]]:
    """The annotation entries of one labelled image, ids from ``next_id``."""
    from teacherkit.data.masks import segmentation_to_mask

    width, height, name = record["width"], record["height"], record["file_name"]
    out: list[dict[str, Any]] = []
    for det in record["detections"]:
        bbox = clip_box(det, width, height)
        if bbox is None:
            continue
        ann: dict[str, Any] = {"id": next_id + len(out), "image_id": image_id,
                               "category_id": int(det["category_id"]), "bbox": bbox,
                               "score": round(float(det["score"]), 5), "iscrowd": 0,
                               "area": round(bbox[2] * bbox[3], 2)}
        if det.get("segmentation"):
            where = f"pseudo-label of {name} (category {det['category_id']}, box {bbox})"
            mask = segmentation_to_mask(det["segmentation"], height, width, where=where)
            if mask.any():
                ann["segmentation"] = det["segmentation"]
                ann["area"] = float(np.count_nonzero(mask))
                ann["mask_score"] = round(float(det.get("mask_score", 0.0)), 5)
            else:
                counts.empty_masks += 1
        out.append(ann)
        counts.per_class[ann["category_id"]] += 1
    return out


def _write_array(out: IO[str], first: bool, entry: dict[str, Any]) -> None:
    out.write(("" if first else ", ") + json.dumps(entry))


def write_coco(output: Path, names: Sequence[str], record_of: Callable[[str], dict[str, Any] | None],
               categories: list[dict[str, Any]], info: dict[str, Any]) -> _Counts:
    """Write the COCO file of ``names`` (image ``i`` of the sorted list gets id ``i + 1``),
    reading each record with ``record_of`` (``None``: never labelled); ``info`` gets the
    counts and failures added. Returns the counts."""
    counts = _Counts()
    cats = [{"id": int(c["id"]), "name": str(c["name"]), "supercategory": c.get("supercategory", "")}
            for c in categories]
    with atomic_writer(output, "w") as out, tempfile.TemporaryFile("w+", encoding="utf-8", dir=output.parent) as spill:
        out.write('{"images": [')
        for image_id, name in enumerate(names, start=1):
            record = record_of(name) or {"error": NOT_LABELLED}
            if "error" in record:
                counts.failed.append((name, record["error"]))
                continue
            _write_array(out, counts.labelled == 0, {"id": image_id, "file_name": name,
                                                     "width": record["width"], "height": record["height"]})
            counts.labelled += 1
            counts.below_threshold += int(record.get("below_threshold", 0))
            for ann in _annotations(record, image_id, counts.annotations + 1, counts):
                _write_array(spill, counts.annotations == 0, ann)
                counts.annotations += 1
        out.write('], "annotations": [')
        spill.seek(0)
        shutil.copyfileobj(spill, out)
        by_id = {c["id"]: c["name"] for c in cats}
        info = {**info, "images_total": len(names), "images_labelled": counts.labelled,
                "annotations": counts.annotations,
                "annotations_per_class": {by_id.get(k, str(k)): counts.per_class[k] for k in sorted(counts.per_class)},
                "below_score_threshold": counts.below_threshold, "empty_masks": counts.empty_masks,
                "images_failed": [{"file_name": n, "reason": r} for n, r in counts.failed]}
        out.write(f'], "categories": {json.dumps(cats)}, "info": {json.dumps(info)}}}\n')
    return counts
