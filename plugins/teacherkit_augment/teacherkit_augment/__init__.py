"""Characteristic-based augmentation for teacherkit (albumentations 2.x).

Users describe their objects and scene; the registry picks transforms that fit::

    from teacherkit_augment import get_augmentation_registry

    pipeline = get_augmentation_registry().get_pipeline(
        characteristics=["changes_shape", "reflective_surface"],
        environment={"lighting": "variable", "camera": "fixed"},
        intensity="medium", seed=0)
    out = pipeline(image=img, masks=masks, bboxes=boxes, labels=labels)

Names are resolved lazily so that importing the plugin (done at CLI start-up) stays
cheap; albumentations loads only when a pipeline is built.
"""

from __future__ import annotations

import os
from importlib import import_module

# albumentations asks PyPI for a newer release when imported; teacherkit never reaches out
# at run time (offline machines would wait on it), so switch that off unless the user chose
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "get_augmentation_registry": "teacherkit_augment.registry",
    "AugmentationRegistry": "teacherkit_augment.registry",
    "AugmentationError": "teacherkit_augment.registry",
    "DEFAULT_ENVIRONMENT": "teacherkit_augment.registry",
    "AugmentationPipeline": "teacherkit_augment.pipeline",
    "SampleAugmenter": "teacherkit_augment.pipeline",
    "BUILTIN_CHARACTERISTICS": "teacherkit_augment.characteristics",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teacherkit_augment' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
