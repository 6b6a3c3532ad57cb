"""Pseudo-labels for a folder of images: box teacher → mask teacher → one COCO file.

Every image of ``--images`` is accounted for in the output: labelled (in ``images``), or
listed in ``info.images_failed`` as ``{"file_name", "reason"}`` (unreadable, too many pixels
to decode safely, a link leaving the folder, ...); ``info.images_total`` counts both.

Progress is appended to ``<output>.partial.jsonl`` (one JSON record per image, fsynced per
batch), so ``--resume`` continues after a crash, a full disk or Ctrl-C. A record cut by a
crash (and anything after it) is truncated away, with a warning, before appending; the
images it named are labelled again. The COCO file is written atomically at the end and
only then is the partial file removed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_text
from teacherkit.errors import (
    DataError,
    OutputError,
    OutputExistsError,
    TeacherkitError,
    check_output_file,
    describe_os_error,
)
from teacherkit.out_of_memory import is_out_of_memory

log = logging.getLogger("teacherkit.label")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class LabelReport:
    output: Path
    images: int = 0
    labelled: int = 0
    annotations: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): info.images_failed
    resumed_from: int = 0
    with_masks: bool = False
    empty_masks: int = 0  # boxes whose SAM mask came out empty (kept as boxes without segmentation)


@dataclass
class PartialLog:
    """What a partial file holds: the good records before the first bad line."""

    records: dict[str, dict[str, Any]]
    good_bytes: int  # the file is truncated to this length before appending
    bad_line: int | None = None  # 1-based number of the first unreadable line
    dropped_lines: int = 0  # lines from bad_line on


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


def _valid_record(record: Any) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
        return False
    if "error" in record:
        return isinstance(record["error"], str)
    return (isinstance(record.get("width"), int) and isinstance(record.get("height"), int)
            and isinstance(record.get("detections"), list))


def read_partial(path: Path) -> PartialLog:
    """The records of a partial file up to its first bad line (not JSON, not a record, or
    without its newline: a write cut by a crash); nothing after it is trusted."""
    if not path.exists():
        return PartialLog({}, 0)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the partial file: {describe_os_error(exc)}") from None
    records: dict[str, dict[str, Any]] = {}
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the piece after the last newline is incomplete
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not _valid_record(record):
            return PartialLog(records, offset, number, sum(1 for rest in lines[number - 1:] if rest.strip()))
        records[record["file_name"]] = record
        offset += len(line) + 1
    if lines[-1].strip():
        return PartialLog(records, offset, len(lines), 1)
    return PartialLog(records, offset)


def _resume_from(partial: Path) -> PartialLog:
    """The partial file's good records, after cutting off a torn or unreadable tail."""
    state = read_partial(partial)
    if state.bad_line is not None:
        log.warning("%s: line %d is not a complete record (cut by a crash?); %d line(s) from there are dropped "
                    "and their images labelled again", partial, state.bad_line, state.dropped_lines)
        try:
            os.truncate(partial, state.good_bytes)
        except OSError as exc:
            raise OutputError(f"{partial}: cannot truncate the partial file: {describe_os_error(exc)}") from None
    return state


