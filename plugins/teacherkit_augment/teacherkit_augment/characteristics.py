"""The built-in augmentation characteristics: object traits and environment facts.

Each entry is a :class:`teacherkit.teachers.CharacteristicSpec` whose ``build(value,
intensity)`` returns albumentations transforms with magnitudes chosen by intensity
(``low`` / ``medium`` / ``high``). albumentations and cv2 are imported inside the
builders, so importing this module (at CLI start-up, through ``plugin.py``) is cheap.

Rules every builder follows, because the pipeline's box/mask guarantees rest on them:

* the image size never changes (no crops, no 90° turns, ``keep_size`` perspective);
* geometric transforms fill the border with zeros in the image and the masks
  (``BORDER_CONSTANT``): reflected borders would copy objects without copying their
  labels;
* masks are resampled with nearest-neighbour interpolation so they stay binary.

``docs/augmentation.md`` explains every entry; keep the two in step.
"""

from __future__ import annotations

from typing import Any

from teacherkit.teachers import CharacteristicSpec

INTENSITIES: tuple[str, ...] = ("low", "medium", "high")


def level(intensity: str, low: Any, medium: Any, high: Any) -> Any:
    """The magnitude for ``intensity``: one value per level, written side by side so
    a reader sees the whole scale of a transform in one line."""
    return {"low": low, "medium": medium, "high": high}[intensity]


def _albu() -> Any:
    import albumentations as A

    return A


