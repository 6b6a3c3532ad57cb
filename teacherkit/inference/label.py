"""Pseudo-labels for a folder of images: box teacher → mask teacher → one COCO file.

Progress is appended to ``<output>.partial.jsonl`` (one line per image, fsynced per batch),
so ``--resume`` continues after a crash or Ctrl-C; the COCO file itself is written
atomically at the end and the partial file removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_text
from teacherkit.errors import DataError, OutputExistsError, TeacherkitError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class LabelReport:
    output: Path
    images: int = 0
    labelled: int = 0
    annotations: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    resumed_from: int = 0
    with_masks: bool = False
    empty_masks: int = 0  # boxes whose SAM mask came out empty (kept as boxes without segmentation)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial.jsonl")


def _read_partial(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by a crash: that image is simply labelled again
        done[record["file_name"]] = record
    return done


def _clip(det: dict[str, Any], width: int, height: int) -> list[float] | None:
    x, y, w, h = (float(v) for v in det["bbox"])
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def label_images(
    experiment: Any,
    images_dir: Path,
    output: Path,
    *,
    classes: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 4,
    resume: bool = False,
    overwrite: bool = False,
    adapter_scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> LabelReport:
    """Label every image under ``images_dir`` and write a COCO file to ``output``."""
    output = Path(output)
    partial = partial_path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    if partial.exists() and not resume:
        raise OutputExistsError(f"{partial} holds a partial run; continue it with --resume or delete it")
    files = list_images(images_dir)
    wanted = _class_filter(experiment, classes)

    boxes = experiment.teacher(experiment.box_teacher_name("labelling"), adapter_scale=adapter_scale,
                               overrides=overrides)
    masks = experiment.mask_teacher(adapter_scale=adapter_scale)
    report = LabelReport(output=output, images=len(files), with_masks=masks is not None)

    done = _read_partial(partial) if resume else {}
    report.resumed_from = len(done)
    rel = {f: f.relative_to(images_dir).as_posix() for f in files}
    todo = [f for f in files if rel[f] not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as log:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for record in _label_chunk(experiment, boxes, masks, chunk, rel, wanted):
                log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            if progress:
                progress(report.resumed_from + start + len(chunk), len(files))

    records = _read_partial(partial)
    coco = _to_coco(experiment, files, rel, records, report)
    atomic_write_text(output, json.dumps(coco) + "\n")
    partial.unlink(missing_ok=True)
    return report


#: Detection fields a pseudo-label keeps.
_KEPT_FIELDS = ("bbox", "category_id", "score", "segmentation", "mask_score")


def _label_chunk(experiment: Any, boxes: Any, masks: Any, chunk: list[Path], rel: dict[Path, str],
                 wanted: set[int] | None) -> list[dict[str, Any]]:
    """One partial-file record per image of ``chunk``: its detections, or why it failed."""
    from teacherkit.data.samples import read_image
    from teacherkit.inference.experiment import predict_images

    records: list[dict[str, Any]] = []
    pixels, ok = [], []
    for path in chunk:
        try:
            pixels.append(read_image(path))
            ok.append(path)
        except DataError as exc:
            records.append({"file_name": rel[path], "error": str(exc)})
    if not ok:
        return records
    results = predict_images(boxes, masks, pixels, range(len(ok)), experiment.class_name)
    for path, img, dets in zip(ok, pixels, results, strict=True):
        h, w = img.shape[:2]
        kept = [d for d in dets if wanted is None or d["category_id"] in wanted]
        records.append({"file_name": rel[path], "width": int(w), "height": int(h),
                        "detections": [{k: v for k, v in d.items() if k in _KEPT_FIELDS} for d in kept]})
    return records


def _class_filter(experiment: Any, classes: list[str] | None) -> set[int] | None:
    if not classes:
        return None
    import difflib

    by_name = {str(c["name"]): int(c["id"]) for c in experiment.info.categories}
    wanted = set()
    for name in classes:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TeacherkitError(f"--classes {name!r}: not a class of this experiment{hint}; classes: "
                                  f"{', '.join(by_name)}")
        wanted.add(by_name[name])
    return wanted


def _to_coco(experiment: Any, files: list[Path], rel: dict[Path, str], records: dict[str, dict[str, Any]],
             report: LabelReport) -> dict[str, Any]:
    from teacherkit.data.masks import segmentation_to_mask

    images, annotations = [], []
    ann_id = 1
    for image_id, path in enumerate(files, start=1):
        record = records.get(rel[path])
        if record is None:
            continue
        if "error" in record:
            report.skipped.append((rel[path], record["error"]))
            continue
        width, height = record["width"], record["height"]
        images.append({"id": image_id, "file_name": rel[path], "width": width, "height": height})
        report.labelled += 1
        for det in record["detections"]:
            bbox = _clip(det, width, height)
            if bbox is None:
                continue
            ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": int(det["category_id"]),
                                   "bbox": bbox, "score": round(float(det["score"]), 5), "iscrowd": 0,
                                   "area": round(bbox[2] * bbox[3], 2)}
            if det.get("segmentation"):
                mask = segmentation_to_mask(det["segmentation"], height, width)
                if mask.any():
                    ann["segmentation"] = det["segmentation"]
                    ann["area"] = float(np.count_nonzero(mask))
                    ann["mask_score"] = round(float(det.get("mask_score", 0.0)), 5)
                else:
                    report.empty_masks += 1
            annotations.append(ann)
            ann_id += 1
    report.annotations = len(annotations)
    return {
        "info": {"description": f"pseudo-labels by teacherkit from {experiment.path}",
                 "teachers": experiment.teacher_names, "empty_masks": report.empty_masks},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(c["id"]), "name": str(c["name"]), "supercategory": c.get("supercategory", "")}
                       for c in experiment.info.categories],
    }
