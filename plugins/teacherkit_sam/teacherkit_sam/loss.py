"""SAM's training loss: focal + dice on the mask, MSE on the predicted IoU.

Weights follow the SAM paper (focal 20 : dice 1 : IoU 1) and are configurable.
Where the masks are compared (``loss_resolution``):

``"input"`` (default)
    The decoder's low-resolution logits (4x the embedding grid: 256² for a 1024 input)
    are upsampled bilinearly to the padded model input, exactly as inference does
    before cropping and resizing to the original image, and compared there against
    the ground truth moved into the same frame. The loss thus scores the mask users
    get, and thin parts and one-pixel objects survive instead of being averaged away.
``"low_res"``
    Targets are area-averaged down to the logits' grid (soft values, so small objects
    keep a faint presence); 16x less memory per instance, blurrier boundaries.

Only the image area counts: the square's padding is outside every evaluation.
With several masks per prompt (one ambiguous point) only the best one, by the
combined mask loss, is trained, as in the paper. Empty targets are handled by the
dice smoothing term (the loss then pushes the mask to nothing) and an empty
prediction of an empty target counts as IoU 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SamLoss:
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    resolution: str = "input"  # "input" | "low_res"

    @classmethod
    def from_config(cls, config: Any) -> SamLoss:
        return cls(
            focal_weight=config.focal_weight,
            dice_weight=config.dice_weight,
            iou_weight=config.iou_weight,
            focal_alpha=config.focal_alpha,
            focal_gamma=config.focal_gamma,
            resolution=config.loss_resolution,
        )

    def __call__(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        logits = outputs["pred_masks"]  # (B, K, C, h, w)
        iou_pred = outputs["iou_scores"]  # (B, K, C)
        valid = batch["instance_valid"].to(logits.device)
        if not bool(valid.any()):
            # keep the graph connected so backward() and DDP work on a step without instances
            zero = logits.sum() * 0.0 + iou_pred.sum() * 0.0
            return {"loss": zero, "focal": zero.detach(), "dice": zero.detach(), "iou": zero.detach()}

        lg = logits[valid].float()  # (M, C, h, w)
        ip = iou_pred[valid].float()  # (M, C)
        target = batch["target_masks"].to(logits.device)[valid].float() / 255.0  # (M, S, S)
        region = batch["image_region"].to(logits.device)
        region = region[:, None].expand(-1, valid.shape[1], -1, -1)[valid].float()  # (M, S, S)
        size = target.shape[-1]
        if self.resolution == "input":
            lg = F.interpolate(lg, size=(size, size), mode="bilinear", align_corners=False)
        else:
            grid = lg.shape[-2:]
            target = F.interpolate(target[:, None], size=grid, mode="area")[:, 0]
            region = F.interpolate(region[:, None], size=grid, mode="area")[:, 0]
        target = target[:, None]  # broadcast over the C candidate masks
        region = region[:, None]
        area = region.sum(dim=(-1, -2)).clamp_min(1.0)

        prob = torch.sigmoid(lg)
        bce = F.binary_cross_entropy_with_logits(lg, target.expand_as(lg), reduction="none")
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = self.focal_alpha * target + (1 - self.focal_alpha) * (1 - target)
        focal = (alpha_t * (1 - p_t) ** self.focal_gamma * bce * region).sum(dim=(-1, -2)) / area  # (M, C)

        p = prob * region
        inter = (p * target).sum(dim=(-1, -2))
        dice = 1 - (2 * inter + 1) / (p.sum(dim=(-1, -2)) + (target * region).sum(dim=(-1, -2)) + 1)  # (M, C)

        with torch.no_grad():
            pred_bin = (lg > 0).float() * region
            true_bin = (target >= 0.5).float() * region
            inter_b = (pred_bin * true_bin).sum(dim=(-1, -2))
            union_b = pred_bin.sum(dim=(-1, -2)) + true_bin.sum(dim=(-1, -2)) - inter_b
            actual_iou = torch.where(union_b > 0, inter_b / union_b.clamp_min(1.0), torch.ones_like(union_b))
            best = (self.focal_weight * focal + self.dice_weight * dice).argmin(dim=1, keepdim=True)  # (M, 1)

        focal_b = focal.gather(1, best).mean()
        dice_b = dice.gather(1, best).mean()
        iou_b = ((ip.gather(1, best) - actual_iou.gather(1, best)) ** 2).mean()
        loss = self.focal_weight * focal_b + self.dice_weight * dice_b + self.iou_weight * iou_b
        return {"loss": loss, "focal": focal_b.detach(), "dice": dice_b.detach(), "iou": iou_b.detach()}
