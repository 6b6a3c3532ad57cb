"""COCO segmentations as masks, and the geometry validation needs without decoding.

Three segmentation forms exist in COCO files, and pycocotools' meaning is kept for each:

* polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates;
* compressed RLE: ``{"size": [h, w], "counts": "<pycocotools string>"}`` (``str`` or
  ``bytes`` counts);
* uncompressed RLE: ``{"size": [h, w], "counts": [run, run, ...]}``, runs over the
  column-major (Fortran order) flattened mask, starting with a run of zeros.

pycocotools is imported inside the functions that need it so importing this module
stays cheap for the CLI.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from teacherkit.errors import DataError

SegmentationKind = str  # "polygons" | "rle" | "uncompressed_rle"


def segmentation_kind(segmentation: Any) -> SegmentationKind | None:
    """Which of the three COCO forms ``segmentation`` has, or ``None`` when it is none of
    them (the form only; whether its content is valid is validation's job)."""
    if isinstance(segmentation, list):
        return "polygons"
    if isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            return "uncompressed_rle"
        if isinstance(counts, (str, bytes)):
            return "rle"
    return None


#: How far (in image sides) a polygon may reach past the image before it is clipped for
#: rasterising: pycocotools walks each edge pixel by pixel, so one vertex 1e16 px away exhausts
#: the memory of the machine (found by the property test of validation).
FAR_SIDES = 8


def rasterisable_polygons(polygons: list[list[float]], height: int, width: int) -> list[list[float]]:
    """``polygons`` as pycocotools can rasterise them in bounded time and memory: one that reaches
    more than :data:`FAR_SIDES` image sides past the image is clipped to that distance
    (Sutherland-Hodgman; dropped when nothing is left), the others are returned as they are.
    Inside the image a clipped polygon's mask differs from the unclipped one's by a few pixels at
    most, along the clipped edges (pycocotools rounds the new end points to its 5x grid)."""
    reach = FAR_SIDES * max(height, width, 1)
    box = (-reach, -reach, width + reach, height + reach)
    out = []
    for poly in polygons:
        values = np.asarray(poly, dtype=np.float64)
        xs, ys = values[0::2], values[1::2]
        # NaN compares false: such a polygon takes the slow path below, where it is dropped
        if ((xs >= box[0]) & (xs <= box[2])).all() and ((ys >= box[1]) & (ys <= box[3])).all():
            out.append(poly)
        elif np.isfinite(values).all() and len(values) % 2 == 0:
            clipped = clip_polygon(poly, box)
            if len(clipped) >= 6:
                out.append(clipped)
    return out


def clip_polygon(poly: list[float], box: tuple[float, float, float, float]) -> list[float]:
    """The flat ``[x0, y0, x1, y1, ...]`` polygon clipped to ``box`` ``(x0, y0, x1, y1)``
    (Sutherland-Hodgman: one pass per side of the box)."""
    x0, y0, x1, y1 = box
    points = list(zip(poly[0::2], poly[1::2]))

    def at_x(x: float) -> Any:
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y: float) -> Any:
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    for inside, cross in ((lambda p: p[0] >= x0, at_x(x0)), (lambda p: p[0] <= x1, at_x(x1)),
                          (lambda p: p[1] >= y0, at_y(y0)), (lambda p: p[1] <= y1, at_y(y1))):
        kept = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            if inside(cur) != inside(prev):
                kept.append(cross(prev, cur))
            if inside(cur):
                kept.append(cur)
        points = kept
        if not points:
            break
    return [float(v) for point in points for v in point]


