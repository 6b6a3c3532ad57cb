"""Fixtures of the SAM plugin's tests (helpers that tests import live in ``sam_helpers``)."""

from __future__ import annotations

import pytest
from sam_helpers import load_samples


@pytest.fixture
def shapes_samples(tiny_coco):
    """Four 96x128 images of 1-3 shapes each (polygon, RLE and crowd RLE masks)."""
    return load_samples(tiny_coco(num_images=4, size=(96, 128), mask_format="mixed", seed=3))
