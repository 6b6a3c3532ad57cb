"""Metrics: COCO box/mask mAP (pycocotools) and prompted-mask IoU/dice, and
:func:`~teacherkit.evaluation.run.metrics_for`, the one place that picks a teacher's
metric (its own ``TeacherSpec.metric``, else the built-in one of its ``evaluation``).

Imported lazily so the CLI does not load numpy/pycocotools to print help."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "bbox_metrics": "teacherkit.evaluation.coco_metrics",
    "segm_metrics": "teacherkit.evaluation.coco_metrics",
    "prompted_mask_metrics": "teacherkit.evaluation.mask_metrics",
    "metrics_for": "teacherkit.evaluation.run",
    "evaluator": "teacherkit.evaluation.run",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(_EXPORTS[name]), name)
