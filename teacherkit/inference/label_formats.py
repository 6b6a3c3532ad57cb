"""``teacherkit label --format``: the COCO file is always written (it is what ``--resume``
and ``label --data`` work from); ``yolo`` and ``yolo-seg`` also write it as an Ultralytics
dataset (:func:`teacherkit.inference.student_formats.write_yolo_dataset`) in the folder
next to it, ``<output stem>-yolo/`` (``runs/label/exp/labels-yolo/`` by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.errors import OutputExistsError, TeacherkitError

FORMATS = ("coco", "yolo", "yolo-seg")


@dataclass(frozen=True)
class FormatRequest:
    """What ``--format`` and its options asked for."""

    name: str = "coco"
    val_fraction: float = 0.0
    link_images: str = "symlink"
    seed: int = 0

    def __post_init__(self) -> None:
        from teacherkit.inference.student_formats import LINK_MODES

        if self.name not in FORMATS:
            raise TeacherkitError(f"--format {self.name}: expected one of {', '.join(FORMATS)}")
        if self.link_images not in LINK_MODES:
            raise TeacherkitError(f"--link-images {self.link_images}: expected one of {', '.join(LINK_MODES)}")
        if not 0.0 <= self.val_fraction < 1.0:  # also refuses NaN
            raise TeacherkitError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.val_fraction and self.name == "coco":
            raise TeacherkitError("--val-fraction splits a YOLO dataset: give --format yolo or yolo-seg")

    @property
    def yolo(self) -> bool:
        return self.name != "coco"


def yolo_dir(output: Path) -> Path:
    """Where the YOLO dataset of the COCO file ``output`` goes."""
    return output.with_name(f"{output.stem}-yolo")


def check_format_output(request: FormatRequest, output: Path, *, overwrite: bool) -> None:
    """Refuse, before any labelling, a YOLO folder that exists without ``--overwrite``."""
    if not request.yolo:
        return
    folder = yolo_dir(output)
    if folder.exists() and not overwrite:
        raise OutputExistsError(f"--format {request.name}: {folder} already exists; use --overwrite to replace it")


def write_format(request: FormatRequest, output: Path, images: Path, *, overwrite: bool) -> Any:
    """Write the YOLO dataset of the finished COCO file ``output`` (``None`` for ``coco``).
    The score cut was made while labelling, so every annotation in the file is kept; a box
    whose mask came out empty has no polygon and is left out of ``yolo-seg`` (counted)."""
    if not request.yolo:
        return None
    from teacherkit.inference.student_formats import write_yolo_dataset

    return write_yolo_dataset(output, images, yolo_dir(output), segments=request.name == "yolo-seg",
                              val_fraction=request.val_fraction, seed=request.seed,
                              link_images=request.link_images, overwrite=overwrite,
                              drop_boxes_without_mask=request.name == "yolo-seg")


def describe(report: Any) -> str:
    """One line about the YOLO dataset written."""
    images = ", ".join(f"{n} {split}" for split, n in report.images.items() if n)
    objects = sum(report.objects.values())
    extra = f"; {report.without_mask} boxes without a mask left out" if report.without_mask else ""
    return (f"YOLO dataset: {images} images, {objects} objects, {len(report.classes)} classes{extra} -> "
            f"{report.output / 'data.yaml'}")
