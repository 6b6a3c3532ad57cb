"""The core's annotation detectors: ``boxes`` and ``masks``.

A built-in plugin, registered through the same path as third-party plugins.
"""

from __future__ import annotations

from typing import Any

from teacherkit.hookspecs import hookimpl


def _has_box(ann: Any) -> bool:
    bbox = getattr(ann, "bbox", None)
    return bbox is not None and len(bbox) == 4


def _has_mask(ann: Any) -> bool:
    seg = getattr(ann, "segmentation", None)
    if not seg:
        return False
    if isinstance(seg, dict):  # RLE
        return bool(seg.get("counts"))
    return any(isinstance(poly, (list, tuple)) and len(poly) >= 6 for poly in seg)


@hookimpl
def teacherkit_detect_annotations(dataset: Any) -> list[str]:
    kinds: list[str] = []
    anns = dataset.annotations
    if any(_has_box(a) for a in anns):
        kinds.append("boxes")
    if any(_has_mask(a) for a in anns):
        kinds.append("masks")
    return kinds
