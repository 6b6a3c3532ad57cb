"""Run by test_sam_loss_kernel.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU
interpreter must be chosen before the kernels are defined): the fused loss sums against the
PyTorch path of the same loss, printed as JSON."""

from __future__ import annotations

import json
import os

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from teacherkit_sam import loss as sam_loss  # noqa: E402
from teacherkit_sam.loss_kernel import BLOCK, fused_pixel_sums  # noqa: E402


def case(instances: int, candidates: int, height: int, width: int, gamma: float, weighted: bool, seed: int) -> dict:
    """Sums and gradients of both paths on random logits (some saturated) and soft targets."""
    g = torch.Generator().manual_seed(seed)
    lg = torch.randn(instances, candidates, height, width, generator=g) * 4
    lg[..., :2, :] *= 10  # saturated logits: probabilities of exactly 0 and 1
    target = (torch.rand(instances, 1, height, width, generator=g) > 0.6).float()
    target[..., -1, :] = 0.5  # soft targets at the threshold
    rows = cols = None
    if weighted:
        sizes = torch.randint(1, height + 1, (instances,), generator=g), torch.randint(1, width + 1, (instances,),
                                                                                         generator=g)
        rows = (torch.arange(height) < sizes[0][:, None]).float()
        cols = (torch.arange(width) < sizes[1][:, None]).float()
    upstream = [torch.randn(instances, candidates, generator=g) for _ in range(3)]

    def run(fused: bool) -> tuple[list, torch.Tensor]:
        x = lg.clone().requires_grad_(True)
        if fused:
            s = fused_pixel_sums(x, target, rows, cols, 0.25, gamma)
            out = [s["focal"], s["inter"], s["prob"], s["target"], s["bin_inter"], s["bin_pred"], s["bin_true"]]
        else:
            focal, inter, prob = sam_loss._pixel_sums().apply(x, target, rows, cols, 0.25, gamma)
            pred_bin, true_bin = (x.detach() > 0).float(), (target >= 0.5).float()
            t_sum = sam_loss._area_sum(target, rows, cols).expand_as(focal)
            out = [focal, inter, prob, t_sum, sam_loss._area_sum(pred_bin * true_bin, rows, cols),
                   sam_loss._area_sum(pred_bin, rows, cols), sam_loss._area_sum(true_bin, rows, cols).expand_as(focal)]
        sum(u * o for u, o in zip(upstream, out[:3])).sum().backward()
        return [o.detach() for o in out], x.grad

    fused, fused_grad = run(True)
    ref, ref_grad = run(False)
    outside = 0.0 if not weighted else float((fused_grad * (1 - rows[:, None, :, None] * cols[:, None, None, :])
                                              ).abs().max())
    return {"shapes_equal": all(a.shape == b.shape for a, b in zip(fused, ref)),
            "sum_rel": max(float((a - b).abs().max() / b.abs().max().clamp_min(1.0)) for a, b in zip(fused, ref)),
            "grad_rel": float((fused_grad - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-12)),
            "grad_zero_outside": outside == 0.0,
            "finite": bool(torch.isfinite(fused_grad).all())}


def loss_both_ways() -> dict:
    """SamLoss with kernel 'auto' (fused here) and 'torch' on the same outputs and batch."""
    g = torch.Generator().manual_seed(3)
    batch_size, k, size = 2, 3, 64
    logits = torch.randn(batch_size, k, 3, size // 4, size // 4, generator=g) * 3
    scores = torch.rand(batch_size, k, 3, generator=g)
    targets = (torch.rand(batch_size, k, size, size, generator=g) > 0.5).to(torch.uint8) * 255
    batch = {"target_masks": targets, "instance_index": torch.tensor([0, 1, 3]),
             "image_sizes": torch.tensor([[64, 48], [40, 64]]), "resized_sizes": [(64, 48), (40, 64)]}
    values = {}
    for kernel in ("auto", "torch"):
        x = logits.clone().requires_grad_(True)
        out = sam_loss.SamLoss(kernel=kernel)({"pred_masks": x, "iou_scores": scores}, batch)
        out["loss"].backward()
        values[kernel] = ({name: float(v.detach()) for name, v in out.items()}, x.grad)
    (fused, g_fused), (ref, g_ref) = values["auto"], values["torch"]
    return {"fused_used": sam_loss.SamLoss(kernel="auto")._fused(logits),
            "torch_kept": not sam_loss.SamLoss(kernel="torch")._fused(logits),
            "loss_rel": max(abs(fused[n] - ref[n]) / max(abs(ref[n]), 1e-6) for n in ref),
            "grad_rel": float((g_fused - g_ref).abs().max() / g_ref.abs().max())}


if __name__ == "__main__":
    cases = {f"{c}": case(*c) for c in [(3, 1, 9, BLOCK // 8 + 5, 2.0, True, 0), (2, 3, 7, 11, 2.0, False, 1),
                                        (2, 1, 5, 6, 0.0, True, 2), (2, 1, 5, 6, 1.0, True, 3),
                                        (2, 1, 5, 6, 1.5, False, 4)]}
    print(json.dumps({"cases": cases, "loss": loss_both_ways()}))