def check_label_output(output: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse, before any work, an ``--output`` that exists (without ``--overwrite``), is a
    folder, or cannot be written, and a partial run not asked to resume."""
    partial = partial_path(output)
    check_output_file(output, "--output")
    if partial.is_dir():
        raise OutputError(f"--output {output}: {partial} is a folder; remove it")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    if partial.exists() and not resume:
        raise OutputExistsError(f"{partial} holds a partial run; continue it with --resume or delete it")


def outside_links(files: list[Path], folder: Path) -> set[Path]:
    """Files under ``folder`` that are links to files outside it (refused unless allowed)."""
    from teacherkit.data.image_files import outside_images_allowed

    if outside_images_allowed():
        return set()
    root = Path(folder).resolve()
    return {f for f in files if not f.resolve().is_relative_to(root)}


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
    """Label every image under ``images_dir`` and write a COCO file to ``output`` (see the
    module docstring for what it holds and how ``resume`` works).

    :raises OutputError: ``output`` cannot be written (checked before any work; a write
        failing later keeps the partial file for ``--resume``).
    """
    from teacherkit.data.image_files import refuse_decompression_bombs

    output, images_dir = Path(output), Path(images_dir)
    partial = partial_path(output)
    check_label_output(output, overwrite=overwrite, resume=resume)
    files = list_images(images_dir)
    wanted = _class_filter(experiment, classes)
    rel = {f: f.relative_to(images_dir).as_posix() for f in files}
    refused = outside_links(files, images_dir)
    refuse_decompression_bombs()

    boxes = experiment.teacher(experiment.box_teacher_name("labelling"), adapter_scale=adapter_scale,
                               overrides=overrides)
    masks = experiment.mask_teacher(adapter_scale=adapter_scale)
    report = LabelReport(output=output, images=len(files), with_masks=masks is not None)

    done = _resume_from(partial).records if resume else {}
    report.resumed_from = sum(1 for f in files if rel[f] in done)
    todo = [f for f in files if rel[f] not in done]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "a", encoding="utf-8") as out:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                for record in _label_or_explain(experiment, boxes, masks, chunk, rel, wanted, refused,
                                                (batch_size, partial)):
                    out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                if progress:
                    progress(report.resumed_from + start + len(chunk), len(files))
        coco = _to_coco(experiment, files, rel, _final_records(partial, rel), report)
        atomic_write_text(output, json.dumps(coco) + "\n")
    except OSError as exc:
        kept = f"; the images labelled so far are kept in {partial}: continue with --resume" if partial.exists() else ""
        raise OutputError(f"--output {output}: {describe_os_error(exc)}{kept}") from None
    partial.unlink(missing_ok=True)
    return report


def _label_or_explain(experiment: Any, boxes: Any, masks: Any, chunk: list[Path], rel: dict[Path, str],
                      wanted: set[int] | None, refused: set[Path], run: tuple[int, Path]) -> list[dict[str, Any]]:
    """:func:`_label_chunk`, with an out-of-memory error turned into one message (``run``:
    the ``--batch-size`` and the partial file, for that message)."""
    try:
        return _label_chunk(experiment, boxes, masks, chunk, rel, wanted, refused)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, boxes, masks, *run) from exc


def _out_of_memory(exc: BaseException, boxes: Any, masks: Any, batch_size: int, partial: Path) -> Exception:
    """The out-of-memory message of ``label``: which teacher ran out (the one whose frame
    raised: both run inside one prediction call), what to try, what was kept."""
    import traceback

    from teacherkit.out_of_memory import labelling_advice, out_of_memory_error

    culprit = boxes
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        if masks is not None and frame.f_locals.get("self") is masks:
            culprit = masks
    return out_of_memory_error(
        culprit.spec.name, batch_size, culprit.device, doing="labelling",
        advice=labelling_advice(batch_size, has_masks=masks is not None),
        kept=f"The images labelled so far are kept in {partial}; continue with the same command plus --resume and "
             "the changes above.",
    )


def _final_records(partial: Path, rel: dict[Path, str]) -> dict[str, dict[str, Any]]:
    """Every record of the finished partial file; a bad line now (written by this run) or
    records of images no longer in the folder are said, not passed over."""
    state = read_partial(partial)
    if state.bad_line is not None:
        raise DataError(f"{partial}: line {state.bad_line} is not a complete record; run again with --resume "
                        "to label its images again")
    gone = len(set(state.records) - set(rel.values()))
    if gone:
        log.warning("%s: %d record(s) name images no longer under --images; they are left out", partial, gone)
    return state.records


#: Detection fields a pseudo-label keeps.
_KEPT_FIELDS = ("bbox", "category_id", "score", "segmentation", "mask_score")


def _read_pixels(path: Path, refused: set[Path]) -> tuple[np.ndarray | None, str | None]:
    """An image's pixels, or why it cannot be labelled (the run goes on without it)."""
    from teacherkit.data.image_files import ALLOW_HINT, bomb_reason, is_decompression_bomb
    from teacherkit.data.samples import read_image

    if path in refused:
        return None, f"a link to a file outside --images; refused ({ALLOW_HINT})"
    try:
        return read_image(path), None
    except DataError as exc:
        return None, str(exc)
    except Exception as exc:  # any decoder failure of one file must not stop the other images
        if is_decompression_bomb(exc):
            return None, f"{path}: {bomb_reason(exc)}"
        return None, f"{path}: cannot read image: {type(exc).__name__}: {exc}"


def _label_chunk(experiment: Any, boxes: Any, masks: Any, chunk: list[Path], rel: dict[Path, str],
                 wanted: set[int] | None, refused: set[Path]) -> list[dict[str, Any]]:
    """One partial-file record per image of ``chunk``: its detections, or why it failed."""
    from teacherkit.inference.experiment import predict_images

    records: list[dict[str, Any]] = []
    pixels, ok = [], []
    for path in chunk:
        image, reason = _read_pixels(path, refused)
        if image is None:
            records.append({"file_name": rel[path], "error": reason})
        else:
            pixels.append(image)
            ok.append(path)
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


def _clip(det: dict[str, Any], width: int, height: int) -> list[float] | None:
    x, y, w, h = (float(v) for v in det["bbox"])
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def _to_coco(experiment: Any, files: list[Path], rel: dict[Path, str], records: dict[str, dict[str, Any]],
             report: LabelReport) -> dict[str, Any]:
    from teacherkit.data.masks import segmentation_to_mask

    images, annotations = [], []
    ann_id = 1
    for image_id, path in enumerate(files, start=1):
        record = records.get(rel[path]) or {"error": "no record in the partial file (not labelled)"}
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
                where = f"pseudo-label of {rel[path]} (category {det['category_id']}, box {bbox})"
                mask = segmentation_to_mask(det["segmentation"], height, width, where=where)
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
                 "teachers": experiment.teacher_names, "empty_masks": report.empty_masks,
                 "images_total": len(files),
                 "images_failed": [{"file_name": name, "reason": reason} for name, reason in report.skipped]},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(c["id"]), "name": str(c["name"]), "supercategory": c.get("supercategory", "")}
                       for c in experiment.info.categories],
    }
