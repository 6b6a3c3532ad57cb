"""Shape tests of polygons in numpy batches: which are star-shaped (so simple), and how far
pycocotools' raster area of a simple polygon can lie from its shoelace area.

Used by :mod:`~teacherkit.data.polygon_batch` to settle suspicious ``area`` fields without
rasterising each annotation.
"""

from __future__ import annotations

import numpy as np


def polygon_subset(xs: np.ndarray, ys: np.ndarray, lens: np.ndarray,
                   keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points, first points and successors of the polygons with ``keep`` (``lens`` points each)."""
    points = np.repeat(keep, lens)
    xs, ys, lens = xs[points], ys[points], lens[keep]
    starts = np.zeros(len(lens), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    nxt = np.arange(1, len(xs) + 1)
    nxt[starts + lens - 1] = starts  # each polygon closes on its own first point
    return xs, ys, starts, nxt


def star_shaped(xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Per polygon: whether its vertices go round a centre strictly one way, exactly once.
    Such a polygon is the union of the triangles (centre, vertex, next vertex), which
    cover disjoint angles: it is simple (never crosses itself). Centres tried: the area
    centroid, then for the rest one searched for by :func:`_search_centre`."""
    lens = np.diff(np.append(starts, len(xs)))
    owner = np.repeat(np.arange(len(starts)), lens)
    cross = xs * ys[nxt] - xs[nxt] * ys
    with np.errstate(invalid="ignore", divide="ignore"):
        twice_area = np.add.reduceat(cross, starts)
        cx = np.add.reduceat((xs + xs[nxt]) * cross, starts) / (3 * twice_area)
        cy = np.add.reduceat((ys + ys[nxt]) * cross, starts) / (3 * twice_area)
    found = _goes_round(xs, ys, starts, nxt, cx[owner], cy[owner])
    rest = ~found & np.isfinite(cx) & np.isfinite(cy)
    if rest.any():
        found[rest] = _search_centre(*polygon_subset(xs, ys, lens, rest), np.sign(twice_area[rest]), cx[rest],
                                     cy[rest])
    return found


#: Steps of the search for a centre a polygon goes round (most are found in a few).
CENTRE_STEPS = 4


def _search_centre(xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, nxt: np.ndarray, turn: np.ndarray,
                   cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Star test around a centre searched for: each step moves the centre onto the inner
    side of the edge line it lies furthest outside (relaxation towards the polygon's
    kernel, an intersection of half-planes); :func:`_goes_round` decides."""
    owner = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(xs))))
    dx, dy = xs - xs[nxt], ys - ys[nxt]
    length = np.hypot(dx, dy)
    ab = (xs * ys[nxt] - ys * xs[nxt]) * turn[owner]
    nx, ny = dy * turn[owner], -dx * turn[owner]  # how the side test grows with the centre
    index = np.arange(len(xs))
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(CENTRE_STEPS):
            side = (ab + cx[owner] * nx + cy[owner] * ny) / length  # distance inside each edge line
            worst = np.minimum.reduceat(side, starts)
            edge = np.minimum(np.minimum.reduceat(np.where(side == worst[owner], index, len(xs)), starts),
                              len(xs) - 1)
            move = np.where(worst < 0.05 * length[edge], 0.05 * length[edge] - worst, 0.0) / length[edge]
            cx = cx + move * nx[edge]
            cy = cy + move * ny[edge]
    return _goes_round(xs, ys, starts, nxt, cx[owner], cy[owner])


def _goes_round(xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, nxt: np.ndarray, cx: np.ndarray,
                cy: np.ndarray) -> np.ndarray:
    ax, ay = xs - cx, ys - cy
    bx, by = ax[nxt], ay[nxt]
    cross = ax * by - ay * bx
    with np.errstate(invalid="ignore", divide="ignore"):
        # a turn too small to be sure of its sign in floating point counts as neither way
        margin = 1e-9 * (np.abs(ax) + np.abs(ay)) * (np.abs(bx) + np.abs(by))
        one_way = np.minimum.reduceat(cross > margin, starts) | np.minimum.reduceat(cross < -margin, starts)
        # turning one way, a polygon goes round as often as it crosses the ray from the
        # centre along +x (each crossing counted once: half-open in y)
        ray = ((ay < 0) != (by < 0)) & (ax - ay * (bx - ax) / (by - ay) > 0)
    return one_way.astype(bool) & (np.add.reduceat(ray.astype(np.int64), starts) == 1)


def raster_slack(xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Per polygon: a bound on how far pycocotools' raster area of a simple polygon inside
    its image lies from the shoelace area. pycocotools rounds vertices to 1/5 px (at most
    0.1 (|dx| + |dy|) of area), samples each pixel column on one line near its centre and
    puts each boundary crossing on a whole row: at most 0.7 px per crossing (half a pixel
    of counting, 0.2 px of line drawing; an edge crosses |dx| + 1 columns). One sample per
    column misses how the boundary moves within the column: 0.1 of it along straight
    edges, all of it (at most min(|dy|, |dy / dx|) per edge end) where edges meet. Rounded
    up; tests check it against pycocotools. It only decides when rasterising is skipped."""
    ex, ey = np.abs(xs[nxt] - xs), np.abs(ys[nxt] - ys)
    with np.errstate(divide="ignore", invalid="ignore"):
        bend = np.where(ex > 1.0, ey / ex, ey)  # min(|dy|, |dy / dx|)
    return np.add.reduceat(0.9 * ex + 0.3 * ey + 0.8 + 2.0 * bend, starts) + 2.0
