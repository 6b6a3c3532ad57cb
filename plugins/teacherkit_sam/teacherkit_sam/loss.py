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

How it is computed (the values are those of the formula above, to float rounding):
the step never waits on the device. Real instances are picked with an index the
collate function built on the CPU (``instance_index``), whose length the host knows,
instead of boolean indexing; the image area is a top-left rectangle, so it is kept as
one row and one column vector per instance and every masked sum weighs by both (no
``(masks, S, S)`` region is built); at input resolution the comparison is cropped to
the batch's largest image area, outside which every term is zero. Focal and dice
sums and their gradient come from one autograd function that keeps only the logits
and targets for backward and works through the pixels in chunks, so the memory of
the loss is a few copies of the logits instead of a dozen. On CUDA with Triton
(``loss_kernel: auto``) those sums, the target's and the thresholded IoU's come from
two fused kernels instead, one pass over the pixels each way (``loss_kernel.py``).
"""

from __future__ import annotations

import functools
import os
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
    kernel: str = "auto"  # "auto": the fused Triton sums on CUDA (loss_kernel.py) | "torch"

    @classmethod
    def from_config(cls, config: Any) -> SamLoss:
        return cls(
            focal_weight=config.focal_weight,
            dice_weight=config.dice_weight,
            iou_weight=config.iou_weight,
            focal_alpha=config.focal_alpha,
            focal_gamma=config.focal_gamma,
            resolution=config.loss_resolution,
            kernel=config.loss_kernel,
        )

    def __call__(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        logits = outputs["pred_masks"]  # (B, K, C, h, w)
        iou_pred = outputs["iou_scores"]  # (B, K, C)
        index = instance_index(batch, logits.device)  # (M,)
        if index.numel() == 0:  # a shape, known on the host: no wait
            # keep the graph connected so backward() and DDP work on a step without instances
            zero = logits.sum() * 0.0 + iou_pred.sum() * 0.0
            return {"loss": zero, "focal": zero.detach(), "dice": zero.detach(), "iou": zero.detach()}

        lg, target, rows, cols = self._compared(logits, batch, index)
        ip = iou_pred.flatten(0, 1).index_select(0, index).float()  # (M, C)
        if self._fused(lg):
            focal, dice, actual_iou = self._fused_terms(lg, target, rows, cols)
        else:
            focal, dice = self._mask_terms(lg, target, rows, cols)
            with torch.no_grad():
                actual_iou = _binary_iou(lg, target, rows, cols)

        with torch.no_grad():
            best = (self.focal_weight * focal + self.dice_weight * dice).argmin(dim=1, keepdim=True)  # (M, 1)

        focal_b = focal.gather(1, best).mean()
        dice_b = dice.gather(1, best).mean()
        iou_b = ((ip.gather(1, best) - actual_iou.gather(1, best)) ** 2).mean()
        loss = self.focal_weight * focal_b + self.dice_weight * dice_b + self.iou_weight * iou_b
        return {"loss": loss, "focal": focal_b.detach(), "dice": dice_b.detach(), "iou": iou_b.detach()}

    def _compared(self, logits: Any, batch: dict[str, Any], index: Any) -> tuple[Any, Any, Any, Any]:
        """Logits ``(M, C, H, W)``, soft targets ``(M, 1, H, W)`` and the image area's
        rows ``(M, H)`` and columns ``(M, W)`` (1 inside, 0 in the padding; soft in
        ``low_res``), all in the frame where they are compared. Rows and columns are
        ``None`` when the crop is exactly every image's area (all images of the batch
        the same size): every pixel then counts and the sums need no weights."""
        import torch.nn.functional as F

        device = logits.device
        lg = logits.flatten(0, 1).index_select(0, index).float()  # (M, C, h, w)
        target = batch["target_masks"].to(device).flatten(0, 1).index_select(0, index)  # (M, S, S) uint8
        size = target.shape[-1]
        rows, cols = image_area(batch, index, logits.shape[1], size, device)
        if self.resolution == "input":
            height, width = largest_area(batch, size)
            lg = F.interpolate(lg, size=(size, size), mode="bilinear", align_corners=False)
            if (height, width) != (size, size):  # a dense crop: the full square is then freed
                lg = lg[..., :height, :width].contiguous()
            target = target[:, :height, :width].float() / 255.0
            rows, cols = rows[:, :height], cols[:, :width]
            if len({tuple(s) for s in batch.get("resized_sizes") or ()}) == 1:
                rows = cols = None
        else:
            grid = lg.shape[-2:]
            target = F.interpolate(target[:, None].float() / 255.0, size=grid, mode="area")[:, 0]
            # area-averaging a rectangle averages its rows and its columns apart (exactly)
            rows = F.adaptive_avg_pool1d(rows[:, None], grid[0])[:, 0]
            cols = F.adaptive_avg_pool1d(cols[:, None], grid[1])[:, 0]
        return lg, target[:, None], rows, cols  # target broadcasts over the C candidate masks

    def _mask_terms(self, lg: Any, target: Any, rows: Any, cols: Any) -> tuple[Any, Any]:
        """Per instance and candidate ``(M, C)``: focal loss (mean over the image area)
        and dice loss. The per-pixel part runs in :func:`_pixel_sums`, which keeps only
        the logits and targets for backward instead of every intermediate image."""
        focal_sum, inter, p_sum = _pixel_sums().apply(lg, target, rows, cols, self.focal_alpha, self.focal_gamma)
        focal = focal_sum / _area(lg, rows, cols).clamp_min(1.0)[:, None]
        t_sum = _area_sum(target, rows, cols)  # (M, 1)
        dice = 1 - (2 * inter + 1) / (p_sum + t_sum + 1)
        return focal, dice

    def _fused(self, lg: Any) -> bool:
        """Whether the fused kernels compute the per-pixel sums (``kernel: auto`` on CUDA with
        Triton, or on the CPU under Triton's interpreter, as the tests run them)."""
        # decided before the import where it can be: a CPU-only run never pays for importing Triton
        if self.kernel != "auto" or not (lg.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            return False
        from teacherkit_sam.loss_kernel import available

        return available(lg)

    def _fused_terms(self, lg: Any, target: Any, rows: Any, cols: Any) -> tuple[Any, Any, Any]:
        """Focal and dice losses and the thresholded IoU ``(M, C)`` from one pass of
        :mod:`teacherkit_sam.loss_kernel` (the values of :meth:`_mask_terms` and
        :func:`_binary_iou`)."""
        import torch

        from teacherkit_sam.loss_kernel import fused_pixel_sums

        sums = fused_pixel_sums(lg, target, rows, cols, self.focal_alpha, self.focal_gamma)
        focal = sums["focal"] / _area(lg, rows, cols).clamp_min(1.0)[:, None]
        dice = 1 - (2 * sums["inter"] + 1) / (sums["prob"] + sums["target"] + 1)
        union = sums["bin_pred"] + sums["bin_true"] - sums["bin_inter"]
        iou = torch.where(union > 0, sums["bin_inter"] / union.clamp_min(1.0), torch.ones_like(union))
        return focal, dice, iou


#: pixels (instances x candidates x H x W) per chunk of the per-pixel terms on a CPU: bounds
#: the temporaries to a few of these instead of a few of the whole batch
CHUNK_PIXELS = 1 << 20
#: the same on an accelerator, where a chunk costs a few dozen kernel launches of host time
#: whatever its size: at 1024² a 1M-pixel chunk is one instance, and a 64-image batch of the
#: cached frozen-encoder phase (384 instances) spent most of its step launching them
#: (``bench/train_throughput.py --size full --workloads sam_frozen --profile``, decoder_batch).
#: 16M pixels keep the temporaries under a gigabyte (float32).
CHUNK_PIXELS_ACCELERATOR = 1 << 24


def _pixel_chunks(lg: Any) -> list[slice]:
    per_instance = max(1, lg[0].numel())
    limit = CHUNK_PIXELS if lg.device.type == "cpu" else CHUNK_PIXELS_ACCELERATOR
    step = max(1, limit // per_instance)
    return [slice(i, i + step) for i in range(0, lg.shape[0], step)]


def _focal_parts(lg: Any, t: Any, alpha: float) -> tuple[Any, Any, Any, Any]:
    """Per pixel: probability, BCE, ``1 - p_t`` (``miss``) and alpha_t of the focal
    loss, ``p_t = p t + (1 - p)(1 - t)`` rearranged so each is one pass."""
    import torch
    import torch.nn.functional as F

    prob = torch.sigmoid(lg)
    bce = F.binary_cross_entropy_with_logits(lg, t.expand_as(lg), reduction="none")
    miss = torch.addcmul(t, prob, 1 - 2 * t)
    alpha_t = t * (2 * alpha - 1) + (1 - alpha)
    return prob, bce, miss, alpha_t


def _focal_slope(lg: Any, t: Any, alpha: float, gamma: float) -> tuple[Any, Any]:
    """Per pixel: d focal / d logit and d prob / d logit. With ``d miss = (1 - 2t)
    d prob`` and ``d bce = prob - t``: ``alpha_t (miss^gamma (prob - t) + gamma
    miss^(gamma-1) (1 - 2t) d prob bce)``."""
    prob, bce, miss, alpha_t = _focal_parts(lg, t, alpha)
    slope = prob * (1 - prob)
    d_focal = prob - t
    if gamma != 0:
        bce *= 1 - 2 * t
        bce *= slope
        if gamma == 1:
            d_focal *= miss
        else:
            lower = miss ** (gamma - 1)
            d_focal *= lower
            d_focal *= miss
            bce *= lower
        d_focal += gamma * bce
    d_focal *= alpha_t
    return d_focal, slope


@functools.lru_cache(maxsize=1)
def _pixel_sums() -> Any:
    """The autograd function ``(logits, targets, rows, cols, alpha, gamma) -> (focal
    sum, sum of p t, sum of p)`` over the image area, each ``(M, C)``; its backward
    recomputes the per-pixel terms chunk by chunk from the saved logits and targets."""
    import torch

    class PixelSums(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, lg: Any, t: Any, rows: Any, cols: Any, alpha: float, gamma: float) -> Any:
            ctx.save_for_backward(lg, t, rows, cols)
            ctx.alpha, ctx.gamma = alpha, gamma
            out = lg.new_empty((3, *lg.shape[:2]))
            for part in _pixel_chunks(lg):
                prob, bce, miss, alpha_t = _focal_parts(lg[part], t[part], alpha)
                r, c = (None, None) if rows is None else (rows[part], cols[part])
                out[0, part] = _area_sum(alpha_t * miss**gamma * bce, r, c)
                out[1, part] = _area_sum(prob * t[part], r, c)
                out[2, part] = _area_sum(prob, r, c)
            return out[0], out[1], out[2]

        @staticmethod
        def backward(ctx: Any, g_focal: Any, g_inter: Any, g_prob: Any) -> Any:
            lg, t, rows, cols = ctx.saved_tensors
            grad = torch.empty_like(lg)
            for part in _pixel_chunks(lg):
                tp = t[part]
                g, slope = _focal_slope(lg[part], tp, ctx.alpha, ctx.gamma)
                g *= g_focal[part, :, None, None]
                g += slope * (tp * g_inter[part, :, None, None] + g_prob[part, :, None, None])
                if rows is not None:
                    g *= rows[part, None, :, None]
                    g *= cols[part, None, None, :]
                grad[part] = g
            return grad, None, None, None, None, None

    return PixelSums


def _area(lg: Any, rows: Any, cols: Any) -> Any:
    """Pixels of each instance's image area ``(M,)`` (every pixel when ``rows`` is None)."""
    if rows is None:
        return lg.new_full(lg.shape[:1], float(lg.shape[-2] * lg.shape[-1]))
    return rows.sum(dim=-1) * cols.sum(dim=-1)


def _area_sum(values: Any, rows: Any, cols: Any) -> Any:
    """``sum over (y, x) of values[m, c, y, x] * rows[m, y] * cols[m, x]``: the columns
    first, then the rows, so the rectangle never exists as an image. Plain float32
    products and sums, not a matrix product, which autocast or TF32 would round.
    ``rows is None``: every pixel counts."""
    if rows is None:
        return values.sum(dim=(-1, -2))
    per_row = (values * cols[:, None, None, :]).sum(dim=-1)  # (M, C, Y)
    return (per_row * rows[:, None, :]).sum(dim=-1)


def _binary_iou(lg: Any, target: Any, rows: Any, cols: Any) -> Any:
    """IoU of the thresholded prediction with the thresholded target inside the image
    area, 1 when both are empty (``(M, C)``)."""
    import torch

    pred_bin = (lg > 0).float()
    true_bin = (target >= 0.5).float()
    inter = _area_sum(pred_bin * true_bin, rows, cols)
    union = _area_sum(pred_bin, rows, cols) + _area_sum(true_bin, rows, cols) - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def instance_index(batch: dict[str, Any], device: Any) -> Any:
    """Flat ``(B * K)`` positions of the real instances on ``device``: the collated
    ``instance_index`` (built on the CPU), else found from ``instance_valid`` (a wait
    when that lives on an accelerator)."""
    import torch

    index = batch.get("instance_index")
    if index is None:
        index = torch.nonzero(batch["instance_valid"].reshape(-1)).reshape(-1)
    return index.to(device, non_blocking=True)


def image_area(batch: dict[str, Any], index: Any, per_image: int, size: int, device: Any) -> tuple[Any, Any]:
    """The image area of each instance's image as float rows ``(M, size)`` and
    columns ``(M, size)``, from the collated ``image_sizes`` ``(B, 2)`` (or from an
    ``image_region`` ``(B, S, S)`` boolean mask built by an older collate)."""
    import torch

    sizes = batch.get("image_sizes")
    if sizes is None:
        region = batch["image_region"].to(device)
        sizes = torch.stack([region.any(dim=2).sum(dim=1), region.any(dim=1).sum(dim=1)], dim=1)
    sizes = sizes.to(device, non_blocking=True).index_select(0, torch.div(index, per_image, rounding_mode="floor"))
    span = torch.arange(size, device=device)
    return (span < sizes[:, :1]).float(), (span < sizes[:, 1:]).float()


def largest_area(batch: dict[str, Any], size: int) -> tuple[int, int]:
    """Height and width covering every image of the batch (from the host-side
    ``resized_sizes``; the whole square when the batch does not say)."""
    sizes = batch.get("resized_sizes")
    if not sizes:
        return size, size
    return min(size, max(int(h) for h, _ in sizes)), min(size, max(int(w) for _, w in sizes))
