"""Fixtures for trainer tests: the shipped example keypoint plugin as a small, real
teacher (a conv regressor), registered without installing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "teacherkit_keypoints_example"


def keypoint_plugin():
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import teacherkit_keypoints_example.plugin as plugin

    return plugin


@pytest.fixture
def kp_host():
    """Installed plugins plus the example keypoint plugin (the installed copy, if any, is
    blocked so the teacher is declared once)."""
    from teacherkit.plugins import get_plugin_manager

    return get_plugin_manager(extra_plugins=[("kp-test", keypoint_plugin())], disabled={"keypoints-example"})


@pytest.fixture
def kp_data(tiny_coco):
    """Keypoint-only data (no boxes, no masks): only the keypoint teacher trains."""
    train = tiny_coco(num_images=12, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=1)
    val = tiny_coco(num_images=4, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=2)
    return train, val
