"""The usual annotations checked a chunk at a time, column by column.

:meth:`AnnotationChecker.check <teacherkit.data.annotation_checks.AnnotationChecker.check>`
costs a few microseconds of Python per annotation, most of validation's time on a
train2017-sized file. Here a chunk of annotations is tested at once with set and list
operations that run in C: when every annotation of the chunk is one that
``AnnotationChecker._check_usual`` would accept (new integer id, known image and category,
a finite box inside the image, a valid area, polygons of at least three points, no crowd
flag, keypoints or repeated object), the chunk's effects are those of accepting each in
turn; otherwise nothing has changed and the caller checks the chunk one annotation at a
time. All tests run before any effect, so a chunk is either taken whole or not at all.
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import attrgetter, eq, is_, is_not
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from teacherkit.data.polygon_batch import EDGE_TOLERANCE
from teacherkit.data.polygon_block import PolygonBlock
from teacherkit.data.rawcoco import UNSET, RawAnnotation, decode_polygons

if TYPE_CHECKING:
    from teacherkit.data.annotation_checks import AnnotationChecker

#: Annotations per chunk: one unusual annotation sends this many down the exact path.
CHUNK = 2048
#: Beyond this magnitude, numbers may not convert to float exactly (or their sums may
#: round): such chunks take the exact path, which does Python's arithmetic.
_EXACT = float(1 << 52)

_FIELDS = attrgetter("id", "image_id", "category_id", "bbox", "area", "iscrowd", "keypoints", "segmentation")
_INT = {int}
_NUMBERS = {int, float}
_CROWD_TYPES = {int, type(UNSET)}
_MANY_POLYGONS = msgspec.json.Decoder(list[list[list[float]]])


def check_chunk(checker: AnnotationChecker, first: int, chunk: list[Any]) -> None:
    """Check ``chunk`` (annotations ``first, first + 1, ...``): runs of usual annotations in
    bulk, each other one by :meth:`AnnotationChecker.check`, in file order (which decides
    which of two equal ids or objects is the repeat)."""
    usual, polygons, columns = _usual_mask(checker, chunk)
    taken = done = 0  # done: the usual annotations' polygons handed on so far
    for start, stop in _runs(usual):
        for index in range(taken, start):
            checker.check(first + index, chunk[index])
        run = stop - start
        if not _take_run(checker, first + start, [column[start:stop] for column in columns],
                         polygons.take(done, done + run)):
            for index in range(start, stop):
                checker.check(first + index, chunk[index])
        done += run
        taken = stop
    for index in range(taken, len(chunk)):
        checker.check(first + index, chunk[index])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of ``True`` in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _usual_mask(checker: AnnotationChecker, chunk: list[Any]
                ) -> tuple[np.ndarray, PolygonBlock, list[tuple[Any, ...]]]:
    """Which annotations pass every test of ``_check_usual`` that does not depend on the
    annotations before them (ids and objects seen), the polygons of those that do, and the
    chunk's fields column by column."""
    n = len(chunk)
    none = np.zeros(n, dtype=bool), PolygonBlock.empty(), []
    if not chunk or set(map(type, chunk)) != {RawAnnotation}:
        return none
    columns = list(zip(*map(_FIELDS, chunk), strict=True))
    ids, image_ids, category_ids, bboxes, areas, iscrowds, keypoints, segmentations = columns
    # the chunk-wide shape every usual annotation has; a chunk without it goes one by one
    if not (set(map(type, ids)) == _INT and set(map(type, image_ids)) == _INT
            and set(map(type, category_ids)) == _INT and set(map(type, areas)) <= _NUMBERS
            and set(map(type, segmentations)) == {msgspec.Raw}
            and set(map(type, bboxes)) == {list} and set(map(len, bboxes)) == {4}
            and set(map(type, chain.from_iterable(bboxes))) <= _NUMBERS):
        return none
    sizes = list(map(checker.image_sizes.get, image_ids))
    usual = np.fromiter(map(is_not, sizes, repeat(None)), dtype=bool, count=n)
    usual &= np.fromiter(map(checker.category_ids.__contains__, category_ids), dtype=bool, count=n)
    if set(map(type, iscrowds)) <= _CROWD_TYPES:  # absent or integers: compared in C
        usual &= np.fromiter(map(is_, iscrowds, repeat(UNSET)), dtype=bool, count=n) \
            | np.fromiter(map(eq, iscrowds, repeat(0)), dtype=bool, count=n)
    else:
        usual &= np.fromiter(map(_not_crowd, iscrowds), dtype=bool, count=n)
    usual &= np.fromiter(map(is_, keypoints, repeat(UNSET)), dtype=bool, count=n) \
        | np.fromiter(map(is_, keypoints, repeat(None)), dtype=bool, count=n)
    usual &= _boxes_usual(bboxes, areas, [size or (0, 0) for size in sizes])
    usual, polygons = _polygons_usual(usual, segmentations)
    return usual, polygons, columns


def _not_crowd(value: Any) -> bool:
    return value is UNSET or (type(value) is int and value == 0)


