"""Repair what validation marks fixable, and list every repair.

The fixer does not re-implement the checks: it runs :func:`validate_coco` on the data,
applies the repair belonging to each fixable finding (addressed by the finding's JSON
path), and repeats until no fixable finding is left (a clipped polygon can become a
zero-area one, which the next round drops). The input is never modified: file input is
re-read, dict input is deep-copied.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.data.annotation_checks import is_int
from teacherkit.data.findings import Finding, Location
from teacherkit.data.jsonbytes import UTF8_BOM, legacy_text, position, read_bytes, utf8_error_offset
from teacherkit.data.masks import compress_rle, decode_rle_string, polygon_area, segmentation_area_bbox
from teacherkit.errors import DataError

_ENTRY = re.compile(r"^\$\.(images|annotations|categories)\[(\d+)\](.*)$")
_POLYGON = re.compile(r"^\.segmentation\[(\d+)\]$")
MAX_ROUNDS = 5

_DROP_ANNOTATION = {"annotation.dangling_image", "annotation.dangling_category", "annotation.no_geometry",
                    "annotation.duplicate"}
_DROP_POLYGON = {"polygon.bad_type", "polygon.non_finite", "polygon.odd_length", "polygon.too_short",
                 "polygon.outside_image", "polygon.zero_area"}
_BOX_FROM_MASK = {"bbox.missing", "bbox.bad_type", "bbox.wrong_length", "bbox.non_finite",
                  "bbox.non_positive_size", "bbox.mask_mismatch", "bbox.outside_image"}
_RECOMPUTE_AREA = {"area.missing", "area.bad_value", "area.inconsistent"}


@dataclass
class Repair:
    """One change ``--fix`` made: the finding's code and place, and what was done."""

    code: str
    location: Location
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "location": self.location.to_dict(), "action": self.action}


