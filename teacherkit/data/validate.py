"""Validate a COCO dataset: every problem found, with a stable code and its place.

:func:`validate_coco` never raises on bad *content*: it returns a :class:`Report` whose
findings each carry a code from :data:`teacherkit.data.findings.CHECKS`, a severity, a
location (image id, annotation id, JSON path) and whether ``--fix`` repairs it. Only a
file that cannot be read at all (missing, not JSON, not an object) makes a *fatal*
report (CLI exit 2). :func:`teacherkit.data.fix.fix_coco` repairs what can be repaired;
it runs the checks here, so this module never imports it (the dependency points one way).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from teacherkit.data.annotation_checks import AnnotationChecker, is_int
from teacherkit.data.annotation_columns import CHUNK, check_chunk
from teacherkit.data.findings import CHECKS, Finding, Report, finding
from teacherkit.data.image_files import ImageEntry, check_image_files, escapes_folder, outside_images_allowed
from teacherkit.data.jsonbytes import read_buffer
from teacherkit.data.rawcoco import UNSET, RawCoco, from_bytes, from_python, json_type

__all__ = ["CHECKS", "Finding", "Report", "validate_coco", "rare_classes", "escapes_folder"]


def validate_coco(path_or_dict: str | Path | dict[str, Any] | Any, images_dir: str | Path | None = None,
                  check_images: bool = True, split_fractions: dict[str, float] | None = None,
                  workers: int | None = None) -> Report:
    """Check a COCO file (path) or COCO dict and return every finding.

    :param images_dir: folder that ``file_name`` is relative to; defaults to the
        annotation file's folder (a dict has none: image files are then not checked).
    :param check_images: check the image files (existence, header, size, EXIF, truncation).
    :param split_fractions: ``{"train": 0.7, ...}``: also warn about classes too rare to
        appear in every split.
    :param workers: threads for the image-file checks.
    :raises DataError: only when ``path_or_dict`` is a path that cannot be read.
    """
    started = time.perf_counter()
    # Validation allocates millions of short-lived containers and makes no cycles: the
    # cyclic GC would only rescan the live dataset again and again, so it pauses.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        report = _run(path_or_dict, images_dir, check_images, split_fractions, workers)
    finally:
        if gc_was_enabled:
            gc.enable()
    report.seconds = time.perf_counter() - started
    return report


def _run(path_or_dict: Any, images_dir: str | Path | None, check_images: bool,
         split_fractions: dict[str, float] | None, workers: int | None) -> Report:
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        raw = from_bytes(read_buffer(path))
        source = str(path)
        if images_dir is None:
            images_dir = path.parent
    else:
        if hasattr(path_or_dict, "to_dict") and not isinstance(path_or_dict, dict):
            path_or_dict = path_or_dict.to_dict()  # a CocoDataset
        raw = from_python(path_or_dict)
        source = None
    report = Report(source=source)
    report.findings.extend(raw.findings)
    if not raw.fatal:
        _validate(raw, report, Path(images_dir) if images_dir is not None else None, check_images, split_fractions,
                  workers)
    return report


def _top_list(raw: RawCoco, key: str, out: list[Finding]) -> list[Any]:
    value = getattr(raw, key)
    if value is UNSET:
        out.append(finding("coco.missing_key", f"the top-level key {key!r} is missing", f"$.{key}"))
        return []
    if not isinstance(value, list):
        out.append(finding("coco.wrong_type", f"{key!r} is a JSON {json_type(value)}, expected an array",
                           f"$.{key}"))
        return []
    return value


def _validate(raw: RawCoco, report: Report, images_dir: Path | None, check_images: bool,
              split_fractions: dict[str, float] | None, workers: int | None) -> None:
    out = report.findings
    images = _top_list(raw, "images", out)
    annotations = _top_list(raw, "annotations", out)
    categories = _top_list(raw, "categories", out)
    report.num_images, report.num_annotations, report.num_categories = len(images), len(annotations), len(categories)

    category_ids = _check_categories(categories, out)
    image_ids, image_sizes, entries = _check_images(images, out)

    checker = AnnotationChecker(image_sizes, image_ids, category_ids, out)
    for first in range(0, len(annotations), CHUNK):
        check_chunk(checker, first, annotations[first:first + CHUNK])
    checker.finish()

    annotated = checker.images_with_annotations()
    used = checker.categories_with_annotations()
    for index, image in enumerate(images):
        if isinstance(image, dict) and is_int(image.get("id")) and image["id"] not in annotated:
            out.append(finding("image.no_annotations", f"image {image['id']} ({image.get('file_name')!r}) has no "
                               "annotations", f"$.images[{index}]", image_id=image["id"]))
    for index, cat in enumerate(categories):
        if isinstance(cat, dict) and is_int(cat.get("id")) and cat["id"] not in used:
            out.append(finding("category.unused", f"category {cat['id']} ({cat.get('name')!r}) has no annotations",
                               f"$.categories[{index}]"))
    if split_fractions:
        names = {c["id"]: c.get("name") for c in categories if isinstance(c, dict) and is_int(c.get("id"))}
        for cat_id, needed, have in rare_classes({c: i for c, i in checker.category_images.items() if i},
                                                 split_fractions):
            out.append(finding("split.rare_class", f"class {names.get(cat_id)!r} (id {cat_id}) is in {have} "
                               f"image(s); at least {needed} needed to appear in every split",
                               f"$.categories[{_index_of(categories, cat_id)}]"))
    if check_images and images_dir is not None:
        out.extend(check_image_files(entries, images_dir, workers))
        report.images_checked = len(entries)


def rare_classes(category_images: dict[Any, set[Any]],
                 fractions: dict[str, float]) -> list[tuple[Any, int, int]]:
    """``(category id, images needed, images present)`` for classes whose expected share of
    images in some split is below one image."""
    smallest = min(f for f in fractions.values() if f > 0)
    needed = int(-(-1 // smallest))  # ceil(1 / smallest)
    needed = max(needed, sum(1 for f in fractions.values() if f > 0))
    return [(cid, needed, len(imgs)) for cid, imgs in sorted(category_images.items(), key=lambda kv: str(kv[0]))
            if len(imgs) < needed]


def _index_of(items: list[Any], cat_id: Any) -> int:
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("id") == cat_id:
            return index
    return -1


def _check_categories(categories: list[Any], out: list[Finding]) -> set[Any]:
    ids: set[Any] = set()
    names: dict[str, int] = {}
    for index, cat in enumerate(categories):
        path = f"$.categories[{index}]"
        if not isinstance(cat, dict):
            out.append(finding("category.not_object", f"category entry is a {json_type(cat)}, expected an object",
                               path))
            continue
        cid = cat.get("id", UNSET)
        if cid is UNSET or cid is None:
            out.append(finding("category.missing_field", "category has no id", f"{path}.id"))
        elif not is_int(cid):
            out.append(finding("category.bad_field", f"category id is {json_type(cid)} {cid!r}, expected an "
                               "integer", f"{path}.id"))
        elif cid in ids:
            out.append(finding("category.duplicate_id", f"category id {cid} is used again", f"{path}.id"))
        else:
            ids.add(cid)
        name = cat.get("name", UNSET)
        if name is UNSET or name is None:
            out.append(finding("category.missing_field", "category has no name", f"{path}.name"))
        elif not isinstance(name, str):
            out.append(finding("category.bad_field", f"category name is {json_type(name)} {name!r}, expected a "
                               "string", f"{path}.name"))
        elif not name.strip():
            out.append(finding("category.empty_name", f"category {cid!r} has an empty name", f"{path}.name"))
        else:
            key = " ".join(name.split()).casefold()  # "Traffic  Light" and "traffic light" collide as prompts
            if key in names:
                out.append(finding("category.duplicate_name", f"category name {name!r} is already used by "
                                   f"$.categories[{names[key]}]", f"{path}.name"))
            else:
                names[key] = index
    return ids


#: The largest width or height taken: the geometry checks compute in floats, and a larger
#: JSON integer does not convert to one.
_MAX_SIDE = sys.float_info.max


def _positive_int(value: Any) -> int | None:
    if is_int(value) and 0 < value <= _MAX_SIDE:
        return value
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)  # 640.0 is written by some tools and means 640
    return None


def _usual_image(image: Any, ids: set[Any], files: dict[str, int]) -> tuple[int, int, int, str] | None:
    """``(id, width, height, file_name)`` of an image the exact checks would pass without a
    finding, tested at once (a name without "/" is its own normpath and cannot leave the
    folder); ``None`` sends it through the exact checks."""
    if type(image) is not dict:
        return None
    iid, width, height, name = image.get("id"), image.get("width"), image.get("height"), image.get("file_name")
    if type(iid) is int and type(width) is int and type(height) is int and type(name) is str \
            and 0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE and iid not in ids and name not in files \
            and name.strip() and "/" not in name and "\\" not in name and ".." not in name and ":" not in name:
        return iid, width, height, name
    return None


def _check_images(images: list[Any], out: list[Finding]) -> tuple[set[Any], dict[Any, tuple[int, int]],
                                                                  list[ImageEntry]]:
    ids: set[Any] = set()
    sizes: dict[Any, tuple[int, int]] = {}
    files: dict[str, int] = {}
    entries: list[ImageEntry] = []
    allow_outside = outside_images_allowed()
    for index, image in enumerate(images):
        usual = _usual_image(image, ids, files)
        if usual is not None:  # the common case in one pass; anything else takes every check below
            iid, width, height, name = usual
            ids.add(iid)
            sizes[iid] = (width, height)
            files[name] = index
            entries.append(ImageEntry(index, iid, name, width, height))
            continue
        entry = _check_unusual_image(index, image, (ids, sizes, files), allow_outside, out)
        if entry is not None:
            entries.append(entry)
    return ids, sizes, entries


def _check_unusual_image(index: int, image: Any, seen: tuple[set[Any], dict[Any, tuple[int, int]], dict[str, int]],
                         allow_outside: bool, out: list[Finding]) -> ImageEntry | None:
    """Every check of one image entry the fast path did not accept; ``seen`` (ids, sizes,
    file names) is updated with what it adds."""
    ids, sizes, files = seen
    path = f"$.images[{index}]"
    if not isinstance(image, dict):
        out.append(finding("image.not_object", f"image entry is a {json_type(image)}, expected an object", path))
        return None
    iid = image.get("id", UNSET)
    ok_id = False
    if iid is UNSET or iid is None:
        out.append(finding("image.missing_field", "image has no id", f"{path}.id"))
    elif not is_int(iid):
        out.append(finding("image.bad_field", f"image id is {json_type(iid)} {iid!r}, expected an integer",
                           f"{path}.id"))
    elif iid in ids:
        out.append(finding("image.duplicate_id", f"image id {iid} is used again", f"{path}.id", image_id=iid))
    else:
        ids.add(iid)
        ok_id = True
    where = {"image_id": iid if ok_id else None}
    dims: list[int | None] = []
    for key in ("width", "height"):
        value = image.get(key, UNSET)
        if value is UNSET or value is None:
            out.append(finding("image.missing_field", f"image has no {key}", f"{path}.{key}", **where))
            dims.append(None)
        elif _positive_int(value) is None:
            beyond = " within float range" if is_int(value) and value > 0 else ""
            out.append(finding("image.bad_field", f"{key} is {value!r}, expected an integer > 0{beyond}",
                               f"{path}.{key}", **where))
            dims.append(None)
        else:
            dims.append(_positive_int(value))
    if ok_id and None not in dims:
        sizes[iid] = (dims[0], dims[1])
    name = image.get("file_name", UNSET)
    if name is UNSET or name is None:
        out.append(finding("image.missing_field", "image has no file_name", f"{path}.file_name", **where))
        return None
    if not isinstance(name, str) or not name.strip():
        out.append(finding("image.bad_field", f"file_name is {name!r}, expected a relative path",
                           f"{path}.file_name", **where))
        return None
    if not allow_outside and escapes_folder(name):
        out.append(finding("image.path_escapes", f"file_name {name!r} is absolute or leaves the image folder "
                           "(never opened; teacherkit --allow-outside-images allows it)",
                           f"{path}.file_name", **where))
        return None
    norm = os.path.normpath(name)
    if norm in files:
        out.append(finding("image.duplicate_file", f"file_name {name!r} is also used by $.images[{files[norm]}]",
                           f"{path}.file_name", **where))
    else:
        files[norm] = index
    return ImageEntry(index, iid if ok_id else None, name, dims[0], dims[1])
