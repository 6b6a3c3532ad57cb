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
"""

from __future__ import annotations

from typing import Any

import torch
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
    ) -> None:
        matcher = GroundingDinoHungarianMatcher(class_cost=class_cost, bbox_cost=bbox_cost, giou_cost=giou_cost)
        self.criterion = BatchSafeImageLoss(matcher=matcher, focal_alpha=focal_alpha,
                                            losses=["labels", "boxes", "cardinality"])
        self.weights = {"loss_ce": ce_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.two_stage = two_stage

    @classmethod
    def from_model_config(cls, config: Any) -> GroundingDinoLoss:
        """Costs and weights from a transformers ``GroundingDinoConfig`` (as transformers uses them)."""
        return cls(
            class_cost=config.class_cost, bbox_cost=config.bbox_cost, giou_cost=config.giou_cost,
            focal_alpha=config.focal_alpha, bbox_weight=config.bbox_loss_coefficient,
            giou_weight=config.giou_loss_coefficient, two_stage=config.two_stage,
        )

    def __call__(self, outputs: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        label_maps = build_label_maps(logits, batch["input_ids"])
        text_mask = build_text_mask(logits, batch["attention_mask"])
        targets = batch["labels"]
        parts = self.criterion(
            {"logits": logits, "pred_boxes": outputs["pred_boxes"], "label_maps": label_maps, "text_mask": text_mask},
            targets,
        )
        proposals = self._encoder_proposals(outputs, num_queries=logits.shape[1]) if self.two_stage else None
        if proposals is not None:
            enc_logits, enc_boxes = proposals
            enc = self.criterion(
                {"logits": enc_logits, "pred_boxes": enc_boxes, "label_maps": label_maps, "text_mask": text_mask},
                targets,
            )
            parts.update({f"{k}_enc": v for k, v in enc.items()})
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
