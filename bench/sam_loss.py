"""SAM loss step, before and after the rewrite: time, peak memory, device waits.

One loss step = the loss on 8 instances (one box prompt each, one candidate mask) plus
its backward to the decoder's logits, at a 256² and a 1024² input (logits at a quarter
of that), image area 4:3 inside the padded square. "before" is the loss as it was
(boolean indexing, a dense (masks, S, S) region mask, float copies of it), kept here
verbatim as the reference; "after" is ``teacherkit_sam.loss.SamLoss`` on what
``SamPreprocessor.collate`` now gives it. Each case runs in its own process so its peak
resident memory (VmHWM above the inputs) is its own. Device waits are counted with
torch.profiler as the ops that would block the host on an accelerator (nonzero,
item/_local_scalar_dense, is_nonzero).

It also measures whether cropping the loss to each prompt's box would be exact: the
relative change of focal, dice and the total loss when pixels outside the (jittered)
box are left out.

    python bench/sam_loss.py --json-out bench/results/sam_loss-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

MASKS = 8
SIZES = (256, 1024)
SYNC_OPS = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")


def before_loss(outputs: dict, batch: dict, focal_weight=20.0, dice_weight=1.0, iou_weight=1.0, alpha=0.25,
                gamma=2.0) -> dict:
    """The loss as it was before the rewrite (input resolution), for comparison."""
    logits, iou_pred = outputs["pred_masks"], outputs["iou_scores"]
    valid = batch["instance_valid"].to(logits.device)
    if not bool(valid.any()):
        zero = logits.sum() * 0.0 + iou_pred.sum() * 0.0
        return {"loss": zero}
    lg = logits[valid].float()
    ip = iou_pred[valid].float()
    target = batch["target_masks"].to(logits.device)[valid].float() / 255.0
    region = batch["image_region"].to(logits.device)
    region = region[:, None].expand(-1, valid.shape[1], -1, -1)[valid].float()
    size = target.shape[-1]
    lg = F.interpolate(lg, size=(size, size), mode="bilinear", align_corners=False)
    target, region = target[:, None], region[:, None]
    area = region.sum(dim=(-1, -2)).clamp_min(1.0)
    prob = torch.sigmoid(lg)
    bce = F.binary_cross_entropy_with_logits(lg, target.expand_as(lg), reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    focal = (alpha_t * (1 - p_t) ** gamma * bce * region).sum(dim=(-1, -2)) / area
    p = prob * region
    inter = (p * target).sum(dim=(-1, -2))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(-1, -2)) + (target * region).sum(dim=(-1, -2)) + 1)
    with torch.no_grad():
        pred_bin = (lg > 0).float() * region
        true_bin = (target >= 0.5).float() * region
        inter_b = (pred_bin * true_bin).sum(dim=(-1, -2))
        union_b = pred_bin.sum(dim=(-1, -2)) + true_bin.sum(dim=(-1, -2)) - inter_b
        actual_iou = torch.where(union_b > 0, inter_b / union_b.clamp_min(1.0), torch.ones_like(union_b))
        best = (focal_weight * focal + dice_weight * dice).argmin(dim=1, keepdim=True)
    focal_b, dice_b = focal.gather(1, best).mean(), dice.gather(1, best).mean()
    iou_b = ((ip.gather(1, best) - actual_iou.gather(1, best)) ** 2).mean()
    return {"loss": focal_weight * focal_b + dice_weight * dice_b + iou_weight * iou_b, "focal": focal_b,
            "dice": dice_b}


def make_case(size: int, seed: int = 0, mixed: bool = False) -> tuple[dict, dict, dict, torch.Tensor]:
    """Logits that roughly agree with elliptical targets, a collated batch in the new
    layout, the same in the old layout (dense region), and each prompt's box (xyxy).
    One 4:3 image, or with ``mixed`` two images of different sizes (4:3 and 9:16)
    sharing the masks, where the loss weighs each image's rows and columns."""
    g = torch.Generator().manual_seed(seed)
    height, width = size * 3 // 4, size
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    targets = torch.zeros(1, MASKS, size, size, dtype=torch.uint8)
    boxes = torch.zeros(MASKS, 4)
    for k in range(MASKS):
        cy, cx = (torch.rand(2, generator=g) * torch.tensor([height, width])).tolist()
        ry, rx = (size * (0.05 + 0.2 * torch.rand(2, generator=g))).tolist()
        inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & (yy < height)
        targets[0, k] = inside.to(torch.uint8) * 255
        ys, xs = torch.nonzero(inside, as_tuple=True)
        jitter = torch.randn(4, generator=g) * 0.1 * torch.tensor([rx, ry, rx, ry]) * 2
        boxes[k] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() + jitter
    low = size // 4
    down = F.interpolate(targets[0, :, None].float() / 255, size=(low, low), mode="area")
    logits = ((down * 2 - 1) * 3 + torch.randn(MASKS, 1, low, low, generator=g))[None]  # (1, M, 1, low, low)
    iou = torch.rand(1, MASKS, 1, generator=g)
    sizes = [(height, width)]
    if mixed:
        sizes.append((size, size * 9 // 16))
        targets, logits, iou = (v.reshape(2, MASKS // 2, *v.shape[2:]) for v in (targets, logits, iou))
    valid = torch.ones(len(sizes), MASKS // len(sizes), dtype=torch.bool)
    new = {"target_masks": targets, "instance_valid": valid, "instance_index": torch.arange(MASKS),
           "image_sizes": torch.tensor(sizes), "resized_sizes": sizes}
    region = torch.zeros(len(sizes), size, size, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        region[i, :h, :w] = True
    old = {"target_masks": targets, "instance_valid": valid, "image_region": region}
    return {"pred_masks": logits, "iou_scores": iou}, new, old, boxes


def _loss_fn(variant: str):
    from teacherkit_sam.loss import SamLoss

    return before_loss if variant == "before" else SamLoss()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure_case(variant: str, size: int, repeats: int, mixed: bool = False) -> dict:
    """Median seconds of a loss step and its peak resident memory above the inputs."""
    torch.set_num_threads(1)
    outputs, new, old, _ = make_case(size, mixed=mixed)
    batch = old if variant == "before" else new
    loss = _loss_fn(variant)
    logits = outputs["pred_masks"].clone().requires_grad_(True)
    Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current resident size
    base = _rss_kib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.process_time()  # CPU seconds: a busy machine changes them far less than wall time
        loss({"pred_masks": logits, "iou_scores": outputs["iou_scores"]}, batch)["loss"].backward()
        times.append(time.process_time() - start)
        logits.grad = None
    return {"step_s": sorted(times)[len(times) // 2], "peak_mib": (_rss_kib("VmHWM") - base) / 1024}


def count_waits(variant: str) -> int:
    """Ops per step that wait for the device on an accelerator (counted on the CPU)."""
    outputs, new, old, _ = make_case(64)
    loss = _loss_fn(variant)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss(outputs, old if variant == "before" else new)
    return sum(e.count for e in prof.key_averages() if e.key in SYNC_OPS)


def _masked_terms(lg: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, area: torch.Tensor) -> tuple:
    """Focal (summed over ``weight``, divided by ``area``) and dice over ``weight``, per instance."""
    p = torch.sigmoid(lg)
    bce = F.binary_cross_entropy_with_logits(lg, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    a_t = 0.25 * t + 0.75 * (1 - t)
    focal = (a_t * (1 - p_t) ** 2 * bce * weight).sum(dim=(-1, -2)) / area
    dice = 1 - (2 * (p * t * weight).sum(dim=(-1, -2)) + 1) / ((p * weight).sum(dim=(-1, -2))
                                                             + (t * weight).sum(dim=(-1, -2)) + 1)
    return focal, dice


def box_crop_change(size: int) -> dict:
    """Relative change of focal, dice and 20 focal + dice (the IoU head is not a
    per-pixel term) when only the pixels inside each prompt's box count, the focal
    mean still over the image area, against the whole image area."""
    outputs, new, _, boxes = make_case(size)
    height, width = new["resized_sizes"][0]
    lg = F.interpolate(outputs["pred_masks"][0], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    t = new["target_masks"][0].float() / 255
    span = torch.arange(size)
    image = ((span < height)[:, None] & (span < width)[None, :]).float()
    x0, y0, x1, y1 = boxes.round().long().unbind(1)
    inside_rows = (span >= y0[:, None]) & (span < y1[:, None])
    inside_cols = (span >= x0[:, None]) & (span < x1[:, None])
    box = (inside_rows[:, :, None] & inside_cols[:, None, :]).float() * image
    area = torch.tensor(float(height * width))
    focal_full, dice_full = _masked_terms(lg, t, image, area)
    focal_box, dice_box = _masked_terms(lg, t, box, area)
    full, cropped = 20 * focal_full + dice_full, 20 * focal_box + dice_box
    change = {name: float(((b - a).abs() / a.abs().clamp_min(1e-12)).max())
              for name, a, b in (("focal", focal_full, focal_box), ("dice", dice_full, dice_box),
                                 ("mask_loss", full, cropped))}
    change["box_fraction_of_image"] = float(box.sum() / (image.sum() * MASKS))
    return change


def _child(variant: str, size: int, repeats: int, mixed: bool) -> dict:
    """One case in a fresh process (its peak memory is then its own)."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import sam_loss; "
            f"print(json.dumps(sam_loss.measure_case({variant!r}, {size}, {repeats}, {mixed})))")
    # large blocks straight from (and back to) the OS: resident memory then follows what is
    # live instead of what glibc's heap kept after earlier frees
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="input sides (multiples of 16)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    print(f"SAM loss step (forward + backward to the logits), {MASKS} masks, CPU, 1 thread")
    print(f"{'input':>12} {'before s':>9} {'after s':>8} {'speed-up':>9} {'before MiB':>11} {'after MiB':>10} "
          f"{'memory':>7}")
    for size, mixed in [(s, False) for s in args.sizes] + [(args.sizes[-1], True)]:
        before, after = _child("before", size, args.repeats, mixed), _child("after", size, args.repeats, mixed)
        row = {"input": size, "images": "2 (4:3, 9:16)" if mixed else "1 (4:3)",
               "before_step_s": round(before["step_s"], 4), "after_step_s": round(after["step_s"], 4),
               "speedup": round(before["step_s"] / after["step_s"], 2),
               "before_peak_mib": round(before["peak_mib"], 1), "after_peak_mib": round(after["peak_mib"], 1),
               "memory_ratio": round(after["peak_mib"] / max(before["peak_mib"], 1e-9), 2)}
        rows.append(row)
        print(f"{size:>5}² {'2 imgs' if mixed else '1 img':>6} {row['before_step_s']:>9.4f} "
              f"{row['after_step_s']:>8.4f} {row['speedup']:>8.2f}x "
              f"{row['before_peak_mib']:>11.1f} {row['after_peak_mib']:>10.1f} {row['memory_ratio']:>6.2f}x")
    waits = {"before": count_waits("before"), "after": count_waits("after")}
    print(f"ops that wait on the device per step: before {waits['before']}, after {waits['after']}")
    crop = {size: box_crop_change(size) for size in args.sizes}
    for size, change in crop.items():
        print(f"crop to each prompt's box at {size}²: focal {change['focal']:.1%}, dice {change['dice']:.1%}, "
              f"20*focal+dice {change['mask_loss']:.1%} largest relative change "
              f"(boxes cover {change['box_fraction_of_image']:.1%} of the image): not exact, not used")
    if args.json_out:
        import teacherkit

        record = {"benchmark": "sam_loss", "date": date.today().isoformat(),
                  "machine": {"platform": platform.platform(), "processor": platform.processor(),
                              "cpus": os.cpu_count(), "threads": 1},
                  "versions": {"python": platform.python_version(), "teacherkit": teacherkit.__version__,
                               "torch": torch.__version__},
                  "command": "python " + " ".join(sys.argv),
                  "settings": {"masks": MASKS, "image_area": "in the padded square: one 4:3 image, or a 4:3 and "
                               "a 9:16 image of 4 masks each", "repeats": args.repeats,
                               "logits": "a quarter of the input side, upsampled (loss_resolution=input)"},
                  "unit": "CPU seconds per loss step (median), peak resident MiB above the inputs",
                  "rows": rows, "device_waits_per_step": waits,
                  "box_crop_relative_change": {str(k): v for k, v in crop.items()}}
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
