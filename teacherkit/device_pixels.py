"""Finishing a collated batch of uint8 pixels where it is (the device, after the copy):
the pieces every teacher plugin's normalisation shares.

DataLoader workers ship resized, zero-padded uint8 pixels and each image's size; the
teacher normalises after the copy. Its per-channel constants are made once per device
(:func:`channel_constants`: a host-to-device copy every batch would wait for the device)
and the padding follows from the sizes (:func:`padding_mask`: no per-pixel mask travels).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=32)
def channel_constants(rows: tuple[tuple[float, ...], ...], device: Any) -> tuple[Any, ...]:
    """Each row as a ``(1, C, 1, 1)`` float32 tensor on ``device``, made once per
    ``(rows, device)``. Tensors, not Python numbers: CUDA divides by a host scalar as a
    multiplication by its reciprocal, which can be one bit off a true division."""
    import torch

    return tuple(torch.as_tensor(np.asarray(row, np.float32).reshape(1, -1, 1, 1), device=device) for row in rows)


def padding_mask(image_sizes: Any, height: int, width: int, device: Any = None) -> Any:
    """``(B, height, width)`` bool, true inside each image's ``(h, w)`` of ``image_sizes``
    ``(B, 2)`` (top-left aligned), built on ``device`` (default: where ``image_sizes`` is)
    without reading the sizes back to the host."""
    import torch

    sizes = torch.as_tensor(image_sizes)
    sizes = (sizes if device is None else sizes.to(device)).reshape(-1, 2)
    rows = torch.arange(height, device=sizes.device)[None, :] < sizes[:, :1]
    cols = torch.arange(width, device=sizes.device)[None, :] < sizes[:, 1:]
    return rows[:, :, None] & cols[:, None, :]
