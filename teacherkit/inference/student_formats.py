"""Pseudo-labels as a dataset a student trainer reads as it is: the Ultralytics YOLO layout.

:func:`write_yolo_dataset` turns a COCO file (what ``teacherkit label`` writes) into::

    <output>/data.yaml                path (absolute), train, val, names (in class-index order)
    <output>/meta.json                source, classes (index -> category id), thresholds, counts
    <output>/images/{train,val}/NAME  the images (symbolic link, hard link or copy)
    <output>/labels/{train,val}/STEM.txt  one line per object; empty for an image without any

Choices a reader of the output needs to know (docs/student-formats.md says the same):

* Class index = position of the category id among the sorted category ids.
* Boxes: ``class cx cy w h``; polygons (``segments=True``): ``class x1 y1 x2 y2 ...``. All
  normalised by the image's width and height, in COCO's continuous pixel coordinates
  (pixel ``i`` spans ``[i, i+1]``), the frame of the COCO boxes.
* A polygon is the outline of the largest part of the mask (see
  :mod:`teacherkit.inference.mask_outline`): one object stays one line, holes are filled and
  smaller parts left out (counted in ``masks_simplified``).
* File names are flattened (``a/b/c.jpg`` -> ``a__b__c.jpg``): supervision reads one folder
  level, and Ultralytics finds a label by replacing the last ``/images/`` of the image path,
  which a sub-folder named ``images`` would break. Names whose stems would share a label file
  (``x.jpg`` and ``x.png``, or names equal but for case) get ``~<8 hex digits of the SHA-1 of
  the original name>`` before the extension.
* Split: the file names sorted, shuffled with ``random.Random(seed)``; the first
  ``round(val_fraction * n)`` (at least 1) are ``val``. Without a val split, data.yaml's
  ``val`` is the train folder (Ultralytics needs one).
* Thresholds: an object is kept when its ``score`` is at least its class's threshold; an
  annotation without a score (ground truth) is always kept.

Everything is checked before anything is written, the dataset is built in a sibling temp
folder and moved in at the end (:func:`teacherkit.atomic.atomic_dir`): a failure leaves the
output as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError, OutputError, OutputExistsError, TeacherkitError, check_output_dir

#: What Ultralytics reads as images (its IMG_FORMATS, minus formats teacherkit never labels).
YOLO_IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".dng", ".mpo"}
LINK_MODES = ("symlink", "hardlink", "copy")
META_FILE = "meta.json"
SPLITS = ("train", "val")


@dataclass
class YoloReport:
    output: Path
    classes: list[str]  # names in class-index order
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    objects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    below_threshold: int = 0  # annotations dropped by their class threshold
    without_mask: int = 0  # annotations dropped for want of a mask (drop_boxes_without_mask)
    masks_simplified: int = 0  # masks with holes or several parts, written as one outline


@dataclass
class _Image:
    file_name: str  # as in the COCO file, relative to images_dir
    source: Path
    target: str  # flattened name under images/<split>/
    width: int
    height: int
    where: str  # the COCO file (or "pseudo-labels"), for messages
    annotations: list[dict[str, Any]] = field(default_factory=list)


def write_yolo_dataset(
    coco: dict[str, Any] | Path,
    images_dir: Path,
    output: Path,
    *,
    segments: bool,
    val_fraction: float = 0.0,
    seed: int = 0,
    thresholds: dict[int, float] | float | None = None,
    link_images: str = "symlink",
    overwrite: bool = False,
    drop_boxes_without_mask: bool = False,
    source: dict[str, Any] | None = None,
) -> YoloReport:
    """Write the COCO pseudo-labels ``coco`` (a dict, or the path of a COCO JSON file) of
    the images under ``images_dir`` as an Ultralytics YOLO dataset in the folder ``output``
    (see the module docstring for the layout and conventions).

    :param segments: polygons from the masks (``yolo-seg``) instead of boxes (``yolo``).
    :param val_fraction: share of the images in ``val`` (``0``: all in train), drawn with ``seed``.
    :param thresholds: minimum score, for every class (a float) or per category id (a dict;
        classes it leaves out keep every score); ``None`` keeps everything.
    :param link_images: how images get into ``images/``: ``symlink`` (absolute links: keep
        the originals where they are), ``hardlink`` (same file system) or ``copy``.
    :param overwrite: replace an existing ``output`` folder.
    :param drop_boxes_without_mask: with ``segments``, leave out annotations without a mask
        (``label`` keeps a box whose mask came out empty) instead of refusing them.
    :param source: what to record as the origin in ``meta.json`` (experiment, teachers, ...).
    :raises DataError: bad input, naming the file and the place.
    :raises OutputExistsError, OutputError: ``output`` exists (without ``overwrite``), or cannot be written.
    """
    from teacherkit.atomic import atomic_dir

    output, images_dir = Path(output), Path(images_dir)
    _check_options(val_fraction, link_images)
    check_output_dir(output, "--output")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"--output {output}: already exists; pass --overwrite to replace it")
    data, where = _load_coco(coco)
    index_of, names = _class_table(data, where)
    limits = _class_thresholds(thresholds, index_of)
    report = YoloReport(output=output, classes=names)
    images = _plan(data, where, images_dir, index_of, limits, report, segments=segments,
                   drop_boxes_without_mask=drop_boxes_without_mask)
    val = _val_names([image.file_name for image in images], val_fraction, seed)
    try:
        with atomic_dir(output) as tmp:
            for split in SPLITS:
                (tmp / "images" / split).mkdir(parents=True)
                (tmp / "labels" / split).mkdir(parents=True)
            for image in images:
                _write_image(tmp, "val" if image.file_name in val else "train", image, index_of, segments,
                             link_images, report)
            _write_yaml(tmp / "data.yaml", output.absolute(), names, has_val=bool(val))
            _write_meta(tmp / META_FILE, data, source, index_of, names, limits, report, segments,
                        (val_fraction, seed, link_images))
    except OSError as exc:
        raise _output_error(exc, output, link_images) from None
    return report


def _output_error(exc: OSError, output: Path, link_images: str) -> OutputError:
    import errno

    from teacherkit.errors import describe_os_error

    hint = ""
    if link_images == "hardlink" and exc.errno == errno.EXDEV:
        hint = "; hard links need the images and the output on one file system: link images by copy or symlink"
    return OutputError(f"--output {output}: {describe_os_error(exc)}{hint}")


def _check_options(val_fraction: float, link_images: str) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise TeacherkitError(f"val fraction {val_fraction}: must be at least 0 and below 1")
    if link_images not in LINK_MODES:
        raise TeacherkitError(f"link images {link_images!r}: must be one of {', '.join(LINK_MODES)}")


def _load_coco(coco: dict[str, Any] | Path) -> tuple[dict[str, Any], str]:
    """The COCO dict and the name its messages use (the file, or ``pseudo-labels``)."""
    if isinstance(coco, dict):
        data, where = coco, "pseudo-labels"
    else:
        where = str(coco)
        try:
            data = json.loads(Path(coco).read_bytes())
        except OSError as exc:
            from teacherkit.errors import describe_os_error

            raise DataError(f"{where}: cannot read: {describe_os_error(exc)}") from None
        except ValueError as exc:
            raise DataError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{where}: not a COCO object (top level is {type(data).__name__})")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{where}: '{key}' is missing or not a list")
    return data, where


def _class_table(data: dict[str, Any], where: str) -> tuple[dict[int, int], list[str]]:
    """Category id -> class index (position among the sorted ids), and the names in index order."""
    by_id: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise DataError(f"{where}: categories[{i}] has no integer 'id'")
        if cat["id"] in by_id:
            raise DataError(f"{where}: categories[{i}]: id {cat['id']} is used twice")
        by_id[cat["id"]] = str(cat.get("name", cat["id"]))
    if not by_id:
        raise DataError(f"{where}: no categories; a YOLO dataset needs at least one class")
    ids = sorted(by_id)
    return {cid: index for index, cid in enumerate(ids)}, [by_id[cid] for cid in ids]


def _class_thresholds(thresholds: dict[int, float] | float | None, index_of: dict[int, int]) -> dict[int, float]:
    """The minimum score of every category id (0 where none is set)."""
    if thresholds is None:
        return dict.fromkeys(index_of, 0.0)
    if not isinstance(thresholds, dict):
        thresholds = dict.fromkeys(index_of, float(thresholds))
    unknown = sorted(set(thresholds) - set(index_of))
    if unknown:
        raise TeacherkitError(f"thresholds: category id(s) {unknown} are not categories of the pseudo-labels "
                              f"({sorted(index_of)})")
    for cid, value in thresholds.items():
        if not 0.0 <= float(value) <= 1.0:
            raise TeacherkitError(f"thresholds: {value} for category {cid} is not between 0 and 1")
    return {cid: float(thresholds.get(cid, 0.0)) for cid in index_of}


def _plan(data: dict[str, Any], where: str, images_dir: Path, index_of: dict[int, int], limits: dict[int, float],
          report: YoloReport, *, segments: bool, drop_boxes_without_mask: bool) -> list[_Image]:
    """Every image with the annotations it keeps, checked; nothing is written yet."""
    by_id: dict[Any, _Image] = {}
    for i, img in enumerate(data["images"]):
        image = _checked_image(img, where, i, images_dir)
        if img["id"] in by_id:
            raise DataError(f"{where}: images[{i}]: id {img['id']} is used twice")
        by_id[img["id"]] = image
    seen: set[str] = set()
    for image in by_id.values():
        if image.file_name in seen:
            raise DataError(f"{where}: file_name {image.file_name!r} is listed twice in images")
        seen.add(image.file_name)
    for i, ann in enumerate(data["annotations"]):
        place = f"{where}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else None})"
        image = _checked_annotation(ann, place, by_id, index_of)
        if float(ann.get("score", 1.0)) < limits[ann["category_id"]]:
            report.below_threshold += 1
        elif segments and not ann.get("segmentation"):
            if not drop_boxes_without_mask:
                raise DataError(f"{place} of {image.file_name!r}: no segmentation, and polygons were asked for "
                                "(yolo-seg); write boxes (yolo) or leave such boxes out")
            report.without_mask += 1
        else:
            image.annotations.append(ann)
    targets = flat_names([image.file_name for image in by_id.values()])
    for image in by_id.values():
        image.target = targets[image.file_name]
    return sorted(by_id.values(), key=lambda image: image.file_name)


def _checked_image(img: Any, where: str, i: int, images_dir: Path) -> _Image:
    place = f"{where}: images[{i}]"
    if not isinstance(img, dict) or "id" not in img:
        raise DataError(f"{place}: not an image record with an 'id'")
    name, width, height = img.get("file_name"), img.get("width"), img.get("height")
    if not isinstance(name, str) or not name:
        raise DataError(f"{place}: no 'file_name'")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise DataError(f"{place} ({name!r}): width and height must be positive integers")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"{place}: file_name {name!r} must be relative to the images folder, without '..'")
    if rel.suffix.lower() not in YOLO_IMAGE_EXTENSIONS:
        raise DataError(f"{place}: {name!r} is not an image type Ultralytics reads "
                        f"({', '.join(sorted(YOLO_IMAGE_EXTENSIONS))})")
    source = images_dir / rel
    if not source.is_file():
        raise DataError(f"{place}: image file {source} not found")
    return _Image(name, source, "", width, height, where)


def _checked_annotation(ann: Any, place: str, by_id: dict[Any, _Image], index_of: dict[int, int]) -> _Image:
    """The image of a well-formed annotation; a DataError naming ``place`` otherwise."""
    if not isinstance(ann, dict):
        raise DataError(f"{place}: not an annotation object")
    image = by_id.get(ann.get("image_id"))
    if image is None:
        raise DataError(f"{place}: image_id {ann.get('image_id')!r} is not in images")
    if ann.get("category_id") not in index_of:
        raise DataError(f"{place} of {image.file_name!r}: category_id {ann.get('category_id')!r} is not in "
                        f"categories ({', '.join(map(str, sorted(index_of)))})")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
        raise DataError(f"{place} of {image.file_name!r}: bbox {bbox!r} is not [x, y, width, height] in numbers")
    if "score" in ann and not _is_finite(ann["score"]):
        raise DataError(f"{place} of {image.file_name!r}: score {ann['score']!r} is not a number")
    return image


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flat_names(file_names: list[str]) -> dict[str, str]:
    """Each file name (``a/b.jpg``) -> its name in one folder (``a__b.jpg``), no two sharing a
    label file: names whose stems are equal ignoring case get a short hash of the original."""
    flat = {name: Path(name).as_posix().replace("/", "__") for name in file_names}
    by_stem: dict[str, list[str]] = {}
    for name, target in flat.items():
        by_stem.setdefault(Path(target).stem.casefold(), []).append(name)
    for names in by_stem.values():
        if len(names) > 1:
            for name in names:
                path = Path(flat[name])
                digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
                flat[name] = f"{path.stem}~{digest}{path.suffix}"
    return flat


def _val_names(file_names: list[str], val_fraction: float, seed: int) -> set[str]:
    if val_fraction == 0.0:
        return set()
    if len(file_names) < 2:
        raise TeacherkitError(f"val fraction {val_fraction}: {len(file_names)} image(s) cannot be split "
                              "into train and val")
    order = sorted(file_names)
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(val_fraction * len(order))))
    return set(order[:count])


def _write_image(tmp: Path, split: str, image: _Image, index_of: dict[int, int], segments: bool, how: str,
                 report: YoloReport) -> None:
    from teacherkit.inference.mask_outline import polygon_line

    lines = []
    for ann in image.annotations:
        cls = index_of[ann["category_id"]]
        if segments:
            where = f"{image.where}: annotation {ann.get('id')} of {image.file_name!r}"
            line, simplified = polygon_line(ann["segmentation"], cls, image.width, image.height, where=where)
            report.masks_simplified += simplified
        else:
            line = box_line(ann["bbox"], cls, image.width, image.height)
        if line is not None:
            lines.append(line)
    label = (tmp / "labels" / split / image.target).with_suffix(".txt")
    label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    _place_image(image.source, tmp / "images" / split / image.target, how)
    report.images[split] += 1
    report.objects[split] += len(lines)


def box_line(bbox: list[float], cls: int, width: int, height: int) -> str | None:
    """``class cx cy w h`` of a COCO box ``[x, y, w, h]`` (pixels), clipped to the image and
    normalised; ``None`` for a box with nothing inside the image."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return " ".join([str(cls), *(f"{v:.6f}" for v in values)])