def _take_run(checker: AnnotationChecker, first: int, columns: list[tuple[Any, ...]],
              polygons: PolygonBlock) -> bool:
    """Accept a run of annotations that are usual apart from their ids and objects, as
    ``_check_usual`` accepts each; ``False``, having changed nothing, when an id or an
    object repeats (the exact path reports it)."""
    ids, image_ids, category_ids, bboxes, areas = columns[:5]
    n = len(ids)
    if len(set(ids)) != n or not checker.seen_ids.isdisjoint(ids):
        return False
    keys = [hash((image_id, category_id, *box)) for image_id, category_id, box in zip(image_ids, category_ids,
                                                                                      bboxes, strict=True)]
    if len(set(keys)) != n or not checker.seen_objects.isdisjoint(keys):
        return False
    checker.seen_ids.update(ids)
    _queue_run(checker, first, polygons, list(map(checker.image_sizes.__getitem__, image_ids)),
               list(map(tuple, bboxes)), list(areas), list(image_ids), list(ids))
    category_images = checker.category_images
    for category_id, image_id in zip(category_ids, image_ids, strict=True):
        category_images[category_id].add(image_id)
    checker.seen_objects.update(keys)
    return True


def _queue_run(checker: AnnotationChecker, first: int, polygons: PolygonBlock, sizes: list[tuple[int, int]],
               boxes: list[tuple[Any, ...]], areas: list[Any], image_ids: list[Any], ids: list[Any]) -> None:
    """Queue a run's polygons, flushing the batch before each annotation that finds it
    full, as :meth:`AnnotationChecker.check` does: the batches, so the order of the
    findings, are those of checking one annotation at a time."""
    batch = checker.batch
    # numbers queued up to each annotation, inclusive
    numbers = np.cumsum(polygons.numbers())
    start = 0
    while start < len(polygons):
        if batch.full():
            checker.flush()
        before = int(numbers[start - 1]) if start else 0
        # up to the first annotation that fills the batch: the next one flushes it
        stop = min(len(polygons), int(np.searchsorted(numbers, before + batch.room(), side="left")) + 1)
        batch.queue_many(polygons.take(start, stop), sizes[start:stop], boxes[start:stop], areas[start:stop],
                         first + start, image_ids[start:stop], ids[start:stop])
        start = stop


def _boxes_usual(bboxes: tuple[list[Any], ...], areas: tuple[Any, ...], sizes: list[tuple[int, int]]) -> np.ndarray:
    """Per annotation: whether its box is finite, of positive size and inside its image
    (within the edge tolerance) and its area finite and >= 0, as ``_check_usual`` tests them."""
    n = len(bboxes)
    try:
        box = np.fromiter(chain.from_iterable(bboxes), dtype=np.float64, count=4 * n).reshape(n, 4)
        area = np.fromiter(areas, dtype=np.float64, count=n)
    except OverflowError:  # an integer beyond float range
        return np.zeros(n, dtype=bool)
    size = np.fromiter(chain.from_iterable(sizes), dtype=np.float64, count=2 * n).reshape(n, 2)
    x, y, w, h = box.T
    width, height = size.T
    with np.errstate(invalid="ignore", over="ignore"):
        return ((np.abs(box) < _EXACT).all(axis=1) & (np.abs(area) < _EXACT) & np.isfinite(x + y + w + h + area)
                & (w > 0) & (h > 0) & (area >= 0) & (x >= -EDGE_TOLERANCE) & (y >= -EDGE_TOLERANCE)
                & (x + w <= width + EDGE_TOLERANCE) & (y + h <= height + EDGE_TOLERANCE) & (x < width)
                & (y < height))


def _polygons_usual(usual: np.ndarray, segmentations: tuple[msgspec.Raw, ...]) -> tuple[np.ndarray, PolygonBlock]:
    """``usual`` narrowed to annotations whose segmentation is a non-empty list of polygons
    of finite floats, each of an even count of at least 6 numbers, and those polygons as
    arrays (copied while the decoded floats are in cache; the floats are then dropped)."""
    candidates = np.flatnonzero(usual).tolist()
    raws = [segmentations[i] for i in candidates]
    try:  # one call for the chunk; one per annotation when some candidate is not polygons
        decoded: list[Any] = _MANY_POLYGONS.decode(b"[" + b",".join(raws) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        decoded = list(map(decode_polygons, raws))
    if None in decoded:
        decoded = [polygons or [] for polygons in decoded]  # not polygons: no polygon, so not usual
    counts = np.fromiter(map(len, decoded), dtype=np.int64, count=len(decoded))
    lengths = np.fromiter(map(len, chain.from_iterable(decoded)), dtype=np.int64, count=int(counts.sum()))
    # an annotation is usual when it has polygons and none is short or odd
    owner = np.repeat(np.arange(len(decoded)), counts)
    bad = np.bincount(owner, weights=(lengths < 6) | (lengths & 1 == 1), minlength=len(decoded))
    numbers = np.bincount(owner, weights=lengths, minlength=len(decoded)).astype(np.int64)
    good = (counts > 0) & (bad == 0)
    ok = good.tolist()
    usual = usual.copy()
    usual[candidates] = ok
    kept = [polygons for polygons, keep in zip(decoded, ok, strict=True) if keep]
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(kept)), dtype=np.float64,
                       count=int(numbers[good].sum()))
    return usual, PolygonBlock(flat, lengths[np.repeat(good, counts)], counts[good])
