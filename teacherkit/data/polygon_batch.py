"""Polygon geometry checks run in numpy batches.

A train2017-sized file has about a million polygons: :class:`~teacherkit.data.annotation_checks.AnnotationChecker`
queues each annotation's polygons here (:mod:`~teacherkit.data.annotation_columns` whole runs
of usual annotations at once), and the bounds, shoelace areas, box and area agreement of a
whole batch are computed at once, pycocotools rasterising only doubtful cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from teacherkit.data.findings import CHECKS, Finding, Location, finding
from teacherkit.data.masks import rasterisable_polygons, segmentation_area_bbox
from teacherkit.data.polygon_block import PolygonBlock
from teacherkit.data.polygon_shape import polygon_subset, raster_slack, star_shaped

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


def _rows(items: list[tuple[float, ...]], width: int) -> np.ndarray:
    """A list of equal-length tuples as a float array (np.asarray walks tuples slowly)."""
    return np.fromiter(chain.from_iterable(items), dtype=np.float64, count=len(items) * width).reshape(-1, width)


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
    xs: np.ndarray  # every point of the batch, polygon after polygon
    ys: np.ndarray
    starts: np.ndarray  # each polygon's first point
    nxt: np.ndarray  # each point's successor along its (closed) polygon


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
        # each annotation's usable polygons, in queue order: runs of annotations queued one at
        # a time (lists of Python floats) and blocks of arrays from the column path
        self.blocks: list[list[list[list[float]]] | PolygonBlock] = []
        self._numbers_at: np.ndarray | None = None  # set by _polygons(), for _polys_of()
        self.js: list[list[int] | None] = []  # their indices in its segmentation (None: 0, 1, ...)
        self.numbers = 0
        # (segmentation path, ids) from queue, (annotation index, image id, id) from queue_many
        self.meta: list[tuple[Any, ...]] = []
        self.sizes: list[tuple[float, float]] = []
        self.boxes: list[Box] = []
        self.areas: list[float] = []

    def full(self) -> bool:
        return self.numbers >= BATCH_NUMBERS

    def room(self) -> int:
        """Numbers the batch takes before it is :meth:`full`."""
        return BATCH_NUMBERS - self.numbers

    def queue(self, polys: list[list[float]], js: list[int] | None, size: tuple[int, int] | None, box: Box | None,
              spath: str, where: dict[str, Any]) -> None:
        """Queue one annotation's usable polygons (``js``: their indices in its segmentation,
        ``None`` when they are all of it). Per-polygon work waits for :meth:`flush`."""
        if not self.blocks or isinstance(self.blocks[-1], PolygonBlock):
            self.blocks.append([])
        self.blocks[-1].append(polys)
        self.js.append(js)
        self.numbers += sum(map(len, polys))
        self.meta.append((spath, where))
        self.sizes.append(size if size is not None else (math.nan, math.nan))
        self.boxes.append(box if box is not None else (math.nan,) * 4)
        self.areas.append(math.nan)  # set by set_area when the area field is valid

    def queue_many(self, polys: PolygonBlock, sizes: list[tuple[int, int]], boxes: list[Box],
                   areas: list[float], first: int, image_ids: list[Any], aids: list[Any]) -> None:
        """Queue consecutive annotations ``first, first + 1, ...`` whose every polygon is
        usable, with their (valid) size, box and area; their JSON paths and ids are only
        turned into text when one is reported."""
        self.blocks.append(polys)
        self.js.extend([None] * len(polys))
        self.numbers += len(polys.flat)
        self.meta.extend(zip(range(first, first + len(polys)), image_ids, aids, strict=True))
        self.sizes.extend(sizes)
        self.boxes.extend(boxes)
        self.areas.extend(areas)

    def _place(self, k: int) -> tuple[str, dict[str, Any]]:
        """Entry ``k``'s segmentation path and ids, as :meth:`queue` took them."""
        meta = self.meta[k]
        if len(meta) == 2:
            return meta
        index, image_id, aid = meta
        return f"$.annotations[{index}].segmentation", {"image_id": image_id, "annotation_id": aid}

    def set_area(self, area: float) -> None:
        """The ``area`` field of the annotation queued last, compared with its polygons' area."""
        self.areas[-1] = area

    # -- checks --------------------------------------------------------------------------
    def flush(self) -> None:
        """Run the numpy geometry checks on the queued polygons, then empty the batch."""
        if not self.meta:
            self.reset()
            return
        polys = self._polygons()
        good = self._report_polygons(polys)
        ext = self._extents(polys, good)
        mismatch, bad_area = self._disagreements(ext)
        for k in np.flatnonzero(mismatch):
            self._report_mismatch(int(k), ext)
        flagged = np.flatnonzero(bad_area)
        if len(flagged):
            verdict = self._area_verdicts(polys, flagged)
            rasters = self._raster_areas(flagged[verdict == 0].tolist())
            self._report_areas(flagged[verdict == 1].tolist(), ext.area[flagged[verdict == 1]].tolist())
            unsure = flagged[verdict == 0]
            for k, shown in zip(unsure.tolist(), ext.area[unsure].tolist(), strict=True):
                self._report_area(k, 0, shown, rasters.get(k))
        self.reset()

    def _polygons(self) -> _Polygons:
        flats, counts, numbers = [], [], []
        for block in self.blocks:
            if isinstance(block, PolygonBlock):
                flats.append(block.flat)
                counts.append(block.counts)
                numbers.append(block.lens)
                continue
            count = np.fromiter(map(len, block), dtype=np.int64, count=len(block))
            numbers.append(np.fromiter(map(len, chain.from_iterable(block)), dtype=np.int64, count=int(count.sum())))
            flats.append(np.fromiter(chain.from_iterable(chain.from_iterable(block)), dtype=np.float64,
                                     count=int(numbers[-1].sum())))
            counts.append(count)
        flat, per_annotation, numbers_of = (np.concatenate(parts) for parts in (flats, counts, numbers))
        self._flat = flat
        self._numbers_at = np.concatenate(([0], np.cumsum(numbers_of)))
        self._first_polygon = np.concatenate(([0], np.cumsum(per_annotation)))
        lens = numbers_of // 2
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        xs, ys = flat[0::2], flat[1::2]
        nxt = np.arange(1, len(xs) + 1)
        nxt[starts + lens - 1] = starts  # each polygon closes on its own first point
        area = np.abs(np.add.reduceat(xs * ys[nxt] - xs[nxt] * ys, starts)) / 2.0
        return _Polygons(area=area, x0=np.minimum.reduceat(xs, starts), y0=np.minimum.reduceat(ys, starts),
                         x1=np.maximum.reduceat(xs, starts), y1=np.maximum.reduceat(ys, starts),
                         owner=np.repeat(np.arange(len(self.meta)), per_annotation), xs=xs, ys=ys,
                         starts=starts, nxt=nxt)

    def _report_polygons(self, p: _Polygons) -> np.ndarray:
        """Report polygons outside the image, past its edge or of zero area; the usable ones."""
        size = _rows(self.sizes, 2)[p.owner]
        width, height = size[:, 0], size[:, 1]
        with np.errstate(invalid="ignore"):
            outside = (p.x1 <= 0) | (p.y1 <= 0) | (p.x0 >= width) | (p.y0 >= height)
            exceeds = ~outside & ((p.x0 < -EDGE_TOLERANCE) | (p.y0 < -EDGE_TOLERANCE)
                                  | (p.x1 > width + EDGE_TOLERANCE) | (p.y1 > height + EDGE_TOLERANCE))
        zero = ~outside & (p.area <= ZERO_AREA)
        first = np.searchsorted(p.owner, np.arange(len(self.meta)))  # each annotation's first polygon
        for code, flags, text in (("polygon.outside_image", outside, "lies outside the image"),
                                  ("polygon.exceeds_image", exceeds, "extends past the image edge"),
                                  ("polygon.zero_area", zero, "encloses no area")):
            for i in np.flatnonzero(flags).tolist():
                k = int(p.owner[i])
                spath, where = self._place(k)
                w, h = self.sizes[k]
                j = i - int(first[k])  # the polygon's place among the annotation's usable ones
                j = j if self.js[k] is None else self.js[k][j]
                detail = f" ({int(w)}x{int(h)})" if code != "polygon.zero_area" else ""
                self.out.append(finding(code, f"polygon {text}{detail}", f"{spath}[{j}]", **where))
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
        boxes = _rows(self.boxes, 4)
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

    def _report_mismatch(self, k: int, ext: _Extents) -> None:
        spath, where = self._place(k)
        extent = [round(float(v), 1) for v in (ext.x0[k], ext.y0[k], ext.x1[k] - ext.x0[k], ext.y1[k] - ext.y0[k])]
        raster = self._raster(k)
        if raster is not None:
            # vertices of a self-intersecting polygon can reach past what it fills: judge by
            # the rasterised mask, as --fix does, on this rare path only
            if raster[1][2] <= 0 or box_iou(self.boxes[k], tuple(raster[1])) >= 0.5:
                return
            extent = [round(float(v), 1) for v in raster[1]]
        self.out.append(finding("bbox.mask_mismatch", f"bbox {list(self.boxes[k])} disagrees with the "
                                f"polygon extent {extent}", spath.removesuffix(".segmentation") + ".bbox", **where))

    def _area_verdicts(self, p: _Polygons, flagged: np.ndarray) -> np.ndarray:
        """For each flagged annotation: 1 when its area field certainly disagrees with the
        area pycocotools rasterises, -1 when it certainly agrees, 0 when only rasterising tells.

        Certain when every polygon is star-shaped (so simple: its shoelace area is its true
        area) and inside the image (nothing clipped): its raster area then lies within
        :func:`raster_slack` of the shoelace area, and the union of several between the
        largest and the sum. Rasterising each of a million flagged annotations (a converter
        writing area = bbox area) costs minutes; this costs numpy passes over the points."""
        n = len(self.meta)
        mine = np.zeros(n, dtype=bool)
        mine[flagged] = True
        mine = mine[p.owner]  # the polygons of flagged annotations
        owner, area = p.owner[mine], p.area[mine]
        size = _rows(self.sizes, 2)[owner]
        with np.errstate(invalid="ignore"):
            inside = (p.x0[mine] >= 0) & (p.y0[mine] >= 0) & (p.x1[mine] <= size[:, 0] - 1) \
                & (p.y1[mine] <= size[:, 1] - 1)
        points = polygon_subset(p.xs, p.ys, np.diff(np.append(p.starts, len(p.xs))), mine)
        sure = star_shaped(*points) & inside
        slack = raster_slack(*points)
        unsure = np.bincount(owner, weights=~sure, minlength=n)[flagged] > 0
        high = np.bincount(owner, weights=area + slack, minlength=n)[flagged]
        low = np.full(n, -np.inf)
        first = np.flatnonzero(np.diff(owner, prepend=-1))  # polygons come in annotation order
        low[owner[first]] = np.maximum.reduceat(area - slack, first)
        low = low[flagged]
        given = np.asarray(self.areas, dtype=np.float64)[flagged]
        # area_inconsistent(given, r) holds for every r < 0.75 given - 4 and every
        # r > (given + 4) / 0.75, and for none in between (one pixel of margin each side)
        disagrees = (high < 0.75 * given - 5.0) | (low > (given + 4.0) / 0.75 + 1.0)
        agrees = (low > 0.75 * given - 3.0) & (high < (given + 4.0) / 0.75 - 1.0)
        verdict = np.where(disagrees, 1, np.where(agrees, -1, 0))
        verdict[unsure] = 0
        return verdict

    def _report_areas(self, ks: list[int], estimates: list[float]) -> None:
        """Report the area field of entries ``ks``, certainly inconsistent (what
        :meth:`_report_area` does with verdict 1), without a call per finding: a
        converter that writes area = bbox area makes one per polygon annotation."""
        check = CHECKS["area.inconsistent"]
        code, severity, fixable = check.code, check.severity, check.fixable
        out = self.out
        for k, estimate in zip(ks, estimates, strict=True):
            meta = self.meta[k]
            if len(meta) == 3:
                index, image_id, aid = meta
                where = f"$.annotations[{index}].area"
            else:
                where = meta[0].removesuffix(".segmentation") + ".area"
                image_id, aid = meta[1].get("image_id"), meta[1].get("annotation_id")
            out.append(Finding(code, severity, Location(where, image_id, aid),
                               f"area {self.areas[k]:g} but the polygons cover about {estimate:.0f} px", fixable))

    def _report_area(self, k: int, verdict: int, estimate: float, covered: float | None) -> None:
        """Report annotation ``k``'s area field unless the raster area agrees with it;
        ``verdict`` from :meth:`_area_verdicts`, ``estimate`` the polygons' summed area,
        ``covered`` their raster area when already known."""
        if verdict < 0:
            return
        given = self.areas[k]
        if verdict == 0:
            # the shoelace estimate misjudges self-intersecting polygons; confirm with the
            # rasterised area pycocotools (and --fix) use before reporting
            if covered is None:
                raster = self._raster(k)
                covered = raster[0] if raster is not None else None
            if covered is not None:
                if not area_inconsistent(given, covered):
                    return
                estimate = covered
        spath, where = self._place(k)
        self.out.append(finding("area.inconsistent", f"area {given:g} but the polygons cover about "
                                f"{estimate:.0f} px", spath.removesuffix(".segmentation") + ".area", **where))

    def _raster_areas(self, ks: list[int]) -> dict[int, float]:
        """pycocotools' raster areas of entries ``ks``, as :meth:`_raster` gives them but
        rasterised in one call per image size; entries it cannot do are left out."""
        from pycocotools import mask as mask_utils

        groups: dict[tuple[int, int], list[int]] = {}
        for k in ks:
            width, height = self.sizes[k]
            if math.isfinite(width) and math.isfinite(height):
                groups.setdefault((int(height), int(width)), []).append(k)
        areas: dict[int, float] = {}
        for (height, width), group in groups.items():
            polys = {k: rasterisable_polygons(self._polys_of(k), height, width) for k in group}
            group = [k for k in group if polys[k]]  # nothing left to rasterise: left out
            try:
                rles = mask_utils.frPyObjects([poly for k in group for poly in polys[k]], height, width)
            except Exception:  # some polygon it cannot take: each on its own, as before
                continue
            merged, start = [], 0
            for k in group:
                n = len(polys[k])
                merged.append(mask_utils.merge(rles[start:start + n]))
                start += n
            # pycocotools' area() of more than 255 masks at once overflows a uint8 (2.0.11)
            for first in range(0, len(group), 200):
                areas.update(zip(group[first:first + 200], map(float, mask_utils.area(merged[first:first + 200])),
                                 strict=True))
        return areas

    def _raster(self, k: int) -> tuple[float, list[float]] | None:
        """Area and bbox of batch entry ``k``'s polygons rasterised by pycocotools."""
        width, height = self.sizes[k]
        if not (math.isfinite(width) and math.isfinite(height)):
            return None
        try:
            return segmentation_area_bbox(self._polys_of(k), int(height), int(width))
        except Exception:  # an unusable polygon set: keep the estimate
            return None

    def _polys_of(self, k: int) -> list[list[float]]:
        """Batch entry ``k``'s polygons as lists of floats (what pycocotools takes), from the
        arrays :meth:`_polygons` built: the same float values as queued."""
        if self._numbers_at is None:
            self._polygons()
        first, stop = int(self._first_polygon[k]), int(self._first_polygon[k + 1])
        return [self._flat[int(self._numbers_at[j]):int(self._numbers_at[j + 1])].tolist() for j in range(first, stop)]