def _to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One compressed RLE (bytes counts, as pycocotools' C API wants) for any form."""
    from pycocotools import mask as mask_utils

    kind = segmentation_kind(segmentation)
    if kind == "polygons":
        polygons = rasterisable_polygons([[float(v) for v in poly] for poly in segmentation], height, width)
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if kind == "uncompressed_rle":
        h, w = (int(v) for v in segmentation["size"])
        return mask_utils.frPyObjects(segmentation, h, w)
    if kind == "rle":
        counts = segmentation["counts"]
        return {"size": [int(v) for v in segmentation["size"]],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise ValueError(f"not a COCO segmentation: {type(segmentation).__name__}")


#: pycocotools counts a mask's pixels in 32-bit integers: a larger mask overflows its
#: buffer arithmetic and crashes the process instead of raising.
MAX_MASK_PIXELS = 2**31 - 1


class SegmentationError(DataError, ValueError):
    """A segmentation cannot be decoded for its image; the message names where it is.
    (A ``ValueError`` too, for callers written when that was what this module raised.)"""


def check_segmentation(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> None:
    """Refuse, before pycocotools sees it, a segmentation that would decode wrongly or
    crash: an image size past :data:`MAX_MASK_PIXELS`, an RLE whose ``size`` differs from
    the image's, RLE runs that are negative or do not add up to ``height * width``.

    :param where: names the annotation in messages (``"train.json annotation 17"``).
    :raises SegmentationError: naming ``where`` and the sizes.
    """
    if not (is_number(height) and is_number(width)) or height <= 0 or width <= 0 or height * width > MAX_MASK_PIXELS:
        raise SegmentationError(f"{where}: image size [{height}, {width}] cannot hold a mask "
                                f"(at most {MAX_MASK_PIXELS} pixels)")
    kind = segmentation_kind(segmentation)
    if kind is None:
        raise SegmentationError(f"{where}: expected polygons (a list) or RLE (a dict with size and counts), "
                                f"got {type(segmentation).__name__}")
    if kind == "polygons":
        return
    size = segmentation.get("size")
    if not isinstance(size, list) or len(size) != 2 or [height, width] != size:
        raise SegmentationError(f"{where}: RLE size {size} differs from the image size [{height}, {width}]")
    counts = segmentation["counts"]
    try:
        runs = decode_rle_string(counts) if kind == "rle" else counts
    except ValueError as exc:
        raise SegmentationError(f"{where}: {exc}") from exc
    if not all(is_number(r) and r >= 0 for r in runs):
        raise SegmentationError(f"{where}: RLE counts must be non-negative run lengths")
    if sum(runs) != height * width:
        raise SegmentationError(f"{where}: RLE runs cover {sum(runs)} pixels, the image has {height * width} "
                                f"([{height}, {width}])")


def segmentation_to_mask(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> np.ndarray:
    """The binary mask ``(height, width)`` uint8 of a polygon list, compressed RLE (str or
    bytes counts) or uncompressed RLE, rasterised exactly as pycocotools does.
    Polygons of fewer than 3 points cover nothing and are left out.

    Everything is checked first (:func:`check_segmentation`): a wrong RLE size or run
    total raises rather than returning a mask of the wrong shape, or crashing.

    :param where: names the annotation in error messages (``"train.json annotation 17"``).
    :raises SegmentationError: a :class:`~teacherkit.errors.DataError` naming ``where``.
    """
    from pycocotools import mask as mask_utils

    check_segmentation(segmentation, height, width, where=where)
    if isinstance(segmentation, list):
        segmentation = [poly for poly in segmentation if isinstance(poly, list) and len(poly) >= 6]
    try:
        rle = _to_rle(segmentation, height, width)
        mask = mask_utils.decode([rle])[:, :, 0]  # the list form avoids a numpy-2 deprecation path
    except (TypeError, ValueError) as exc:  # pycocotools raises bare errors on bad input
        raise SegmentationError(f"{where}: cannot decode segmentation: {exc}") from exc
    return np.ascontiguousarray(mask, dtype=np.uint8)


def segmentation_to_rle(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> dict[str, Any]:
    """:func:`segmentation_to_mask` without the pixels: one compressed RLE (bytes counts)
    for pycocotools' mask functions (``area``, ``iou``), after the same checks.

    :raises SegmentationError: naming ``where``.
    """
    check_segmentation(segmentation, height, width, where=where)
    if isinstance(segmentation, list):
        segmentation = [poly for poly in segmentation if isinstance(poly, list) and len(poly) >= 6]
    try:
        return _to_rle(segmentation, height, width)
    except (TypeError, ValueError) as exc:
        raise SegmentationError(f"{where}: cannot decode segmentation: {exc}") from exc


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a compressed RLE (``str`` or ``bytes`` counts) carrying its own size, such
    as a prediction, to an ``(H, W)`` uint8 mask (checked as :func:`segmentation_to_mask`)."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if not isinstance(size, list) or len(size) != 2:
        raise SegmentationError(f"RLE without a [height, width] size: {size!r}")
    return segmentation_to_mask(rle, size[0], size[1], where="RLE")


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a 2-D mask, with ``str`` counts (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask) > 0, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """``[x, y, w, h]`` of the mask's foreground (pixel edges); ``[0, 0, 0, 0]`` when empty,
    as pycocotools' ``toBbox`` returns."""
    mask = np.asarray(mask)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    rows = np.flatnonzero(mask.any(axis=1))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def segmentation_area_bbox(segmentation: Any, height: int, width: int) -> tuple[float, list[float]]:
    """Pixel area and ``[x, y, w, h]`` of a segmentation without materialising the mask
    (pycocotools works on the run lengths)."""
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width)
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]


def compress_rle(segmentation: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE → compressed RLE with ``str`` counts (same mask)."""
    h, w = (int(v) for v in segmentation["size"])
    rle = _to_rle(segmentation, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def decode_rle_string(counts: str | bytes) -> list[int]:
    """Run lengths of a pycocotools compressed-RLE string.

    Pure Python so that malformed strings are *detected*: pycocotools' C decoder reads
    whatever it is given. Raises ``ValueError`` naming the character position of the
    first problem (a character outside ``0``-``o``, a string cut inside a number, a
    negative run).
    """
    text = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        start = pos
        while more:
            if pos >= n:
                raise ValueError(f"counts string ends inside a run length (from character {start})")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"counts string has an invalid character {text[pos]!r} at position {pos}")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift  # sign-extend the last 5-bit group
        if len(runs) > 2:
            value += runs[-2]  # pycocotools stores runs after the second as deltas
        if value < 0:
            raise ValueError(f"counts string decodes to a negative run length at position {start}")
        runs.append(value)
    return runs


def polygon_area(polygon: list[float]) -> float:
    """Shoelace area of one flat polygon ``[x1, y1, ...]`` (close to, not exactly, the
    rasterised pixel area pycocotools reports)."""
    xs, ys = polygon[0::2], polygon[1::2]
    n = len(xs)
    total = 0.0
    for i in range(n):
        j = (i + 1) % n
        total += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(total) / 2.0


def is_number(value: Any) -> bool:
    """A JSON number (bool is not one, although Python says it is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float: not NaN, infinity, or an integer beyond float
    range (math.isfinite raises on those)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
