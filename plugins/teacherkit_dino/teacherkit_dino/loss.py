"""transformers' Grounding DINO loss, as a standalone ``loss(outputs, batch)``.

The teacher's ``forward`` runs the model *without* labels, so the loss lives here and
another plugin can replace it through ``teacherkit_make_loss`` (``tryfirst=True``).
It is the loss transformers computes inside ``GroundingDinoForObjectDetection``: the
Hungarian matcher and ``GroundingDinoImageLoss`` (sigmoid focal loss over the tokens of
the matched phrase, L1 and GIoU on boxes), on the last decoder layer and, for two-stage
models, on the encoder proposals, weighted as transformers weights them.

One correction: transformers offsets each image's class labels into the concatenated
label maps by the *current* image's phrase count instead of the sum over the images
before it. That is right only while every image of the batch has the same prompt and
at most two images; with per-sample prompts (more classes than fit one prompt) it reads
another image's phrase. :class:`BatchSafeImageLoss` uses cumulative offsets.

A second correction: the two-stage (encoder proposal) term is computed on the
undetached top-k proposals, as the original Grounding DINO does, so the proposal head
learns (see :meth:`GroundingDinoLoss._encoder_proposals`).

Padded text cannot produce NaN: padded positions carry logit ``-inf`` and are removed
by the text mask before the focal loss, and images without boxes only add negatives.

Speed (issue 9): transformers' criterion waits for the GPU about a dozen times per call
(``.item()`` on the box count, box-format checks inside ``if``, ``masked_select``, one
``torch.unique`` per image for the label maps), which left the GPU idle for a third of
a Grounding DINO LoRA step. :class:`SyncFreeImageLoss` and :func:`label_maps_on_host`
compute the same values with one wait per call: the cost matrices of both matchings
(decoder and encoder proposals) that the Hungarian assignment (scipy) needs, copied
together; the prompt ids the label maps are read from come from the batch's host copy. The old
path stays available (``GroundingDinoLoss(sync_free=False)``) for comparison; the
benchmark ``bench/train_throughput.py`` measures both.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_grounding_dino import GroundingDinoHungarianMatcher, GroundingDinoImageLoss
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps, build_text_mask


class BatchSafeImageLoss(GroundingDinoImageLoss):
    """``GroundingDinoImageLoss`` with per-image label-map offsets that add up."""

    def _get_target_classes_one_hot(self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Any):
        logits = outputs["logits"]
        label_maps = outputs["label_maps"]
        offsets, total = [], 0
        for label_map in label_maps:
            offsets.append(total)
            total += len(label_map)
        class_labels = torch.cat(
            [target["class_labels"][j] + offset for target, (_, j), offset in zip(targets, indices, offsets)]
        )
        all_maps = torch.cat(label_maps, dim=0)
        idx = self._get_source_permutation_idx(indices)
        onehot = torch.zeros_like(logits, dtype=torch.long)
        onehot[idx] = all_maps[class_labels].to(torch.long)
        return onehot


def unchecked_generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of corner boxes, as transformers' ``generalized_box_iou`` computes it,
    without its ``if not (x1 >= x0).all()`` checks: each check reads a GPU value on the
    host. Our boxes cannot be inverted: predictions are sigmoid ``(cx, cy, w, h)`` with
    ``w, h >= 0`` and the preprocessor writes non-negative target sizes."""
    boxes1, boxes2 = boxes1.float(), boxes2.float()
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    inter_wh = (torch.min(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, None, :2], boxes2[:, :2]))
    inter_wh = inter_wh.clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1[:, None] + area2 - inter
    hull_wh = (torch.max(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, None, :2], boxes2[:, :2]))
    hull = hull_wh.clamp(min=0).prod(-1)
    return inter / union - (hull - union) / hull


def label_maps_on_host(logits: torch.Tensor, input_ids: torch.Tensor,
                       host_ids: Any = None) -> tuple[torch.Tensor, ...]:
    """transformers' ``build_label_maps`` run on a host copy of the (small) prompt ids,
    then moved to the logits' device: one ``torch.unique`` per image on the host instead of
    on the device. ``host_ids`` (the collate's numpy copy) avoids even the one wait that
    copying ``input_ids`` back would cost."""
    ids = torch.from_numpy(host_ids) if host_ids is not None else input_ids.cpu()
    maps = build_label_maps(logits, ids)
    return tuple(m.to(logits.device, non_blocking=True) for m in maps)


