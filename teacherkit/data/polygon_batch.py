"""Polygon geometry checks run in numpy batches.

A train2017-sized file has about a million polygons; a Python loop over their points would
dominate validation, so :class:`~teacherkit.data.annotation_checks.AnnotationChecker`
queues each annotation's polygons here and the bounds, shoelace areas and box agreement
of a whole batch are computed at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from teacherkit.data.findings import Finding, finding
from teacherkit.data.masks import segmentation_area_bbox

#: Pixels a box or polygon may poke past the image edge before it is reported.
EDGE_TOLERANCE = 1.0
#: Polygons below this shoelace area (px²) enclose nothing.
ZERO_AREA = 1e-6
#: Points gathered before a numpy batch runs.
BATCH_NUMBERS = 1 << 18

Box = tuple[float, float, float, float]


def area_inconsistent(area: float, reference: float) -> bool:
    """Generous tolerance: COCO areas come from rasterised masks, ours from polygons."""
    return abs(area - reference) > 0.25 * max(area, reference) + 4.0


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Polygons:
    """Per polygon of a batch: shoelace area, bounds, and which annotation owns it."""

    area: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    owner: np.ndarray


@dataclass
class _Extents:
    """Per annotation of a batch, over its usable polygons: summed and largest area, extent."""

    area: np.ndarray
    largest: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    has_good: np.ndarray


class PolygonBatch:
    """Queued polygons of many annotations; :meth:`flush` checks them and reports to ``out``."""

    def __init__(self, out: list[Finding]) -> None:
        self.out = out
        self.reset()

    def reset(self) -> None:
        self.flat: list[float] = []
        self.poly_len: list[int] = []
        self.poly_ann: list[int] = []
        self.poly_js: list[int] = []  # index of each polygon inside its annotation's segmentation
        self.meta: list[tuple[str, dict[str, Any]]] = []
        self.sizes: list[tuple[float, float]] = []
        self.boxes: list[Box] = []
        self.areas: list[float] = []

    def full(self) -> bool:
        return len(self.flat) >= BATCH_NUMBERS

    def queue(self, polys: list[list[float]], js: list[int], size: tuple[int, int] | None, box: Box | None,
              spath: str, where: dict[str, Any]) -> None:
        """Queue one annotation's usable polygons (``js``: their indices in its segmentation)."""
        k = len(self.meta)
        self.meta.append((spath, where))
        self.sizes.append(size if size is not None else (math.nan, math.nan))
        self.boxes.append(box if box is not None else (math.nan,) * 4)
        self.areas.append(math.nan)  # set by set_area when the area field is valid
        for poly in polys:
            self.flat.extend(poly)
            self.poly_len.append(len(poly))
            self.poly_ann.append(k)
        self.poly_js.extend(js)

    def set_area(self, area: float) -> None:
        """The ``area`` field of the annotation queued last, compared with its polygons' area."""
        self.areas[-1] = area

    # -- checks --------------------------------------------------------------------------
    def flush(self) -> None:
        """Run the numpy geometry checks on the queued polygons, then empty the batch."""
        if not self.poly_len:
            self.reset()
            return
        polys = self._polygons()
        good = self._report_polygons(polys)
        ext = self._extents(polys, good)
        mismatch, bad_area = self._disagreements(ext)
        starts = np.concatenate([[0], np.cumsum(self.poly_len)]).astype(np.int64)
        for k in np.flatnonzero(mismatch):
            self._report_mismatch(int(k), ext, starts)
        for k in np.flatnonzero(bad_area):
            self._report_area(int(k), ext, starts)
        self.reset()

    def _polygons(self) -> _Polygons:
        flat = np.asarray(self.flat, dtype=np.float64)
        lens = np.asarray(self.poly_len, dtype=np.int64) // 2
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        xs, ys = flat[0::2], flat[1::2]
        nxt = np.arange(1, len(xs) + 1)
        nxt[starts + lens - 1] = starts  # each polygon closes on its own first point
        area = np.abs(np.add.reduceat(xs * ys[nxt] - xs[nxt] * ys, starts)) / 2.0
        return _Polygons(area=area, x0=np.minimum.reduceat(xs, starts), y0=np.minimum.reduceat(ys, starts),
                         x1=np.maximum.reduceat(xs, starts), y1=np.maximum.reduceat(ys, starts),
                         owner=np.asarray(self.poly_ann, dtype=np.int64))

    def _report_polygons(self, p: _Polygons) -> np.ndarray:
        """Report polygons outside the image, past its edge or of zero area; the usable ones."""
        size = np.asarray(self.sizes, dtype=np.float64)[p.owner]
        width, height = size[:, 0], size[:, 1]
        with np.errstate(invalid="ignore"):
            outside = (p.x1 <= 0) | (p.y1 <= 0) | (p.x0 >= width) | (p.y0 >= height)
            exceeds = ~outside & ((p.x0 < -EDGE_TOLERANCE) | (p.y0 < -EDGE_TOLERANCE)
                                  | (p.x1 > width + EDGE_TOLERANCE) | (p.y1 > height + EDGE_TOLERANCE))
        zero = ~outside & (p.area <= ZERO_AREA)
        for code, flags, text in (("polygon.outside_image", outside, "lies outside the image"),
                                  ("polygon.exceeds_image", exceeds, "extends past the image edge"),
                                  ("polygon.zero_area", zero, "encloses no area")):
            for i in np.flatnonzero(flags):
                spath, where = self.meta[p.owner[i]]
                w, h = self.sizes[p.owner[i]]
                detail = f" ({int(w)}x{int(h)})" if code != "polygon.zero_area" else ""
                self.out.append(finding(code, f"polygon {text}{detail}", f"{spath}[{self.poly_js[i]}]", **where))
        return ~(outside | zero)

    def _extents(self, p: _Polygons, good: np.ndarray) -> _Extents:
        n = len(self.meta)
        owner = p.owner[good]
        ext = _Extents(area=np.bincount(p.owner, weights=np.where(good, p.area, 0.0), minlength=n),
                       largest=np.zeros(n), x0=np.full(n, np.inf), y0=np.full(n, np.inf),
                       x1=np.full(n, -np.inf), y1=np.full(n, -np.inf),
                       has_good=np.bincount(owner, minlength=n) > 0)
        np.minimum.at(ext.x0, owner, p.x0[good])
        np.minimum.at(ext.y0, owner, p.y0[good])
        np.maximum.at(ext.x1, owner, p.x1[good])
        np.maximum.at(ext.y1, owner, p.y1[good])
        np.maximum.at(ext.largest, owner, p.area[good])
        return ext

    def _disagreements(self, ext: _Extents) -> tuple[np.ndarray, np.ndarray]:
        """Annotations whose bbox disagrees with the polygon extent, and whose area field
        disagrees with the polygon area (both estimates, confirmed before reporting)."""
        boxes = np.asarray(self.boxes, dtype=np.float64)
        given_area = np.asarray(self.areas, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            ix = np.clip(np.minimum(boxes[:, 0] + boxes[:, 2], ext.x1) - np.maximum(boxes[:, 0], ext.x0), 0, None)
            iy = np.clip(np.minimum(boxes[:, 1] + boxes[:, 3], ext.y1) - np.maximum(boxes[:, 1], ext.y0), 0, None)
            inter = ix * iy
            mask_box_area = (ext.x1 - ext.x0) * (ext.y1 - ext.y0)
            iou = inter / (boxes[:, 2] * boxes[:, 3] + mask_box_area - inter)
            mismatch = ext.has_good & (mask_box_area > 0) & np.isfinite(boxes[:, 0]) & (iou < 0.5)
            # polygons of one object may overlap: the true (union) area lies between the
            # largest polygon's area and the sum of all
            bad_area = ext.has_good & np.isfinite(given_area) & (
                (given_area < 0.75 * ext.largest - 4.0) | (given_area > 1.25 * ext.area + 4.0))
        return mismatch, bad_area

    def _report_mismatch(self, k: int, ext: _Extents, starts: np.ndarray) -> None:
        spath, where = self.meta[k]
        extent = [round(float(v), 1) for v in (ext.x0[k], ext.y0[k], ext.x1[k] - ext.x0[k], ext.y1[k] - ext.y0[k])]
        raster = self._raster(k, starts)
        if raster is not None:
            # vertices of a self-intersecting polygon can reach past what it fills: judge by
            # the rasterised mask, as --fix does, on this rare path only
            if raster[1][2] <= 0 or box_iou(self.boxes[k], tuple(raster[1])) >= 0.5:
                return
            extent = [round(float(v), 1) for v in raster[1]]
        self.out.append(finding("bbox.mask_mismatch", f"bbox {list(self.boxes[k])} disagrees with the "
                                f"polygon extent {extent}", spath.removesuffix(".segmentation") + ".bbox", **where))

    def _report_area(self, k: int, ext: _Extents, starts: np.ndarray) -> None:
        spath, where = self.meta[k]
        given = float(self.areas[k])
        # the shoelace estimate misjudges self-intersecting polygons; confirm with the
        # rasterised area pycocotools (and --fix) use before reporting, on this rare path only
        raster = self._raster(k, starts)
        covered = raster[0] if raster is not None else None
        if covered is not None and not area_inconsistent(given, covered):
            return
        shown = covered if covered is not None else float(ext.area[k])
        self.out.append(finding("area.inconsistent", f"area {given:g} but the polygons cover about "
                                f"{shown:.0f} px", spath.removesuffix(".segmentation") + ".area", **where))

    def _raster(self, k: int, starts: np.ndarray) -> tuple[float, list[float]] | None:
        """Area and bbox of batch entry ``k``'s polygons rasterised by pycocotools."""
        width, height = self.sizes[k]
        if not (math.isfinite(width) and math.isfinite(height)):
            return None
        polys = [self.flat[starts[j]:starts[j + 1]] for j, owner in enumerate(self.poly_ann) if owner == k]
        try:
            return segmentation_area_bbox(polys, int(height), int(width))
        except Exception:  # an unusable polygon set: keep the estimate
            return None
