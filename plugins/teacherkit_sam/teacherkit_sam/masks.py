"""Binary masks in and out of COCO form (pycocotools) and between image frames.

COCO stores an instance as polygons, compressed RLE (``counts`` a string) or
uncompressed RLE (``counts`` a list, usually crowd regions). The teacher works on
``(H, W)`` uint8 masks and hands predictions back as compressed RLE whose ``counts``
is a ``str`` so the result is JSON-ready.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from teacherkit.errors import DataError


def segmentation_to_mask(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> np.ndarray:
    """Decode a COCO ``segmentation`` (polygons, RLE or uncompressed RLE) to an
    ``(height, width)`` uint8 mask of 0/1.

    :param where: names the annotation in error messages (``"train.json annotation 17"``).
    :raises DataError: when the segmentation is malformed or its size disagrees with the image.
    """
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list):
            polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points cover nothing
            if not polygons:
                return np.zeros((height, width), dtype=np.uint8)
            rles = mask_utils.frPyObjects(polygons, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segmentation, dict):
            size = [int(v) for v in segmentation.get("size", [])]
            if size != [height, width]:
                raise DataError(f"{where}: RLE size {size} does not match the image size [{height}, {width}]")
            counts = segmentation["counts"]
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise DataError(f"{where}: expected polygons (a list) or RLE (a dict), got {type(segmentation).__name__}")
        if isinstance(rle, list):
            rle = rle[0]
        mask = mask_utils.decode([rle])[:, :, 0]  # the list form avoids a numpy-2 deprecation path
    except DataError:
        raise
    except Exception as exc:  # pycocotools raises bare TypeError/ValueError on bad input
        raise DataError(f"{where}: cannot decode segmentation: {exc}") from exc
    return np.ascontiguousarray(mask.astype(np.uint8))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a binary ``(H, W)`` mask as COCO compressed RLE with ``str`` counts."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a compressed RLE (``str`` or ``bytes`` counts) to an ``(H, W)`` uint8 mask."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode([obj])[:, :, 0]


def mask_box_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """The tight ``[x0, y0, x1, y1]`` box of a mask (pixel edges), or ``None`` when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """The ``(h, w)`` an image takes when its longest side is scaled to ``longest``
    (rounded as SAM's own image processor rounds)."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def masks_to_input_frame(masks: np.ndarray, resized: tuple[int, int], size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` 0/1 masks into the padded ``size``² model-input frame.

    Returns ``(N, size, size)`` uint8 holding the covered fraction of each pixel in
    0..255 (area averaging when shrinking): a one-pixel object shrunk below a pixel
    stays a faint target instead of vanishing.
    """
    import torch
    import torch.nn.functional as F

    n = masks.shape[0]
    out = np.zeros((n, size, size), dtype=np.uint8)
    if n == 0:
        return out
    h, w = resized
    src = torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)
    if (h, w) != tuple(masks.shape[1:]):
        # antialias makes bilinear downscaling average over the source footprint
        src = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    out[:, :h, :w] = (src[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return out