def read_python(path: Path, repairs: list[Repair]) -> dict[str, Any]:
    """A COCO file as Python values, repairing the byte-level problems on the way."""
    data = read_bytes(path)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
        repairs.append(Repair("json.bom", Location("$"), "dropped the UTF-8 byte-order mark"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        offset = utf8_error_offset(data) or 0
        text = legacy_text(data)
        repairs.append(Repair("json.encoding", Location("$"), f"transcoded to UTF-8 (first non-UTF-8 byte at "
                                                              f"{position(data, offset)})"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                        "--fix cannot repair that") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: the top level is not a JSON object; --fix cannot repair that")
    return value


def fix_coco(path_or_dict: str | Path | dict[str, Any], images_dir: str | Path | None = None,
             check_images: bool = False) -> tuple[dict[str, Any], list[Repair]]:
    """A repaired copy of a COCO file or dict and the list of repairs made.

    Problems without a repair (duplicate image ids, a wrong RLE size, ...) stay; validate
    the result to see them. ``images_dir``/``check_images`` are accepted for symmetry
    with validation; no image-file finding is repairable.
    """
    from teacherkit.data.validate import validate_coco

    repairs: list[Repair] = []
    if isinstance(path_or_dict, (str, Path)):
        data = read_python(Path(path_or_dict), repairs)
    else:
        if not isinstance(path_or_dict, dict):
            raise DataError(f"expected a COCO dict, got {type(path_or_dict).__name__}")
        data = copy.deepcopy(path_or_dict)
    for _round in range(MAX_ROUNDS):
        report = validate_coco(data, check_images=False)
        fixable = [f for f in report.findings if f.fixable and f.code not in ("json.bom", "json.encoding")]
        if not fixable:
            break
        _apply(data, fixable, repairs)
    return data, repairs


def _image_sizes(data: dict[str, Any]) -> dict[int, tuple[int, int]]:
    sizes: dict[int, tuple[int, int]] = {}
    images = data.get("images")
    for image in images if isinstance(images, list) else []:
        if isinstance(image, dict) and is_int(image.get("id")):
            w, h = image.get("width"), image.get("height")
            if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
                sizes.setdefault(image["id"], (int(w), int(h)))
    return sizes


def _mask_geometry(ann: dict[str, Any], size: tuple[int, int] | None) -> tuple[float, list[float]] | None:
    """Area and bbox of the annotation's mask, or ``None`` when it has no usable one."""
    seg = ann.get("segmentation")
    if not seg:
        return None
    if size is None:  # the image's size is unusable (validation names it): the mask's own frame
        size = _own_frame(seg)
        if size is None:
            return None
    if isinstance(seg, dict) and seg.get("size") != [size[1], size[0]]:
        return None  # an RLE of another size is no mask of this image (validation says rle.size_mismatch)
    if isinstance(seg, dict) and not _runs_cover_image(seg.get("counts"), size[0] * size[1]):
        return None  # runs that do not add up to the image (rle.bad_counts): pycocotools would still
        # give an area, of a mask shifted or inverted, which validation then finds inconsistent
    try:
        area, box = segmentation_area_bbox(seg, size[1], size[0])
    except Exception:  # an unusable mask is simply no mask here; validation names it
        return None
    return (area, box) if area > 0 and box[2] > 0 and box[3] > 0 else None


def _runs_cover_image(counts: Any, pixels: int) -> bool:
    """Whether RLE ``counts`` (a list of runs, or the compressed string) are runs that cover
    exactly ``pixels``, as validation's ``rle.bad_counts`` check requires."""
    if isinstance(counts, str):
        try:
            counts = decode_rle_string(counts)
        except ValueError:
            return False
    if not isinstance(counts, list) or not set(map(type, counts)) <= {int} or min(counts, default=0) < 0:
        return False
    return sum(counts) == pixels


def _own_frame(seg: Any, limit: int = 1 << 15) -> tuple[int, int] | None:
    """``(width, height)`` a mask defines by itself: an RLE's ``size``, or the extent of its
    polygons (their box does not depend on the image). ``None`` when neither is usable."""
    if isinstance(seg, dict):
        size = seg.get("size")
        if isinstance(size, list) and len(size) == 2 and all(is_int(v) and 0 < v <= limit for v in size):
            return int(size[1]), int(size[0])
        return None
    if isinstance(seg, list):
        polys = [poly for poly in seg if isinstance(poly, list) and len(poly) >= 2]
        coords = [v for poly in polys for v in poly]
        if coords and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < limit
                          for v in coords):
            xs = [v for poly in polys for v in poly[0::2]]
            ys = [v for poly in polys for v in poly[1::2]]
            return int(max(xs)) + 1, int(max(ys)) + 1
    return None


def _apply(data: dict[str, Any], findings: list[Finding], repairs: list[Repair]) -> None:
    drop: dict[str, set[int]] = defaultdict(set)
    per_ann: dict[int, list[tuple[Finding, str]]] = defaultdict(list)
    for f in findings:
        match = _ENTRY.match(f.location.json_path)
        if not match:
            continue
        key, index, rest = match.group(1), int(match.group(2)), match.group(3)
        if f.code.endswith(".not_object"):
            drop[key].add(index)
            repairs.append(Repair(f.code, f.location, f"dropped the {key} entry"))
        elif key == "annotations":
            per_ann[index].append((f, rest))
    sizes = _image_sizes(data)
    annotations = data.get("annotations") if isinstance(data.get("annotations"), list) else []
    ids = [a.get("id") for a in annotations if isinstance(a, dict) and is_int(a.get("id"))]
    next_id = max(ids, default=0) + 1
    for index, items in sorted(per_ann.items()):
        ann = annotations[index]
        size = sizes.get(ann.get("image_id")) if is_int(ann.get("image_id")) else None
        if _repair_annotation(ann, items, size, repairs):
            drop["annotations"].add(index)
        elif ann.get("id") is None or any(f.code == "annotation.duplicate_id" or
                                          (f.code.startswith("annotation.") and rest == ".id")
                                          for f, rest in items):
            old = ann.get("id")
            ann["id"] = next_id
            next_id += 1
            code = next(f for f, rest in items if rest == ".id" or f.code == "annotation.duplicate_id")
            repairs.append(Repair(code.code, code.location, f"annotation id {old!r} → {ann['id']}"))
    for key, indices in drop.items():
        if isinstance(data.get(key), list):
            data[key] = [item for i, item in enumerate(data[key]) if i not in indices]


def _repair_annotation(ann: dict[str, Any], items: list[tuple[Finding, str]], size: tuple[int, int] | None,
                       repairs: list[Repair]) -> bool:
    """Apply the repairs of one annotation; ``True`` when it must be dropped."""
    codes = {f.code for f, _rest in items}
    for f, rest in items:
        if f.code in _DROP_ANNOTATION or (f.code in ("annotation.missing_field", "annotation.bad_field")
                                          and rest != ".id"):
            repairs.append(Repair(f.code, f.location, "dropped the annotation"))
            return True
    _repair_segmentation(ann, items, size, repairs)
    geometry = _mask_geometry(ann, size)
    for f, _rest in items:
        if f.code in _BOX_FROM_MASK:
            if geometry is not None:
                ann["bbox"] = [round(v, 2) for v in geometry[1]]
                repairs.append(Repair(f.code, f.location, f"bbox set from the mask: {ann['bbox']}"))
            elif f.code == "bbox.outside_image":
                repairs.append(Repair(f.code, f.location, "dropped the annotation (box outside, no mask)"))
                return True
        elif f.code == "bbox.exceeds_image" and size is not None:
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(size[0]), x + w), min(float(size[1]), y + h)
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            repairs.append(Repair(f.code, f.location, f"bbox clipped to the image: {ann['bbox']}"))
        elif f.code == "keypoints.count_mismatch":
            ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
            repairs.append(Repair(f.code, f.location, f"num_keypoints set to {ann['num_keypoints']}"))
    if codes & _RECOMPUTE_AREA:
        f = next(f for f, _rest in items if f.code in _RECOMPUTE_AREA)
        bbox = ann.get("bbox")
        if geometry is not None:
            ann["area"] = geometry[0]
        elif isinstance(bbox, list) and len(bbox) == 4:
            ann["area"] = float(bbox[2]) * float(bbox[3])
        else:
            return False
        repairs.append(Repair(f.code, f.location, f"area set to {ann['area']:g}"))
    return False


def _repair_segmentation(ann: dict[str, Any], items: list[tuple[Finding, str]], size: tuple[int, int] | None,
                         repairs: list[Repair]) -> None:
    seg = ann.get("segmentation")
    dropped: set[int] = set()
    for f, rest in items:
        poly = _POLYGON.match(rest)
        if f.code in ("segmentation.empty", "segmentation.bad_type"):
            ann.pop("segmentation", None)
            repairs.append(Repair(f.code, f.location, "removed the segmentation (the bbox stays)"))
            return
        if f.code == "polygon.bad_type" and not poly:  # a flat list: nest it
            if len(seg) >= 6 and len(seg) % 2 == 0:
                ann["segmentation"] = seg = [list(seg)]
                repairs.append(Repair(f.code, f.location, "nested the flat coordinate list as one polygon"))
            else:
                ann.pop("segmentation", None)
                repairs.append(Repair(f.code, f.location, "removed the segmentation (not a polygon)"))
                return
        elif f.code in _DROP_POLYGON and poly:
            dropped.add(int(poly.group(1)))
            repairs.append(Repair(f.code, f.location, "dropped the polygon"))
        elif f.code == "polygon.exceeds_image" and poly and size is not None:
            j = int(poly.group(1))
            w, h = size
            seg[j] = [min(max(v, 0.0), float(w if k % 2 == 0 else h)) for k, v in enumerate(seg[j])]
            repairs.append(Repair(f.code, f.location, "clipped the polygon to the image"))
        elif f.code == "iscrowd.uncompressed_not_crowd":
            ann["segmentation"] = compress_rle(seg)
            repairs.append(Repair(f.code, f.location, "compressed the RLE"))
    if dropped and isinstance(seg, list):
        kept = [p for j, p in enumerate(seg) if j not in dropped]
        kept = [p for p in kept if not (isinstance(p, list) and len(p) >= 6 and polygon_area(p) == 0.0)]
        if kept:
            ann["segmentation"] = kept
        else:
            ann.pop("segmentation", None)
