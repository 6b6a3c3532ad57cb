"""What SAM needs of masks beyond the core's: extents and boxes of ``(N, H, W)`` masks,
and resizing them into SAM's square input frame.

Decoding COCO polygons and RLE, and encoding predictions, is the core's
(:mod:`teacherkit.data.masks`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


def mask_extents(masks: np.ndarray) -> np.ndarray:
    """Row and column extents ``[y0, y1, x0, x1]`` (half-open, pixel indices) of each
    of ``(N, H, W)`` masks as ``(N, 4)`` int64; an empty mask gets ``[0, 0, 0, 0]``.

    Two cheap reductions instead of an ``np.nonzero`` per mask: the row maxima of every
    mask, then the column maxima of each mask's rows that hold pixels.
    """
    n = masks.shape[0]
    extents = np.zeros((n, 4), dtype=np.int64)
    if n == 0 or masks.shape[1] == 0 or masks.shape[2] == 0:
        return extents
    rows_hit = masks.max(axis=2)
    for i in range(n):
        rows = np.flatnonzero(rows_hit[i])
        if len(rows):
            y0, y1 = int(rows[0]), int(rows[-1]) + 1
            cols = np.flatnonzero(masks[i, y0:y1].max(axis=0))
            extents[i] = (y0, y1, int(cols[0]), int(cols[-1]) + 1)
    return extents


def mask_box_xyxy(mask: np.ndarray, extent: np.ndarray | None = None) -> np.ndarray | None:
    """The tight ``[x0, y0, x1, y1]`` box of a mask (pixel edges), or ``None`` when empty.

    :param extent: the mask's :func:`mask_extents` row, when the caller has it.
    """
    y0, y1, x0, x1 = (int(v) for v in (mask_extents(mask[None])[0] if extent is None else extent))
    if y1 <= y0:
        return None
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """The ``(h, w)`` an image takes when its longest side is scaled to ``longest``
    (rounded as SAM's own image processor rounds)."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


# -- resizing masks -------------------------------------------------------------------------
# The targets are what ``F.interpolate(mask.float(), mode="bilinear", align_corners=False,
# antialias=True)`` gives for the whole frame. Resizing every full-resolution mask that way
# costs most of SAM's preprocessing, although a mask is zero outside its box and so is its
# resized image. The resize is separable and each output pixel reads a few input pixels
# (its "taps"), so only the outputs whose taps touch the mask's box are computed, from the
# box's pixels only, with the weights torch computes for the whole frame: the width pass
# in numpy (exact: 0/1 inputs make every product exact and the taps are summed in torch's
# order, through a table of every 0/1 pattern of taps), the height pass by torch itself
# on the columns that hold the mask (columns are independent in that pass). On this
# x86_64 CPU the result is bit-identical to the whole-frame resize (pinned by
# plugins/teacherkit_sam/tests/test_sam_preprocess_equivalence.py and bench/sam_preprocess.py).
# Masks whose box covers most of the frame, or that are not 0/1, are still resized whole.


@lru_cache(maxsize=32)
def _aa_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Taps of torch's antialiased bilinear resize along one axis (``scalar_t`` float, as
    ``_compute_indices_min_size_weights_aa`` computes them, float/double promotions included).

    :return: ``index (out, K)`` (padded taps repeat a valid index with weight 0),
        ``weight (out, K)`` float32, and each output's first and past-the-last input index.
    """
    f32, f64 = np.float32, np.float64
    scale = f32(in_size) / f32(out_size)  # area_pixel_compute_scale<float>, align_corners=False
    support = f32(f64(scale)) if scale >= 1.0 else f32(1.0)  # (interp_size / 2) * scale, bilinear
    invscale = f32(1.0 / f64(scale)) if scale >= 1.0 else f32(1.0)
    max_interp = int(np.ceil(support)) * 2 + 1
    center = (f64(scale) * (np.arange(out_size, dtype=f64) + 0.5)).astype(f32)
    first = np.maximum(((center - support).astype(f64) + 0.5).astype(np.int64), 0)
    count = np.minimum(((center + support).astype(f64) + 0.5).astype(np.int64), in_size) - first
    count = np.clip(count, 0, max_interp)
    taps = np.arange(max_interp)
    x = np.abs((((first[:, None] + taps).astype(f32) - center[:, None]).astype(f64) + 0.5) * f64(invscale)).astype(f32)
    weight = np.where(x < 1, f32(1) - x, f32(0)).astype(f32)
    weight[taps[None, :] >= count[:, None]] = 0
    total = np.zeros(out_size, f32)
    for k in range(max_interp):
        total += weight[:, k]
    nonzero = total != 0
    weight[nonzero] /= total[nonzero, None]
    k = max(int(count.max()), 1)
    index = np.minimum(first[:, None] + taps[:k], in_size - 1)
    index = np.where(taps[None, :k] < count[:, None], index, first[:, None].clip(max=in_size - 1))
    outs = (index, np.ascontiguousarray(weight[:, :k]), first, first + count)
    for a in outs:
        a.setflags(write=False)
    return outs


@lru_cache(maxsize=32)
def _aa_table(in_size: int, out_size: int) -> np.ndarray | None:
    """Every output's value for every 0/1 pattern of its taps (bit ``k`` is tap ``k``),
    summed in float32 in torch's order: ``(out, 2**K)``; ``None`` past 8 taps."""
    _, weight, _, _ = _aa_axis(in_size, out_size)
    k = weight.shape[1]
    if k > 8:
        return None
    patterns = np.arange(2**k)
    bits = ((patterns[:, None] >> np.arange(k)) & 1).astype(np.float32)  # (2**K, K)
    table = np.zeros((out_size, 2**k), np.float32)
    for tap in range(k):
        table += bits[None, :, tap] * weight[:, tap, None]
    table.setflags(write=False)
    return table


