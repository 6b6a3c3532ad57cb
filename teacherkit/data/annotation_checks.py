"""Checks of the ``annotations`` list: ids and references, boxes, segmentations, crowd
flags, areas, keypoints.

Per-annotation work is plain Python kept short; polygon geometry (bounds, shoelace area,
extent versus bbox) is gathered into batches computed with numpy (:mod:`~.polygon_batch`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from teacherkit.data.findings import Finding, finding
from teacherkit.data.masks import decode_rle_string, is_finite_number, is_number, segmentation_area_bbox
from teacherkit.data.polygon_batch import EDGE_TOLERANCE, PolygonBatch, area_inconsistent, box_iou
from teacherkit.data.rawcoco import UNSET, RawAnnotation, decode_polygons, decode_segmentation, json_type

_NUMBER = (int, float)
#: Fast paths bound sums by this (math.isfinite raises on JSON integers beyond float range)
_LARGE = 1e300


def is_int(value: Any) -> bool:
    """A JSON integer: ``type is int`` excludes bool (and is the fastest test)."""
    return type(value) is int


class AnnotationChecker:
    """Runs every annotation check; call :meth:`check` per annotation, then :meth:`finish`.

    :param image_sizes: image id → ``(width, height)`` for images with a valid size.
    :param image_ids: every valid image id (some may lack a valid size).
    :param category_ids: every valid category id.
    """

    def __init__(self, image_sizes: dict[Any, tuple[int, int]], image_ids: set[Any], category_ids: set[Any],
                 out: list[Finding]) -> None:
        self.image_sizes = image_sizes
        self.image_ids = image_ids
        self.category_ids = category_ids
        self.out = out
        self.seen_ids: set[int] = set()
        self.seen_objects: set[int] = set()
        # image ids per category: "images with annotations", "categories used" and the
        # rare-class check all derive from it
        self.category_images: dict[Any, set[Any]] = {c: set() for c in category_ids}
        self.annotated_images: set[Any] = set()  # annotations whose category is unusable
        self.used_categories: set[Any] = set()  # annotations whose image is unusable
        self.batch = PolygonBatch(out)

    # -- per annotation ------------------------------------------------------------------
    def check(self, index: int, ann: Any) -> None:
        # Hot loop (a million calls on train2017): common valid cases take fast paths;
        # anything unusual falls through to the exact checks.
        if self.batch.full():
            self.flush()
        if type(ann) is RawAnnotation and self._check_usual(index, ann):
            return
        path = f"$.annotations[{index}]"
        if type(ann) is not RawAnnotation:
            self.out.append(finding("annotation.not_object", f"annotation entry is a {json_type(ann)}, expected an "
                                    "object", path))
            return
        aid = ann.id
        if type(aid) is int and aid not in self.seen_ids:
            self.seen_ids.add(aid)
        else:
            aid = self._check_id(aid, path)
        image_id = ann.image_id
        if type(image_id) is not int or image_id not in self.image_ids:
            image_id = self._check_reference(image_id, "image_id", self.image_ids, "annotation.dangling_image",
                                             "image", path, aid, None)
        category_id = ann.category_id
        if type(category_id) is not int or category_id not in self.category_ids:
            category_id = self._check_reference(category_id, "category_id", self.category_ids,
                                                "annotation.dangling_category", "category", path, aid, image_id)
        size = self.image_sizes.get(image_id) if image_id is not None else None
        box = self._check_geometry(ann, size, path, {"image_id": image_id, "annotation_id": aid})
        self._record(image_id, category_id, box, path, aid)

    def _check_usual(self, index: int, ann: RawAnnotation) -> bool:
        """The usual annotation (new id, known image and category, a box inside the image,
        polygons of finite floats, a valid area, no crowd flag or keypoints) in one pass, as
        the exact checks would find it; ``False``, having changed nothing, for the rest."""
        aid, image_id, category_id, bbox, area = ann.id, ann.image_id, ann.category_id, ann.bbox, ann.area
        if type(image_id) is not int:
            return False
        size = self.image_sizes.get(image_id)
        iscrowd, keypoints = ann.iscrowd, ann.keypoints
        if type(aid) is not int or type(category_id) is not int or size is None or aid in self.seen_ids \
                or category_id not in self.category_ids \
                or type(bbox) is not list or len(bbox) != 4 or type(area) not in _NUMBER \
                or not (iscrowd is UNSET or (type(iscrowd) is int and iscrowd == 0)) \
                or not (keypoints is UNSET or keypoints is None) or type(ann.segmentation) is not msgspec.Raw:
            return False
        x, y, w, h = bbox
        width, height = size
        if not (type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER
                and -_LARGE < x + y + w + h + area < _LARGE and w > 0 and h > 0 and area >= 0
                and x >= -EDGE_TOLERANCE and y >= -EDGE_TOLERANCE and x + w <= width + EDGE_TOLERANCE
                and y + h <= height + EDGE_TOLERANCE and x < width and y < height):
            return False
        polygons = decode_polygons(ann.segmentation)
        if not polygons:
            return False
        if len(polygons) == 1:
            numbers = len(polygons[0])
            if numbers < 6 or numbers % 2:
                return False
        elif not all(len(poly) >= 6 and not len(poly) % 2 for poly in polygons):
            return False
        self.seen_ids.add(aid)
        self.batch.queue(polygons, None, size, (x, y, w, h), f"$.annotations[{index}].segmentation",
                         {"image_id": image_id, "annotation_id": aid})
        self.batch.set_area(area)
        self._record(image_id, category_id, (x, y, w, h), f"$.annotations[{index}]", aid)
        return True

    def _check_geometry(self, ann: RawAnnotation, size: tuple[int, int] | None, path: str,
                        where: dict[str, Any]) -> tuple[float, float, float, float] | None:
        """Box, segmentation, crowd flag, keypoints and area of one annotation; its valid box."""
        out = self.out
        segmentation, typed = (decode_segmentation(ann.segmentation) if ann.segmentation is not UNSET
                               else (None, False))
        iscrowd = 0 if ann.iscrowd is UNSET else ann.iscrowd
        if not (iscrowd in (0, 1) and type(iscrowd) in (int, bool)):
            out.append(finding("iscrowd.bad_value", f"iscrowd is {iscrowd!r}, expected 0 or 1", f"{path}.iscrowd",
                               **where))
            iscrowd = 0
        has_box = ann.bbox is not UNSET and ann.bbox is not None
        box, box_problem = self._check_bbox(ann.bbox, size, path, where) if has_box else (None, None)
        has_keypoints = ann.keypoints is not UNSET and ann.keypoints is not None \
            and self._check_keypoints(ann, path, where)
        mask = self._check_segmentation(segmentation, typed, iscrowd, size, box, path, where)
        # mask: None (no usable mask), "batch" (polygons queued), or (area, bbox) of a valid RLE
        has_mask = mask is not None
        if box_problem is not None:
            # a bad box is rebuilt from the mask; one outside the image can also be dropped
            box_problem.fixable = has_mask or box_problem.code == "bbox.outside_image"
        if not has_box:
            if has_mask:
                out.append(finding("bbox.missing", "a mask is present but bbox is missing", f"{path}.bbox", **where))
            elif segmentation is None and not has_keypoints:
                out.append(finding("annotation.no_geometry", "no bbox, segmentation or keypoints", path, **where))
        area = ann.area
        if mask == "batch" and type(area) in _NUMBER and area >= 0 and is_finite_number(area):
            self.batch.set_area(area)  # compared with the polygon area in the batch
        else:
            self._check_area(area, box, mask, path, where)
        if mask is not None and mask != "batch" and box is not None:
            self._check_mask_box(box, mask[1], path, where)
        return box

    def _record(self, image_id: Any, category_id: Any, box: tuple[float, float, float, float] | None, path: str,
                aid: Any) -> None:
        """Note which images and categories are used, and report a repeated object."""
        if image_id is not None and category_id is not None:
            self.category_images[category_id].add(image_id)
            if box is not None:
                key = hash((image_id, category_id, *box))
                if key in self.seen_objects:
                    self.out.append(finding("annotation.duplicate", f"same image, category and bbox {list(box)} as "
                                            "an earlier annotation", path, image_id=image_id, annotation_id=aid))
                else:
                    self.seen_objects.add(key)
        elif image_id is not None:
            self.annotated_images.add(image_id)
        elif category_id is not None:
            self.used_categories.add(category_id)

    def images_with_annotations(self) -> set[Any]:
        return self.annotated_images.union(*self.category_images.values())

    def categories_with_annotations(self) -> set[Any]:
        return self.used_categories | {c for c, imgs in self.category_images.items() if imgs}

    def _check_id(self, aid: Any, path: str) -> Any:
        if aid is UNSET or aid is None:
            self.out.append(finding("annotation.missing_field", "annotation has no id", f"{path}.id"))
            return None
        if not is_int(aid):
            self.out.append(finding("annotation.bad_field", f"id is {json_type(aid)} {aid!r}, expected an integer",
                                    f"{path}.id"))
            return None
        if aid in self.seen_ids:
            self.out.append(finding("annotation.duplicate_id", f"annotation id {aid} is used again", f"{path}.id",
                                    annotation_id=aid))
        else:
            self.seen_ids.add(aid)
        return aid

    def _check_reference(self, value: Any, key: str, valid: set[Any], dangling_code: str, what: str, path: str,
                         aid: Any, image_id: Any) -> Any:
        """``value`` when it names an existing image/category, else ``None`` (reported)."""
        if value is UNSET or value is None:
            self.out.append(finding("annotation.missing_field", f"annotation has no {key}", f"{path}.{key}",
                                    annotation_id=aid, image_id=image_id))
            return None
        if not is_int(value):
            self.out.append(finding("annotation.bad_field", f"{key} is {json_type(value)} {value!r}, expected an "
                                    "integer", f"{path}.{key}", annotation_id=aid, image_id=image_id))
            return None
        if value not in valid:
            self.out.append(finding(dangling_code, f"{key} {value} names no {what}", f"{path}.{key}",
                                    annotation_id=aid, image_id=value if key == "image_id" else image_id))
            return None
        return value

    def _box_problem(self, code: str, message: str, path: str, where: dict[str, Any]) -> tuple[None, Finding]:
        found = finding(code, message, f"{path}.bbox", **where)
        self.out.append(found)
        return None, found

    def _check_bbox(self, bbox: Any, size: tuple[int, int] | None, path: str,
                    where: dict[str, Any]) -> tuple[tuple[float, float, float, float] | None, Finding | None]:
        if type(bbox) is list and len(bbox) == 4:
            # fast path for the usual valid box; anything unusual takes the exact path below
            x, y, w, h = bbox
            if type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER \
                    and -_LARGE < x + y + w + h < _LARGE and w > 0 and h > 0:
                if size is None:
                    return (x, y, w, h), None
                width, height = size
                if x >= -EDGE_TOLERANCE and y >= -EDGE_TOLERANCE and x + w <= width + EDGE_TOLERANCE \
                        and y + h <= height + EDGE_TOLERANCE and x < width and y < height:
                    return (x, y, w, h), None
        if not isinstance(bbox, (list, tuple)) or not all(is_number(v) for v in bbox):
            return self._box_problem("bbox.bad_type", f"bbox is {_short(bbox)}, expected [x, y, width, height] "
                                     "numbers", path, where)
        if len(bbox) != 4:
            return self._box_problem("bbox.wrong_length", f"bbox has {len(bbox)} numbers, expected 4", path, where)
        if not all(is_finite_number(v) for v in bbox):  # an integer beyond float range is no finite float
            return self._box_problem("bbox.non_finite", f"bbox {bbox} holds NaN or infinity", path, where)
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            return self._box_problem("bbox.non_positive_size", f"bbox {bbox} has width or height <= 0", path, where)
        if size is not None:
            width, height = size
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                return self._box_problem("bbox.outside_image", f"bbox {bbox} lies outside the {width}x{height} "
                                         "image", path, where)
            if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > width + EDGE_TOLERANCE \
                    or y + h > height + EDGE_TOLERANCE:
                self.out.append(finding("bbox.exceeds_image", f"bbox {bbox} extends past the {width}x{height} image",
                                        f"{path}.bbox", **where))
        return (x, y, w, h), None

    def _check_keypoints(self, ann: RawAnnotation, path: str, where: dict[str, Any]) -> bool:
        kps = ann.keypoints
        if not isinstance(kps, list) or len(kps) % 3 or not all(is_finite_number(v) for v in kps):
            self.out.append(finding("keypoints.bad_length", f"keypoints {_short(kps)} are not (x, y, v) number "
                                    "triples", f"{path}.keypoints", **where))
            return False
        labelled = sum(1 for v in kps[2::3] if v > 0)
        num = ann.num_keypoints
        if num is not UNSET and num is not None and num != labelled:
            self.out.append(finding("keypoints.count_mismatch", f"num_keypoints is {num!r} but {labelled} keypoints "
                                    "are labelled (v > 0)", f"{path}.num_keypoints", **where))
        return bool(kps)

    # -- segmentation ----------------------------------------------------------------
    def _check_segmentation(self, seg: Any, typed: bool, iscrowd: Any, size: tuple[int, int] | None,
                            box: tuple[float, float, float, float] | None, path: str, where: dict[str, Any]) -> Any:
        if seg is None:
            return None
        spath = f"{path}.segmentation"
        if isinstance(seg, list):
            return self._check_polygons(seg, typed, iscrowd, size, box, spath, where)
        if isinstance(seg, dict):
            return self._check_rle(seg, iscrowd, size, spath, where, box is not None)
        self.out.append(finding("segmentation.bad_type", f"segmentation is a {json_type(seg)}, expected a list of "
                                "polygons or an RLE object", spath, fixable=box is not None, **where))
        return None

    def _check_polygons(self, seg: list[Any], typed: bool, iscrowd: Any, size: tuple[int, int] | None,
                        box: tuple[float, float, float, float] | None, spath: str, where: dict[str, Any]) -> Any:
        out = self.out
        if not seg:
            out.append(finding("segmentation.empty", "segmentation is an empty list", spath,
                               fixable=box is not None, **where))
            return None
        if not typed and all(is_number(v) for v in seg):
            out.append(finding("polygon.bad_type", "segmentation is a flat list of numbers; polygons must be "
                               "nested: [[x1, y1, x2, y2, ...]]", spath, **where))
            return None
        if iscrowd == 1:
            out.append(finding("iscrowd.polygon_crowd", "iscrowd is 1 but the segmentation is polygons", spath,
                               **where))
        good: list[list[float]] = []
        js: list[int] = []
        for j, poly in enumerate(seg):
            # typed decoding already proved every polygon a list of finite floats
            if not typed:
                if not isinstance(poly, list) or not all(is_number(v) for v in poly):
                    out.append(finding("polygon.bad_type", f"polygon is {_short(poly)}, expected a list of "
                                       "numbers", f"{spath}[{j}]", **where))
                    continue
                if not all(is_finite_number(v) for v in poly):
                    out.append(finding("polygon.non_finite", "polygon holds NaN or infinity", f"{spath}[{j}]",
                                       **where))
                    continue
            n = len(poly)
            if n % 2:
                out.append(finding("polygon.odd_length", f"polygon has {n} numbers (odd: x, y pairs expected)",
                                   f"{spath}[{j}]", **where))
            elif n < 6:
                out.append(finding("polygon.too_short", f"polygon has {n} numbers, at least 6 (3 points) needed",
                                   f"{spath}[{j}]", **where))
            else:
                good.append(poly)
                js.append(j)
        if not good:
            return None
        self.batch.queue(good, js, size, box, spath, where)
        return "batch"

    def _check_rle(self, seg: dict[str, Any], iscrowd: Any, size: tuple[int, int] | None, spath: str,
                   where: dict[str, Any], has_box: bool) -> Any:
        out = self.out
        rle_size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) and v >= 0 for v in rle_size)):
            out.append(finding("rle.bad_field", f"RLE size is {_short(rle_size)}, expected [height, width]",
                               f"{spath}.size", **where))
            return None
        if not isinstance(counts, (str, bytes, list)):
            out.append(finding("rle.bad_field", f"RLE counts is {_short(counts)}, expected a string or a list of "
                               "integers", f"{spath}.counts", **where))
            return None
        h, w = rle_size
        if size is not None and (h, w) != (size[1], size[0]):
            out.append(finding("rle.size_mismatch", f"RLE size [{h}, {w}] differs from the image's "
                               f"[{size[1]}, {size[0]}] (height, width)", f"{spath}.size", **where))
            return None
        if isinstance(counts, list):
            if not (set(map(type, counts)) <= {int} and min(counts, default=0) >= 0):  # C loops: long lists
                out.append(finding("rle.bad_counts", "RLE counts must be integers >= 0", f"{spath}.counts",
                                   **where))
                return None
            runs = counts
        else:
            try:
                runs = decode_rle_string(counts)
            except ValueError as exc:
                out.append(finding("rle.bad_counts", str(exc), f"{spath}.counts", **where))
                return None
        total = sum(runs)
        if total != h * w:
            out.append(finding("rle.bad_counts", f"RLE runs cover {total} pixels, the size [{h}, {w}] has {h * w}",
                               f"{spath}.counts", **where))
            return None
        if isinstance(counts, list) and iscrowd == 0:
            # reported only for well-formed counts: compressing them is then a safe repair
            out.append(finding("iscrowd.uncompressed_not_crowd", "uncompressed RLE on an annotation with "
                               "iscrowd 0", spath, **where))
        if h * w == 0:
            return (0.0, [0.0, 0.0, 0.0, 0.0])
        return segmentation_area_bbox(seg, h, w)

    # -- area and box/mask agreement -------------------------------------------------
    def _check_area(self, area: Any, box: tuple[float, float, float, float] | None, mask: Any, path: str,
                    where: dict[str, Any]) -> None:
        apath = f"{path}.area"
        computable = box is not None or mask is not None
        if area is UNSET or area is None:
            self.out.append(finding("area.missing", "area is missing (COCO evaluation needs it)", apath,
                                    fixable=computable, **where))
            return
        if not is_finite_number(area) or area < 0:
            self.out.append(finding("area.bad_value", f"area is {_short(area)}, expected a number >= 0", apath,
                                    fixable=computable, **where))
            return
        if mask == "batch":
            self.batch.set_area(float(area))  # compared with the polygon area in the batch
        elif isinstance(mask, tuple):
            if area_inconsistent(float(area), mask[0]):
                self.out.append(finding("area.inconsistent", f"area {area} but the mask covers {mask[0]:.0f} px",
                                        apath, **where))
        elif box is not None and area > box[2] * box[3] * 1.1 + 1:
            self.out.append(finding("area.inconsistent", f"area {area} exceeds the bbox area "
                                    f"{box[2] * box[3]:.0f}", apath, **where))

    def _check_mask_box(self, box: tuple[float, float, float, float], mask_box: list[float], path: str,
                        where: dict[str, Any]) -> None:
        if mask_box[2] > 0 and mask_box[3] > 0 and box_iou(box, tuple(mask_box)) < 0.5:
            self.out.append(finding("bbox.mask_mismatch", f"bbox {list(box)} disagrees with the mask extent "
                                    f"{[round(v, 1) for v in mask_box]}", f"{path}.bbox", **where))

    def flush(self) -> None:
        """Run the numpy geometry checks on the queued polygons."""
        self.batch.flush()

    def finish(self) -> None:
        self.flush()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