class SyncFreeMatcher(GroundingDinoHungarianMatcher):
    """transformers' Grounding DINO matcher (same costs, same scipy assignment) with the
    unchecked GIoU: the only wait left is copying the cost matrix to the host."""

    def forward(self, outputs: dict[str, Any],
                targets: list[dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.match_many([outputs], targets)[0]

    @torch.no_grad()
    def match_many(self, many: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[list[tuple[Any, Any]]]:
        """Match several prediction sets (the decoder's, the encoder proposals') against
        the same targets with one copy of all their cost matrices to the host."""
        from scipy.optimize import linear_sum_assignment

        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [[(empty, empty) for _ in sizes] for _ in many]
        costs = [self.cost_matrix(outputs, targets) for outputs in many]
        same = len({c.shape for c in costs}) == 1
        host = list(torch.stack(costs).cpu()) if same else [c.cpu() for c in costs]
        result = []
        for cost in host:
            indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
            result.append([(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
                           for i, j in indices])
        return result

    @torch.no_grad()
    def cost_matrix(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> torch.Tensor:
        """``(B, queries, all targets)`` matching costs on the device (transformers' costs)."""
        batch_size, num_queries = outputs["logits"].shape[:2]
        out_prob = outputs["logits"].flatten(0, 1).sigmoid()
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        maps = torch.cat([m[t["class_labels"]] for m, t in zip(outputs["label_maps"], targets)])
        maps = maps / maps.sum(dim=-1, keepdim=True)
        target_bbox = torch.cat([t["boxes"] for t in targets])
        alpha, gamma = 0.25, 2.0  # fixed in transformers' matcher as well
        neg = (1 - alpha) * (out_prob**gamma) * (-(1 - out_prob + 1e-8).log())
        pos = alpha * ((1 - out_prob) ** gamma) * (-(out_prob + 1e-8).log())
        class_cost = (pos - neg) @ maps.t()
        bbox_cost = torch.cdist(out_bbox, target_bbox, p=1)
        giou_cost = -unchecked_generalized_box_iou(center_to_corners_format(out_bbox),
                                                   center_to_corners_format(target_bbox))
        cost = self.bbox_cost * bbox_cost + self.class_cost * class_cost + self.giou_cost * giou_cost
        big = torch.finfo(cost.dtype).max
        return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big).view(batch_size, num_queries, -1)


class SyncFreeImageLoss(BatchSafeImageLoss):
    """:class:`BatchSafeImageLoss` that never reads a GPU value on the host after matching.

    Same terms and normalisation: the box count is a host number (the mean over
    processes, as transformers takes it, stays a device tensor under DDP); the focal
    loss sums over the text mask with ``torch.where`` instead of ``masked_select``
    (whose output size needs a wait); matched indices go to the device once.
    """

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Any]],
                indices: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        device = outputs["logits"].device
        if indices is None:
            indices = self.matcher(outputs, targets)
        indices = [(i.to(device, non_blocking=True), j.to(device, non_blocking=True)) for i, j in indices]
        num_boxes: float | torch.Tensor = max(float(sum(len(t["class_labels"]) for t in targets)), 1.0)
        world = _world_size()
        if world > 1:
            from accelerate.utils import reduce

            total = torch.as_tensor([sum(len(t["class_labels"]) for t in targets)], dtype=torch.float, device=device)
            num_boxes = torch.clamp(reduce(total) / world, min=1)[0]
        losses: dict[str, torch.Tensor] = {}
        for name in self.losses:
            losses.update(self.get_loss(name, outputs, targets, indices, num_boxes))
        return losses

    def loss_labels(self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Any, num_boxes: Any):
        logits, mask = outputs["logits"], outputs["text_mask"]
        target = self._get_target_classes_one_hot(outputs, targets, indices).float()
        # padded positions hold -inf; replace before the arithmetic so neither value nor gradient is NaN
        x = torch.where(mask, logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
        prob = x.sigmoid()
        ce = torch.nn.functional.binary_cross_entropy_with_logits(x, target, reduction="none")
        p_t = prob * target + (1 - prob) * (1 - target)
        loss = ce * ((1 - p_t) ** 2)
        alpha = self.focal_alpha
        if alpha >= 0:
            loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
        loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
        return {"loss_ce": loss.sum() / num_boxes}

    def loss_boxes(self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Any, num_boxes: Any):
        idx = self._get_source_permutation_idx(indices)
        source = outputs["pred_boxes"][idx]
        target = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)], dim=0)
        loss_bbox = torch.nn.functional.l1_loss(source, target, reduction="none").sum() / num_boxes
        giou = torch.diag(unchecked_generalized_box_iou(center_to_corners_format(source),
                                                        center_to_corners_format(target)))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}


