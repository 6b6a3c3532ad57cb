"""One batch of ``teacherkit label``, its images read by
:mod:`~teacherkit.inference.label_loader`: find boxes, keep those the class filter and the
score cut keep, prompt SAM with the kept ones only, and turn the result into one shard
record per image (its detections, or why it could not be labelled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.inference.label_loader import LoadedImage
from teacherkit.inference.label_thresholds import ScoreThresholds
from teacherkit.out_of_memory import is_out_of_memory

#: Detection fields a pseudo-label keeps.
_KEPT_FIELDS = ("bbox", "category_id", "score", "segmentation", "mask_score")


@dataclass
class Labeller:
    """What every batch of one run shares: the loaded teachers and the filters."""

    experiment: Any
    boxes: Any
    masks: Any
    rel: dict[Path, str]  # image path -> file_name in the output
    refused: set[Path]  # links out of --images
    wanted: set[int] | None = None  # --classes, as ids (None: all)
    thresholds: ScoreThresholds | None = None

    def split(self, detections: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The detections kept, and how many of the wanted classes fell under the score cut."""
        wanted = [d for d in detections if self.wanted is None or d["category_id"] in self.wanted]
        if self.thresholds is None or not self.thresholds.active:
            return wanted, 0
        kept = [d for d in wanted if self.thresholds.keeps(d)]
        return kept, len(wanted) - len(kept)


def label_or_explain(job: Labeller, chunk: list[LoadedImage], batch_size: int, partial: Path) -> list[dict[str, Any]]:
    """:func:`label_chunk`, with an out-of-memory error turned into one message (naming the
    ``--batch-size`` and the shard file that keeps what is done)."""
    try:
        return label_chunk(job, chunk)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, job.boxes, job.masks, batch_size, partial) from exc


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
             "another --batch-size or --device. Settings that change the labels (--box-threshold) are refused on "
             "--resume: for those, delete the partial files next to it and start over.",
    )



def label_chunk(job: Labeller, chunk: list[LoadedImage]) -> list[dict[str, Any]]:
    """One shard record per image of ``chunk``: its detections, or why it failed (failures
    first, as the images were read)."""
    records: list[dict[str, Any]] = [{"file_name": job.rel[item.path], "error": item.reason}
                                     for item in chunk if item.pixels is None]
    ok = [item for item in chunk if item.pixels is not None]
    if not ok:
        return records
    for item, (kept, below) in zip(ok, predict_kept(job, ok), strict=True):
        h, w = item.pixels.shape[:2]
        record = {"file_name": job.rel[item.path], "width": int(w), "height": int(h),
                  "detections": [{k: v for k, v in d.items() if k in _KEPT_FIELDS} for d in kept]}
        if below:
            record["below_threshold"] = below
        records.append(record)
    return records


def predict_kept(job: Labeller, images: list[LoadedImage]) -> list[tuple[list[dict[str, Any]], int]]:
    """Per image: the detections kept (with SAM's masks when the experiment has SAM), and
    the number cut by score. SAM is prompted after the cut, so it segments kept boxes only.
    The box teacher's inputs are those a reader built, when it did."""
    from teacherkit.inference.experiment import add_masks, predict_images

    pixels = [item.pixels for item in images]
    prepared = [item.prepared for item in images]
    found = predict_images(job.boxes, None, pixels, range(len(pixels)), job.experiment.class_name,
                           prepared=prepared if all(p is not None for p in prepared) else None)
    results = []
    for image_id, (image, detections) in enumerate(zip(pixels, found, strict=True)):
        kept, below = job.split(detections)
        if job.masks is not None:
            add_masks(job.masks, image, image_id, kept)
        results.append((kept, below))
    return results
