"""Checks of the ``annotations`` list: ids and references, boxes, segmentations, crowd
flags, areas, keypoints.

Per-annotation work is plain Python kept short; polygon geometry (bounds, shoelace area,
extent versus bbox) is gathered into batches and computed with numpy, because a
train2017-sized file has about a million polygons and a Python loop over their points
would dominate the run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from teacherkit.data.findings import Finding, finding
from teacherkit.data.masks import decode_rle_string, is_finite_number, is_number, segmentation_area_bbox
from teacherkit.data.rawcoco import UNSET, RawAnnotation, decode_segmentation, json_type

#: Pixels a box or polygon may poke past the image edge before it is reported.
EDGE_TOLERANCE = 1.0
#: Polygons below this shoelace area (px²) enclose nothing.
ZERO_AREA = 1e-6
#: Points gathered before a numpy batch runs.
BATCH_NUMBERS = 1 << 18


_NUMBER = (int, float)


def is_int(value: Any) -> bool:
    """A JSON integer: ``type is int`` excludes bool (and is the fastest test)."""
    return type(value) is int


def area_inconsistent(area: float, reference: float) -> bool:
    """Generous tolerance: COCO areas come from rasterised masks, ours from polygons."""
    return abs(area - reference) > 0.25 * max(area, reference) + 4.0


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


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
        self._reset_batch()

    # -- per annotation ------------------------------------------------------------------
    def check(self, index: int, ann: Any) -> None:
        # Hot loop (a million calls on train2017): common valid cases take fast paths;
        # anything unusual falls through to the exact checks.
        path = f"$.annotations[{index}]"
        out = self.out
        if len(self._flat) >= BATCH_NUMBERS:
            self.flush()
        if type(ann) is not RawAnnotation:
            out.append(finding("annotation.not_object", f"annotation entry is a {json_type(ann)}, expected an object",
                               path))
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
        where = {"image_id": image_id, "annotation_id": aid}

        segmentation, typed = (decode_segmentation(ann.segmentation) if ann.segmentation is not UNSET
                               else (None, False))
        iscrowd = ann.iscrowd
        if iscrowd is UNSET:
            iscrowd = 0
        elif not (iscrowd in (0, 1) and type(iscrowd) in (int, bool)):
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
        if mask == "batch" and type(area) in _NUMBER and area >= 0 and math.isfinite(area):
            self._batch_area[-1] = area  # compared with the polygon area in the batch
        else:
            self._check_area(area, box, mask, path, where)
        if mask is not None and mask != "batch" and box is not None:
            self._check_mask_box(box, mask[1], path, where)
        if image_id is not None and category_id is not None:
            self.category_images[category_id].add(image_id)
            if box is not None:
                key = hash((image_id, category_id, *box))
                if key in self.seen_objects:
                    out.append(finding("annotation.duplicate", f"same image, category and bbox {list(box)} as an "
                                       "earlier annotation", path, **where))
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
                    and math.isfinite(x + y + w + h) and w > 0 and h > 0:
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
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            return self._box_problem("bbox.non_finite", f"bbox {bbox} holds NaN or infinity", path, where)
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
        for j, poly in enumerate(seg):
            # typed decoding already proved every polygon a list of finite floats
            if not typed:
                if not isinstance(poly, list) or not all(is_number(v) for v in poly):
                    out.append(finding("polygon.bad_type", f"polygon is {_short(poly)}, expected a list of "
                                       "numbers", f"{spath}[{j}]", **where))
                    continue
                if not all(math.isfinite(v) for v in poly):
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
                self._poly_js.append(j)
        if not good:
            return None
        self._queue_polygons(good, size, box, spath, where)
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
            if not all(is_int(v) and v >= 0 for v in counts):
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
            self._batch_area[-1] = float(area)  # compared with the polygon area in the batch
        elif isinstance(mask, tuple):
            if area_inconsistent(float(area), mask[0]):
                self.out.append(finding("area.inconsistent", f"area {area} but the mask covers {mask[0]:.0f} px",
                                        apath, **where))
        elif box is not None and area > box[2] * box[3] * 1.1 + 1:
            self.out.append(finding("area.inconsistent", f"area {area} exceeds the bbox area "
                                    f"{box[2] * box[3]:.0f}", apath, **where))

    def _check_mask_box(self, box: tuple[float, float, float, float], mask_box: list[float], path: str,
                        where: dict[str, Any]) -> None:
        if mask_box[2] > 0 and mask_box[3] > 0 and _iou(box, tuple(mask_box)) < 0.5:
            self.out.append(finding("bbox.mask_mismatch", f"bbox {list(box)} disagrees with the mask extent "
                                    f"{[round(v, 1) for v in mask_box]}", f"{path}.bbox", **where))

    # -- polygon batches -------------------------------------------------------------
    def _reset_batch(self) -> None:
        self._flat: list[float] = []
        self._poly_len: list[int] = []
        self._poly_ann: list[int] = []
        self._poly_js: list[int] = []
        self._batch_meta: list[tuple[str, dict[str, Any]]] = []
        self._batch_size: list[tuple[float, float]] = []
        self._batch_box: list[tuple[float, float, float, float]] = []
        self._batch_area: list[float] = []

    def _queue_polygons(self, polys: list[list[float]], size: tuple[int, int] | None,
                        box: tuple[float, float, float, float] | None, spath: str, where: dict[str, Any]) -> None:
        k = len(self._batch_meta)
        self._batch_meta.append((spath, where))
        self._batch_size.append(size if size is not None else (math.nan, math.nan))
        self._batch_box.append(box if box is not None else (math.nan,) * 4)
        self._batch_area.append(math.nan)  # set by _check_area when the area field is valid
        for poly in polys:
            self._flat.extend(poly)
            self._poly_len.append(len(poly))
            self._poly_ann.append(k)

    def flush(self) -> None:
        """Run the numpy geometry checks on the queued polygons."""
        if not self._poly_len:
            self._reset_batch()
            return
        flat = np.asarray(self._flat, dtype=np.float64)
        lens = np.asarray(self._poly_len, dtype=np.int64) // 2
        owner = np.asarray(self._poly_ann, dtype=np.int64)
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        xs, ys = flat[0::2], flat[1::2]
        nxt = np.arange(1, len(xs) + 1)
        nxt[starts + lens - 1] = starts  # each polygon closes on its own first point
        area = np.abs(np.add.reduceat(xs * ys[nxt] - xs[nxt] * ys, starts)) / 2.0
        x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
        y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
        size = np.asarray(self._batch_size, dtype=np.float64)[owner]
        width, height = size[:, 0], size[:, 1]
        with np.errstate(invalid="ignore"):
            outside = (x1 <= 0) | (y1 <= 0) | (x0 >= width) | (y0 >= height)
            exceeds = ~outside & ((x0 < -EDGE_TOLERANCE) | (y0 < -EDGE_TOLERANCE) | (x1 > width + EDGE_TOLERANCE)
                                  | (y1 > height + EDGE_TOLERANCE))
        zero = ~outside & (area <= ZERO_AREA)
        for code, flags, text in (("polygon.outside_image", outside, "lies outside the image"),
                                  ("polygon.exceeds_image", exceeds, "extends past the image edge"),
                                  ("polygon.zero_area", zero, "encloses no area")):
            for p in np.flatnonzero(flags):
                spath, where = self._batch_meta[owner[p]]
                w, h = self._batch_size[owner[p]]
                detail = f" ({int(w)}x{int(h)})" if code != "polygon.zero_area" else ""
                self.out.append(finding(code, f"polygon {text}{detail}", f"{spath}[{self._poly_js[p]}]", **where))
        good = ~(outside | zero)
        n = len(self._batch_meta)
        mask_area = np.bincount(owner, weights=np.where(good, area, 0.0), minlength=n)
        inf = np.inf
        ax0 = np.full(n, inf)
        ay0 = np.full(n, inf)
        ax1 = np.full(n, -inf)
        ay1 = np.full(n, -inf)
        np.minimum.at(ax0, owner[good], x0[good])
        np.minimum.at(ay0, owner[good], y0[good])
        np.maximum.at(ax1, owner[good], x1[good])
        np.maximum.at(ay1, owner[good], y1[good])
        boxes = np.asarray(self._batch_box, dtype=np.float64)
        given_area = np.asarray(self._batch_area, dtype=np.float64)
        has_good = np.bincount(owner[good], minlength=n) > 0
        with np.errstate(invalid="ignore"):
            ix = np.clip(np.minimum(boxes[:, 0] + boxes[:, 2], ax1) - np.maximum(boxes[:, 0], ax0), 0, None)
            iy = np.clip(np.minimum(boxes[:, 1] + boxes[:, 3], ay1) - np.maximum(boxes[:, 1], ay0), 0, None)
            inter = ix * iy
            mask_box_area = (ax1 - ax0) * (ay1 - ay0)
            iou = inter / (boxes[:, 2] * boxes[:, 3] + mask_box_area - inter)
            mismatch = has_good & (mask_box_area > 0) & np.isfinite(boxes[:, 0]) & (iou < 0.5)
            # polygons of one object may overlap: the true (union) area lies between the
            # largest polygon's area and the sum of all
            largest = np.zeros(n)
            np.maximum.at(largest, owner[good], area[good])
            bad_area = has_good & np.isfinite(given_area) & (
                (given_area < 0.75 * largest - 4.0) | (given_area > 1.25 * mask_area + 4.0))
        starts = np.concatenate([[0], np.cumsum(self._poly_len)]).astype(np.int64) if self._poly_len else None
        for k in np.flatnonzero(mismatch):
            spath, where = self._batch_meta[k]
            extent = [round(float(v), 1) for v in (ax0[k], ay0[k], ax1[k] - ax0[k], ay1[k] - ay0[k])]
            raster = self._raster(int(k), starts)
            if raster is not None:
                # vertices of a self-intersecting polygon can reach past what it fills: judge by
                # the rasterised mask, as --fix does, on this rare path only
                if raster[1][2] <= 0 or _iou(self._batch_box[k], tuple(raster[1])) >= 0.5:
                    continue
                extent = [round(float(v), 1) for v in raster[1]]
            self.out.append(finding("bbox.mask_mismatch", f"bbox {list(self._batch_box[k])} disagrees with the "
                                    f"polygon extent {extent}", spath.removesuffix(".segmentation") + ".bbox", **where))
        for k in np.flatnonzero(bad_area):
            spath, where = self._batch_meta[k]
            # the shoelace estimate misjudges self-intersecting polygons; confirm with the
            # rasterised area pycocotools (and --fix) use before reporting, on this rare path only
            raster = self._raster(int(k), starts)
            covered = raster[0] if raster is not None else None
            if covered is not None and not area_inconsistent(float(given_area[k]), covered):
                continue
            shown = covered if covered is not None else float(mask_area[k])
            self.out.append(finding("area.inconsistent", f"area {given_area[k]:g} but the polygons cover about "
                                    f"{shown:.0f} px", spath.removesuffix(".segmentation") + ".area", **where))
        self._reset_batch()

    def _raster(self, k: int, starts: Any) -> tuple[float, list[float]] | None:
        """Area and bbox of batch entry ``k``'s polygons rasterised by pycocotools."""
        width, height = self._batch_size[k]
        if starts is None or not (math.isfinite(width) and math.isfinite(height)):
            return None
        polys = [self._flat[starts[j]:starts[j + 1]] for j, owner in enumerate(self._poly_ann) if owner == k]
        try:
            return segmentation_area_bbox(polys, int(height), int(width))
        except Exception:  # an unusable polygon set: keep the estimate
            return None

    def finish(self) -> None:
        self.flush()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