def _world_size() -> int:
    """Processes training together, as transformers' criterion reads it (accelerate's state)."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency of the core
        return 1
    if PartialState._shared_state == {}:
        return 1
    return int(PartialState().num_processes)


class GroundingDinoLoss:
    """``loss(outputs, batch) -> {"loss", "loss_ce", "loss_bbox", "loss_giou", ...}``.

    ``outputs`` is the model output (``logits``, ``pred_boxes`` and, for two-stage models,
    ``encoder_logits``/``encoder_pred_boxes``); ``batch`` gives ``input_ids`` and
    ``attention_mask`` (to find phrases and padding) and ``labels``. Components other
    than ``loss`` are detached, for logging.
    """

    def __init__(
        self,
        *,
        class_cost: float = 1.0,
        bbox_cost: float = 5.0,
        giou_cost: float = 2.0,
        focal_alpha: float = 0.25,
        ce_weight: float = 2.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        two_stage: bool = True,
        sync_free: bool = True,
    ) -> None:
        matcher_cls, criterion_cls = (SyncFreeMatcher, SyncFreeImageLoss) if sync_free else (
            GroundingDinoHungarianMatcher, BatchSafeImageLoss)
        matcher = matcher_cls(class_cost=class_cost, bbox_cost=bbox_cost, giou_cost=giou_cost)
        self.criterion = criterion_cls(matcher=matcher, focal_alpha=focal_alpha,
                                       losses=["labels", "boxes", "cardinality"])
        self.sync_free = sync_free
        self.weights = {"loss_ce": ce_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.two_stage = two_stage

    @classmethod
    def from_model_config(cls, config: Any, *, sync_free: bool = True) -> GroundingDinoLoss:
        """Costs and weights from a transformers ``GroundingDinoConfig`` (as transformers uses them)."""
        return cls(
            class_cost=config.class_cost, bbox_cost=config.bbox_cost, giou_cost=config.giou_cost,
            focal_alpha=config.focal_alpha, bbox_weight=config.bbox_loss_coefficient,
            giou_weight=config.giou_loss_coefficient, two_stage=config.two_stage, sync_free=sync_free,
        )

    def __call__(self, outputs: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        input_ids = batch["input_ids"]
        if self.sync_free:
            label_maps = label_maps_on_host(logits, input_ids, batch.get("input_ids_host"))
        else:
            label_maps = build_label_maps(logits, input_ids)
        text_mask = build_text_mask(logits, batch["attention_mask"])
        targets = batch["labels"]
        sets = [{"logits": logits, "pred_boxes": outputs["pred_boxes"], "label_maps": label_maps,
                 "text_mask": text_mask}]
        proposals = self._encoder_proposals(outputs, num_queries=logits.shape[1]) if self.two_stage else None
        if proposals is not None:
            enc_logits, enc_boxes = proposals
            sets.append({"logits": enc_logits, "pred_boxes": enc_boxes, "label_maps": label_maps,
                         "text_mask": text_mask})
        if isinstance(self.criterion, SyncFreeImageLoss) and hasattr(self.criterion.matcher, "match_many"):
            # both matchings with one wait for the device
            matched = self.criterion.matcher.match_many(sets, targets)
            results = [self.criterion(s, targets, indices=m) for s, m in zip(sets, matched)]
        else:
            results = [self.criterion(s, targets) for s in sets]
        parts = dict(results[0])
        if len(results) > 1:
            parts.update({f"{k}_enc": v for k, v in results[1].items()})
        total = sum(value * self.weights[key.removesuffix("_enc")] for key, value in parts.items()
                    if key.removesuffix("_enc") in self.weights)
        result = {"loss": total}
        result.update({k: v.detach() for k, v in parts.items()})
        return result

    def _encoder_proposals(self, outputs: Any, num_queries: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The two-stage proposals the decoder starts from, *with* their gradient.

        transformers returns them as ``encoder_logits``/``encoder_pred_boxes`` computed from
        detached tensors, so a loss on those never reaches the proposal box head and
        only half-reaches the encoder. The original Grounding DINO (as DINO) supervises
        the undetached top-k proposals; we select the same top-k from
        ``enc_outputs_class``/``enc_outputs_coord_logits`` (identical values, gradient
        kept). Falls back to transformers' tensors when those are absent.
        """
        enc_class = outputs.get("enc_outputs_class")
        enc_coord = outputs.get("enc_outputs_coord_logits")
        if enc_class is None or enc_coord is None:
            logits = outputs.get("encoder_logits")
            return None if logits is None else (logits, outputs["encoder_pred_boxes"])
        k = min(num_queries, enc_class.shape[1])
        top = torch.topk(enc_class.max(-1)[0], k, dim=1)[1]
        logits = torch.gather(enc_class, 1, top.unsqueeze(-1).expand(-1, -1, enc_class.shape[-1]))
        boxes = torch.gather(enc_coord, 1, top.unsqueeze(-1).expand(-1, -1, 4)).sigmoid()
        return logits, boxes
