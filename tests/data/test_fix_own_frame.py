"""--fix fills a missing box from the mask even when the image's size is unusable: an RLE
carries its own size and a polygon's box does not depend on the image (found by the
property test's random mutations)."""

from __future__ import annotations

import pytest
from pycocotools import mask as mask_utils

from teacherkit.data.fix import fix_coco
from teacherkit.data.validate import validate_coco


def _coco(segmentation, width):
    return {"images": [{"id": 1, "file_name": "a.png", "width": width, "height": 40}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": None,
                             "segmentation": segmentation}]}


def _rle(x0, y0, w, h):
    import numpy as np

    m = np.zeros((40, 50), dtype=np.uint8, order="F")
    m[y0:y0 + h, x0:x0 + w] = 1
    rle = mask_utils.encode(m)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.mark.parametrize("width", [None, "wide", -3])
@pytest.mark.parametrize("segmentation, box", [
    (_rle(5, 7, 10, 4), [5.0, 7.0, 10.0, 4.0]),
    ([[10, 10, 30, 10, 30, 20, 10, 20]], [10.0, 10.0, 20.0, 10.0]),
])
def test_missing_box_comes_from_the_mask_when_the_image_size_is_broken(width, segmentation, box):
    fixed, _repairs = fix_coco(_coco(segmentation, width))
    assert fixed["annotations"][0]["bbox"] == pytest.approx(box, abs=1.0)
    after = validate_coco(fixed, check_images=False)
    assert not [f for f in after.findings if f.fixable]