def _place_image(source: Path, target: Path, how: str) -> None:
    if how == "symlink":
        os.symlink(os.path.abspath(source), target)  # absolute: the dataset folder is moved in after
    elif how == "hardlink":
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def _write_yaml(path: Path, final: Path, names: list[str], *, has_val: bool) -> None:
    import yaml

    # ``path`` absolute: Ultralytics resolves a relative one against its own datasets folder
    data = {"path": str(final), "train": "images/train", "val": "images/val" if has_val else "images/train",
            "names": dict(enumerate(names))}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _write_meta(path: Path, data: dict[str, Any], source: dict[str, Any] | None, index_of: dict[int, int],
                names: list[str], limits: dict[int, float], report: YoloReport, segments: bool,
                split: tuple[float, int, str]) -> None:
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    meta = {
        "format": "yolo-seg" if segments else "yolo",
        "source": source if source is not None else {k: v for k, v in info.items() if k != "images_failed"},
        "classes": [{"index": index, "category_id": cid, "name": names[index]} for cid, index in index_of.items()],
        "thresholds": {str(cid): value for cid, value in limits.items()},
        "split": {"val_fraction": split[0], "seed": split[1], "link_images": split[2]},
        "counts": {"images": report.images, "objects": report.objects, "below_threshold": report.below_threshold,
                   "without_mask": report.without_mask, "masks_simplified": report.masks_simplified},
    }
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
