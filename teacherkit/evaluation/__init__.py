"""Metrics: COCO box mAP (pycocotools) and prompted-mask IoU/dice."""

from teacherkit.evaluation.coco_metrics import bbox_metrics, segm_metrics
from teacherkit.evaluation.mask_metrics import prompted_mask_metrics

__all__ = ["bbox_metrics", "segm_metrics", "prompted_mask_metrics"]
