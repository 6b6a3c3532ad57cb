"""Model outputs → COCO detections: phrase scores, thresholds, chunk merge, per-class NMS.

Scoring (per query, per prompt): a token's probability is ``sigmoid(logit)``; a
phrase's score is the highest probability among its tokens; the box score is the
highest probability over all prompt tokens (as transformers' post-processing does). A
query becomes a detection when its box score reaches ``box_threshold`` and its best
phrase reaches ``text_threshold``; it gets that phrase's class and score. Candidates
from every prompt chunk are merged, suppressed per class and cut to ``max_detections``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Candidates:
    """Detections of one image in normalised ``cxcywh`` before merging."""

    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    classes: list[torch.Tensor]


def score_chunk(
    logits: torch.Tensor, prompt_len: int, spans: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(box_score, phrase_score, phrase_index)``, each ``(B, Q)``, for one prompt."""
    probs = logits[..., :prompt_len].float().sigmoid()
    phrase_scores = torch.stack([probs[..., s:e].amax(-1) for s, e in spans], dim=-1)
    best, index = phrase_scores.max(-1)
    return probs.amax(-1), best, index


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def per_class_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices kept by greedy NMS applied within each class, highest score first."""
    order = scores.argsort(descending=True)
    boxes, classes = boxes[order], classes[order]
    overlaps = box_iou_xyxy(boxes, boxes)
    same = classes[:, None] == classes[None, :]
    suppress = (overlaps > iou) & same
    # One host copy of the suppression matrix; the greedy pass is a short Python loop.
    suppress_cpu, keep_list = suppress.cpu(), []
    alive = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep_list.append(i)
        alive &= ~suppress_cpu[i]
    keep = torch.as_tensor(keep_list, dtype=torch.long, device=boxes.device)
    return order[keep]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def to_detections(
    candidates: Candidates,
    *,
    image_id: int,
    orig_size: tuple[int, int],
    category_ids: Sequence[int],
    nms_iou: float | None,
    max_detections: int,
) -> list[dict[str, Any]]:
    """Merge one image's candidates into COCO detections in original pixels."""
    if not candidates.boxes or sum(len(b) for b in candidates.boxes) == 0:
        return []
    boxes = cxcywh_to_xyxy(torch.cat(candidates.boxes).float())
    scores = torch.cat(candidates.scores).float()
    classes = torch.cat(candidates.classes)
    height, width = orig_size
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    boxes = (boxes * scale).clamp(min=0)
    boxes = torch.minimum(boxes, scale)
    keep = per_class_nms(boxes, scores, classes, nms_iou) if nms_iou is not None else scores.argsort(descending=True)
    keep = keep[:max_detections]
    out = []
    for box, score, cls in zip(boxes[keep].tolist(), scores[keep].tolist(), classes[keep].tolist(), strict=True):
        x0, y0, x1, y1 = box
        out.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[int(cls)]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(score),
        })
    return out