def _constant_border() -> dict[str, Any]:
    import cv2

    return {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


# -- object traits ---------------------------------------------------------------------


def _changes_shape(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [
        A.OneOf(
            [
                A.ElasticTransform(
                    alpha=level(intensity, 20.0, 40.0, 70.0), sigma=level(intensity, 8.0, 7.0, 6.0),
                    approximate=True, **_constant_border(), p=1.0,
                ),
                A.GridDistortion(num_steps=5, distort_limit=level(intensity, 0.1, 0.2, 0.3),
                                 **_constant_border(), p=1.0),
            ],
            p=level(intensity, 0.3, 0.5, 0.7),
        )
    ]


def _rigid(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [
        A.Perspective(scale=(0.02, level(intensity, 0.04, 0.07, 0.1)), keep_size=True,
                      **_constant_border(), p=level(intensity, 0.3, 0.5, 0.6)),
        A.Affine(shear=(-level(intensity, 4, 8, 12), level(intensity, 4, 8, 12)),
                 **_constant_border(), p=level(intensity, 0.2, 0.3, 0.4)),
    ]


def _reflective_surface(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    limit = level(intensity, 0.1, 0.2, 0.3)
    return [
        A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=level(intensity, 0.4, 0.5, 0.7)),
        A.RandomGamma(gamma_limit=(level(intensity, 90, 80, 70), level(intensity, 110, 125, 140)), p=0.3),
        A.RandomToneCurve(scale=level(intensity, 0.05, 0.1, 0.2), p=level(intensity, 0.2, 0.3, 0.4)),
    ]


def _transparent(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    hue = level(intensity, 5, 10, 20)
    sat = level(intensity, 15, 25, 40)
    return [
        A.HueSaturationValue(hue_shift_limit=hue, sat_shift_limit=sat, val_shift_limit=10,
                             p=level(intensity, 0.3, 0.5, 0.7)),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, level(intensity, 0.8, 1.2, 1.8)),
                       p=level(intensity, 0.1, 0.2, 0.3)),
    ]


def _textureless(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [
        A.GaussNoise(std_range=(0.01, level(intensity, 0.03, 0.06, 0.1)), p=level(intensity, 0.2, 0.3, 0.5)),
        A.ToGray(p=level(intensity, 0.05, 0.1, 0.2)),
    ]


def _small_objects(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [
        A.Affine(scale=(1.0, level(intensity, 1.3, 1.5, 1.7)), keep_ratio=True,
                 translate_percent=(-0.1, 0.1), **_constant_border(), p=level(intensity, 0.3, 0.5, 0.6)),
    ]


def _thin_structures(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [
        A.Rotate(limit=level(intensity, 10, 20, 30), **_constant_border(), p=level(intensity, 0.3, 0.4, 0.5)),
        A.Sharpen(alpha=(0.1, level(intensity, 0.2, 0.3, 0.5)), lightness=(0.8, 1.0), p=0.3),
        A.CLAHE(clip_limit=level(intensity, 2.0, 3.0, 4.0), p=level(intensity, 0.1, 0.2, 0.3)),
    ]


def _rotation_invariant(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [A.Rotate(limit=level(intensity, 30, 90, 180), **_constant_border(), p=level(intensity, 0.5, 0.7, 0.8))]


def _symmetric(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    transforms = [A.HorizontalFlip(p=level(intensity, 0.3, 0.5, 0.5))]
    if intensity == "high":  # vertical mirror images are only plausible for strongly symmetric objects
        transforms.append(A.VerticalFlip(p=0.3))
    return transforms


def _occluded(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    top = level(intensity, 0.1, 0.15, 0.2)
    # fill_mask=0: a hole hides part of an object, and COCO masks (and the boxes drawn
    # from them) cover what is visible; an instance hidden almost entirely is dropped.
    return [
        A.CoarseDropout(num_holes_range=(1, level(intensity, 2, 4, 6)), hole_height_range=(0.05, top),
                        hole_width_range=(0.05, top), fill="random_uniform", fill_mask=0,
                        p=level(intensity, 0.3, 0.5, 0.7)),
    ]


def _moving(_value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    return [A.MotionBlur(blur_limit=(3, level(intensity, 7, 11, 15)), p=level(intensity, 0.3, 0.5, 0.6))]


# -- environment facts -----------------------------------------------------------------


def _lighting(value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    if value == "fixed":
        limit = level(intensity, 0.05, 0.1, 0.15)
        return [A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=0.5)]
    limit = level(intensity, 0.15, 0.25, 0.4)
    return [
        A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=level(intensity, 0.5, 0.7, 0.8)),
        A.RandomGamma(gamma_limit=(level(intensity, 85, 75, 60), level(intensity, 115, 130, 150)), p=0.4),
        A.PlanckianJitter(mode="blackbody", p=level(intensity, 0.2, 0.3, 0.4)),
        A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2),
                       shadow_intensity_range=(0.2, level(intensity, 0.4, 0.5, 0.7)),
                       p=level(intensity, 0.1, 0.2, 0.3)),
    ]


def _camera(value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    if value == "fixed":
        return [A.Affine(translate_percent=(-level(intensity, 0.02, 0.03, 0.05), level(intensity, 0.02, 0.03, 0.05)),
                         scale=(0.97, 1.03), **_constant_border(), p=0.5)]
    strong = value == "moving"
    rotate = level(intensity, 5, 10, 15)
    scale = (level(intensity, 0.95, 0.9, 0.8), level(intensity, 1.05, 1.1, 1.2))
    transforms = [
        A.Affine(translate_percent=(-0.06, 0.06), scale=scale,
                 rotate=(-rotate, rotate), **_constant_border(), p=level(intensity, 0.5, 0.6, 0.7)),
        A.Perspective(scale=(0.02, level(intensity, 0.04, 0.06, 0.08)), keep_size=True, **_constant_border(),
                      p=level(intensity, 0.2, 0.3, 0.4)),
        A.MotionBlur(blur_limit=(3, level(intensity, 7, 11, 15) if strong else 5),
                     p=level(intensity, 0.3, 0.5, 0.6) if strong else 0.15),
    ]
    return transforms


def _background(value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    if value == "plain":
        return [
            A.GaussNoise(std_range=(0.01, level(intensity, 0.03, 0.05, 0.08)), p=level(intensity, 0.2, 0.3, 0.4)),
            A.ColorJitter(brightness=0.0, contrast=0.0, saturation=level(intensity, 0.1, 0.2, 0.3),
                          hue=level(intensity, 0.03, 0.05, 0.1), p=level(intensity, 0.3, 0.4, 0.5)),
        ]
    return [
        A.Affine(scale=(level(intensity, 0.9, 0.8, 0.7), level(intensity, 1.1, 1.2, 1.3)), keep_ratio=True,
                 **_constant_border(), p=level(intensity, 0.3, 0.5, 0.6)),
        A.CoarseDropout(num_holes_range=(1, level(intensity, 3, 6, 10)), hole_height_range=(0.02, 0.08),
                        hole_width_range=(0.02, 0.08), fill="random_uniform", fill_mask=0,
                        p=level(intensity, 0.2, 0.3, 0.4)),
    ]


def _weather(value: str | None, intensity: str) -> list[Any]:
    A = _albu()
    p = level(intensity, 0.2, 0.3, 0.5)
    rain = A.RandomRain(rain_type=level(intensity, "drizzle", "default", "heavy"), p=1.0)
    fog = A.RandomFog(fog_coef_range=(0.1, level(intensity, 0.2, 0.3, 0.5)), alpha_coef=0.08, p=1.0)
    snow = A.RandomSnow(snow_point_range=(0.05, level(intensity, 0.1, 0.2, 0.3)), p=1.0)
    sun = A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 3),
                         shadow_intensity_range=(0.3, level(intensity, 0.5, 0.6, 0.8)), p=1.0)
    chosen = {"clear": [sun], "rain": [rain], "fog": [fog], "snow": [snow]}.get(value or "", [rain, fog, snow, sun])
    return [A.OneOf(chosen, p=p)]


BUILTIN_CHARACTERISTICS: tuple[CharacteristicSpec, ...] = (
    CharacteristicSpec("changes_shape", "object",
                       "deformable objects bend and stretch; elastic and grid warps show new shapes, masks warp along",
                       _changes_shape),
    CharacteristicSpec("rigid", "object",
                       "rigid objects change only with viewpoint; perspective and shear imitate new viewpoints",
                       _rigid),
    CharacteristicSpec("reflective_surface", "object",
                       "highlights move with the viewpoint; brightness, gamma and tone-curve jitter stop reliance on "
                       "exact intensities", _reflective_surface),
    CharacteristicSpec("transparent", "object",
                       "glass takes its colour from behind; hue/saturation shifts and slight blur teach outlines "
                       "instead of colour", _transparent),
    CharacteristicSpec("textureless", "object",
                       "untextured objects are known by outline and shading; noise and grey images stop texture cues",
                       _textureless),
    CharacteristicSpec("small_objects", "object",
                       "small objects have few pixels; zooming in (up to 1.3-1.7x, never out) shows them larger",
                       _small_objects),
    CharacteristicSpec("thin_structures", "object",
                       "wires and stems are 1-2 px wide; sharpening and local contrast keep them visible, small "
                       "rotations add angles, no blur", _thin_structures),
    CharacteristicSpec("rotation_invariant", "object",
                       "objects without a natural 'up' (aerial, microscopy) are valid at any angle; rotations up to "
                       "30/90/180 degrees", _rotation_invariant),
    CharacteristicSpec("symmetric", "object",
                       "mirror-symmetric objects stay themselves when flipped; horizontal flips (vertical too at high)",
                       _symmetric),
    CharacteristicSpec("occluded", "object",
                       "objects are often partly hidden; random holes teach finding them from the visible parts",
                       _occluded),
    CharacteristicSpec("moving", "object",
                       "moving objects smear along their path; motion blur of 3 to 7/11/15 px imitates it", _moving),
    CharacteristicSpec("lighting", "environment",
                       "fixed: small exposure jitter for sensor drift; variable: exposure, gamma, colour temperature "
                       "and shadows change", _lighting, values=("fixed", "variable")),
    CharacteristicSpec("camera", "environment",
                       "fixed: small shifts; handheld: tilt, scale and perspective, light blur; moving: the same with "
                       "strong motion blur", _camera, values=("fixed", "handheld", "moving")),
    CharacteristicSpec("background", "environment",
                       "plain: noise and colour jitter so a clean background is no cue; cluttered: scale jitter and "
                       "small random holes among distractors", _background, values=("plain", "cluttered")),
    CharacteristicSpec("weather", "environment",
                       "outdoor scenes: hard shadows (clear), rain, fog, snow, or one of them at random (mixed)",
                       _weather, values=("clear", "rain", "fog", "snow", "mixed")),
)
