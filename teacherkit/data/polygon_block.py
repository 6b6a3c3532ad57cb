"""Polygons of consecutive annotations held as numpy arrays, for the polygon batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PolygonBlock:
    """Polygons of consecutive annotations as arrays: every number, polygon after polygon
    (``flat``), the numbers of each polygon (``lens``) and the polygons of each annotation
    (``counts``). The column path decodes a chunk's polygons and copies them here at once,
    while they are in cache, instead of the batch keeping a Python float per number."""

    flat: np.ndarray
    lens: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls) -> PolygonBlock:
        return cls(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.counts)

    def numbers(self) -> np.ndarray:
        """How many numbers each annotation's polygons hold (each has at least one polygon, as usual ones do)."""
        return np.add.reduceat(self.lens, np.concatenate(([0], np.cumsum(self.counts)[:-1]))) \
            if len(self.lens) else np.zeros(len(self.counts), dtype=np.int64)

    def take(self, start: int, stop: int) -> PolygonBlock:
        """Annotations ``start`` to ``stop`` (views, not copies)."""
        polygons = np.concatenate(([0], np.cumsum(self.counts)))
        p0, p1 = int(polygons[start]), int(polygons[stop])
        numbers = np.concatenate(([0], np.cumsum(self.lens[:p1])))
        return PolygonBlock(self.flat[int(numbers[p0]):int(numbers[p1])], self.lens[p0:p1], self.counts[start:stop])