def _span(first: np.ndarray, last: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """The outputs whose taps ``[first, last)`` meet the input range ``[lo, hi)``."""
    hit = np.flatnonzero((last > lo) & (first < hi))
    return int(hit[0]), int(hit[-1]) + 1


def _resize_width(crop: np.ndarray, in_width: int, out_width: int, x0: int) -> tuple[np.ndarray, int, int]:
    """Width pass of a 0/1 ``crop`` whose columns start at input column ``x0`` and
    hold every non-zero column: the float32 outputs that can be non-zero, and their span."""
    if in_width == out_width:
        return crop.astype(np.float32), x0, x0 + crop.shape[1]
    index, weight, first, last = _aa_axis(in_width, out_width)
    o0, o1 = _span(first, last, x0, x0 + crop.shape[1])
    # outside the crop the mask is zero: a tap there reads a zero column
    padded = np.zeros((crop.shape[0], crop.shape[1] + 2), crop.dtype)
    padded[:, 1:-1] = crop
    local = np.clip(index[o0:o1] - x0 + 1, 0, crop.shape[1] + 1)
    table = _aa_table(in_width, out_width)
    if table is not None:
        code = padded[:, local[:, 0]]
        for k in range(1, local.shape[1]):
            code |= padded[:, local[:, k]] << k
        flat = code + (np.arange(o0, o1, dtype=np.intp) * table.shape[1])
        return np.take(table.reshape(-1), flat), o0, o1
    out = padded[:, local[:, 0]] * weight[o0:o1, 0]
    for k in range(1, local.shape[1]):
        out += padded[:, local[:, k]] * weight[o0:o1, k]
    return out, o0, o1


def _to_uint8(values: Any) -> np.ndarray:
    import torch

    values = torch.as_tensor(values)
    return (values.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _resize_full(masks: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    """The whole-frame resize (reference semantics), for masks the crop path does not suit."""
    import torch
    import torch.nn.functional as F

    src = torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)
    if tuple(resized) != tuple(masks.shape[1:]):
        # antialias makes bilinear downscaling average over the source footprint
        src = F.interpolate(src, size=tuple(resized), mode="bilinear", align_corners=False, antialias=True)
    return _to_uint8(src[:, 0])


#: a mask whose box covers more of the frame than this is resized whole (no saving to crop)
_CROP_MAX_FRACTION = 0.5
#: columns of one batched height pass (bounds its float32 buffer: height x this x 4 bytes)
_HEIGHT_PASS_COLUMNS = 2048


def masks_to_input_frame(
    masks: np.ndarray,
    resized: tuple[int, int],
    size: int,
    *,
    indices: np.ndarray | None = None,
    extents: np.ndarray | None = None,
) -> np.ndarray:
    """Resize ``(N, H, W)`` 0/1 masks into the padded ``size``² model-input frame.

    Returns ``(N, size, size)`` uint8 holding the covered fraction of each pixel in
    0..255 (area averaging when shrinking, i.e. torch's antialiased bilinear resize of
    the whole mask, clamped, scaled and rounded): a one-pixel object shrunk below a
    pixel stays a faint target instead of vanishing. Only the region around each
    mask's box is computed (see the comment above); the values are torch's.

    :param indices: resize ``masks[indices]`` (without copying them out first).
    :param extents: :func:`mask_extents` of ``masks`` (all of them), when the caller has them.
    """
    masks = np.asarray(masks)
    if masks.dtype == bool:
        masks = masks.view(np.uint8)
    chosen = np.arange(masks.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(chosen)
    out = np.zeros((n, size, size), dtype=np.uint8)
    if n == 0:
        return out
    height, width = masks.shape[1:]
    h, w = resized
    if extents is None:
        extents = np.zeros((masks.shape[0], 4), np.int64)
        extents[chosen] = mask_extents(masks[chosen])

    whole, pending, columns = [], [], 0
    for row, index in enumerate(chosen):
        y0, y1, x0, x1 = (int(v) for v in extents[index])
        if y1 <= y0:
            continue  # empty: zero everywhere
        crop = masks[index, y0:y1, x0:x1]
        if (y1 - y0) * (x1 - x0) > _CROP_MAX_FRACTION * height * width or crop.max() > 1:
            whole.append(row)  # large, or not 0/1 (the width pass assumes 0/1)
            continue
        values, o0, o1 = _resize_width(crop, width, w, x0)
        if h == height:
            out[row, y0:y1, o0:o1] = _to_uint8(values)
            continue
        pending.append((row, y0, y1, o0, o1, values))
        columns += o1 - o0
        if columns >= _HEIGHT_PASS_COLUMNS:
            _height_pass(pending, out, height, h)
            pending, columns = [], 0
    if pending:
        _height_pass(pending, out, height, h)
    if whole:
        rows = np.asarray(whole)
        out[rows, :h, :w] = _resize_full(masks[chosen[rows]], (h, w))
    return out


def _height_pass(pending: list[tuple[Any, ...]], out: np.ndarray, height: int, h: int) -> None:
    """Height pass of several width-resized crops at once: each crop's columns sit side
    by side in a zero ``(height, columns)`` frame, which torch resizes along the height
    only (so each column gets exactly the values of the whole-frame resize)."""
    import torch
    import torch.nn.functional as F

    total = sum(o1 - o0 for _, _, _, o0, o1, _ in pending)
    # at least two columns: torch 2.x's antialiased height pass of a one-column tensor
    # returns zeros (a torch bug; the whole-frame reference shows it when w == 1)
    frame = np.zeros((height, max(total, 2)), np.float32)
    offset = 0
    for _, y0, y1, o0, o1, values in pending:
        frame[y0:y1, offset : offset + o1 - o0] = values
        offset += o1 - o0
    src = torch.from_numpy(frame)[None, None]
    res = F.interpolate(src, size=(h, frame.shape[1]), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    _, _, first, last = _aa_axis(height, h)
    offset = 0
    for row, y0, y1, o0, o1, _ in pending:
        r0, r1 = _span(first, last, y0, y1)
        out[row, r0:r1, o0:o1] = _to_uint8(res[r0:r1, offset : offset + o1 - o0])
        offset += o1 - o0
