"""Hook implementations of the augmentation plugin. albumentations is imported lazily."""

from __future__ import annotations
