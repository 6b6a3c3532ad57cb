"""Characteristic-based augmentation for teacherkit (albumentations 2.x)."""

__version__ = "0.1.0"
