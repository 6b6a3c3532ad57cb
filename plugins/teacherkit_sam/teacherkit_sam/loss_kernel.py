"""SAM's per-pixel mask loss sums in one pass over the pixels, as Triton kernels.

The loss (``loss.py``) needs, per instance and candidate mask, sums over the image area of
the focal term, of ``p t`` and of ``p`` (with gradients), and, without gradients, of the
target and of the thresholded prediction and target (for dice and the IoU the IoU head
learns). Computed with PyTorch operations each sum is a few passes over an
``instances × H × W`` float32 image: at input resolution and a 64-image batch of the cached
frozen-encoder phase (384 instances of 1024×768) that was about a quarter of the step's GPU
time on an H200 (docs/performance.md), for work that needs to read each logit and target once.

Here the forward kernel reads each logit and target once and writes seven partial sums per
block of pixels (summed afterwards in a fixed order, so results are deterministic); the
backward kernel reads them once more and writes the gradient of the logits. The values are
those of the PyTorch path (``loss._pixel_sums``, ``_binary_iou``) up to float rounding.
The kernels need Triton and run on CUDA tensors; tests run them on the CPU through Triton's
interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only machines usually lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

#: pixels per program
BLOCK = 2048
#: the sums the forward kernel writes, in order
SUMS = ("focal", "inter", "prob", "target", "bin_inter", "bin_pred", "bin_true")


#: the oldest CUDA compute capability given the kernels: Triton's README asks for 8.0+ in its 3.x
#: releases (7.0+ before); older cards keep the PyTorch path rather than risk a compile failure
MIN_CAPABILITY = (8, 0)


def available(tensor: Any) -> bool:
    """True when the kernels can run on ``tensor``: Triton is installed and the tensor is on a
    CUDA device Triton supports, or on the CPU under Triton's interpreter."""
    if triton is None:
        return False
    if tensor.is_cuda:
        return torch.cuda.get_device_capability(tensor.device) >= MIN_CAPABILITY
    return tensor.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _power(base, exponent: tl.constexpr):
        """``base ** exponent`` for ``base >= 0`` (0 at 0 for a positive exponent)."""
        if exponent == 0.0:
            return tl.full(base.shape, 1.0, tl.float32)
        elif exponent == 1.0:
            return base
        elif exponent == 2.0:
            return base * base
        else:
            return tl.where(base > 0, tl.exp2(tl.log2(tl.maximum(base, 1e-38)) * exponent), 0.0)

    @triton.jit
    def _load(lg_ptr, t_ptr, rows_ptr, cols_ptr, row, block, n_pixels, height, width, candidates,
              WEIGHTED: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """A block of one (instance, candidate)'s logits, the instance's targets and each
        pixel's weight (1 inside the image area, 0 outside or past the end)."""
        instance = row // candidates
        offsets = block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        inside = offsets < n_pixels
        z = tl.load(lg_ptr + row.to(tl.int64) * n_pixels + offsets, mask=inside, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + instance.to(tl.int64) * n_pixels + offsets, mask=inside, other=0.0).to(tl.float32)
        if WEIGHTED:
            y = offsets // width
            x = offsets - y * width
            w_row = tl.load(rows_ptr + instance.to(tl.int64) * height + y, mask=inside, other=0.0)
            w_col = tl.load(cols_ptr + instance.to(tl.int64) * width + x, mask=inside, other=0.0)
            weight = w_row.to(tl.float32) * w_col.to(tl.float32)
        else:
            weight = inside.to(tl.float32)
        return offsets, inside, z, t, weight

    @triton.jit
    def _focal_parts(z, t, ALPHA: tl.constexpr):
        prob = tl.sigmoid(z)
        # binary cross-entropy with logits, in its overflow-free form
        bce = tl.maximum(z, 0.0) - z * t + tl.log(1.0 + tl.exp(-tl.abs(z)))
        miss = t + prob * (1.0 - 2.0 * t)  # 1 - p_t
        alpha_t = t * (2.0 * ALPHA - 1.0) + (1.0 - ALPHA)
        return prob, bce, miss, alpha_t

    @triton.jit
    def _sums_kernel(lg_ptr, t_ptr, rows_ptr, cols_ptr, out_ptr, n_pixels, height, width, candidates, n_blocks,
                     ALPHA: tl.constexpr, GAMMA: tl.constexpr, WEIGHTED: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        row = tl.program_id(0)
        block = tl.program_id(1)
        _, _, z, t, weight = _load(lg_ptr, t_ptr, rows_ptr, cols_ptr, row, block, n_pixels, height, width,
                                   candidates, WEIGHTED, BLOCK_SIZE)
        prob, bce, miss, alpha_t = _focal_parts(z, t, ALPHA)
        focal = alpha_t * _power(miss, GAMMA) * bce
        pred_bin = (z > 0).to(tl.float32)
        true_bin = (t >= 0.5).to(tl.float32)
        out = out_ptr + (row.to(tl.int64) * n_blocks + block) * 7
        tl.store(out, tl.sum(focal * weight, axis=0))
        tl.store(out + 1, tl.sum(prob * t * weight, axis=0))
        tl.store(out + 2, tl.sum(prob * weight, axis=0))
        tl.store(out + 3, tl.sum(t * weight, axis=0))
        tl.store(out + 4, tl.sum(pred_bin * true_bin * weight, axis=0))
        tl.store(out + 5, tl.sum(pred_bin * weight, axis=0))
        tl.store(out + 6, tl.sum(true_bin * weight, axis=0))

    @triton.jit
    def _grad_kernel(lg_ptr, t_ptr, rows_ptr, cols_ptr, upstream_ptr, grad_ptr, n_pixels, height, width,
                     candidates, ALPHA: tl.constexpr, GAMMA: tl.constexpr, WEIGHTED: tl.constexpr,
                     BLOCK_SIZE: tl.constexpr):
        row = tl.program_id(0)
        block = tl.program_id(1)
        offsets, inside, z, t, weight = _load(lg_ptr, t_ptr, rows_ptr, cols_ptr, row, block, n_pixels, height,
                                              width, candidates, WEIGHTED, BLOCK_SIZE)
        g_focal = tl.load(upstream_ptr + row * 3).to(tl.float32)
        g_inter = tl.load(upstream_ptr + row * 3 + 1).to(tl.float32)
        g_prob = tl.load(upstream_ptr + row * 3 + 2).to(tl.float32)
        prob, bce, miss, alpha_t = _focal_parts(z, t, ALPHA)
        slope = prob * (1.0 - prob)  # d prob / d logit
        # d focal / d logit = alpha_t (miss^gamma (prob - t) + gamma miss^(gamma-1) (1 - 2t) slope bce)
        d_focal = (prob - t) * _power(miss, GAMMA)
        if GAMMA != 0.0:
            d_focal += GAMMA * _power(miss, GAMMA - 1.0) * (1.0 - 2.0 * t) * slope * bce
        d_focal *= alpha_t
        grad = (d_focal * g_focal + slope * (t * g_inter + g_prob)) * weight
        tl.store(grad_ptr + row.to(tl.int64) * n_pixels + offsets, grad, mask=inside)


def _launch_shape(lg: Any) -> tuple[int, int, int, int, int]:
    """(rows = instances × candidates, candidates, height, width, pixels) of ``(M, C, H, W)`` logits."""
    instances, candidates, height, width = lg.shape
    return instances * candidates, candidates, height, width, height * width


class FusedPixelSums(torch.autograd.Function):
    """``(logits (M, C, H, W), targets (M, 1, H, W), rows (M, H) | None, cols (M, W) | None,
    alpha, gamma)`` to the seven sums of :data:`SUMS`, each ``(M, C)``; gradients flow to the
    logits through the first three."""

    @staticmethod
    def forward(ctx: Any, lg: Any, t: Any, rows: Any, cols: Any, alpha: float, gamma: float) -> Any:
        lg, t = lg.contiguous(), t.contiguous()
        weighted = rows is not None
        rows_c = rows.contiguous() if weighted else lg
        cols_c = cols.contiguous() if weighted else lg
        n_rows, candidates, height, width, pixels = _launch_shape(lg)
        blocks = triton.cdiv(pixels, BLOCK)
        partial = torch.empty((n_rows, blocks, 7), dtype=torch.float32, device=lg.device)
        _sums_kernel[(n_rows, blocks)](lg, t, rows_c, cols_c, partial, pixels, height, width, candidates, blocks,
                                       ALPHA=float(alpha), GAMMA=float(gamma), WEIGHTED=weighted, BLOCK_SIZE=BLOCK)
        sums = partial.sum(dim=1).reshape(lg.shape[0], candidates, 7)
        ctx.save_for_backward(lg, t, rows_c, cols_c)
        ctx.alpha, ctx.gamma, ctx.weighted = float(alpha), float(gamma), weighted
        outputs = tuple(sums[..., k] for k in range(7))
        ctx.mark_non_differentiable(*outputs[3:])
        return outputs

    @staticmethod
    def backward(ctx: Any, g_focal: Any, g_inter: Any, g_prob: Any, *_no_grad: Any) -> Any:
        lg, t, rows, cols = ctx.saved_tensors
        n_rows, candidates, height, width, pixels = _launch_shape(lg)
        upstream = torch.stack([g if g is not None else torch.zeros_like(lg[:, :, 0, 0])
                                for g in (g_focal, g_inter, g_prob)], dim=-1).float().contiguous()
        grad = torch.empty_like(lg)
        _grad_kernel[(n_rows, triton.cdiv(pixels, BLOCK))](
            lg, t, rows, cols, upstream, grad, pixels, height, width, candidates,
            ALPHA=ctx.alpha, GAMMA=ctx.gamma, WEIGHTED=ctx.weighted, BLOCK_SIZE=BLOCK)
        return grad, None, None, None, None, None


def fused_pixel_sums(lg: Any, t: Any, rows: Any, cols: Any, alpha: float, gamma: float) -> dict[str, Any]:
    """The sums of :data:`SUMS` by name, each ``(M, C)`` (see :class:`FusedPixelSums`)."""
    return dict(zip(SUMS, FusedPixelSums.apply(lg, t, rows, cols, alpha, gamma)))
