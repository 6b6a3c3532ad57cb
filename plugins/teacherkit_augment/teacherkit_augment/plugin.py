"""Hook implementations of the augmentation plugin.

Loaded at CLI start-up through the ``teacherkit.plugins`` entry point, so it imports
nothing heavy: albumentations and cv2 load only when a pipeline is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.config import AugmentationConfig
    from teacherkit.data.info import DatasetInfo
    from teacherkit.plugins import PluginHost
    from teacherkit.teachers import Augmentation, CharacteristicSpec


@hookimpl
def teacherkit_augmentations() -> list[CharacteristicSpec]:
    """The built-in object traits and environment facts."""
    from teacherkit_augment.characteristics import BUILTIN_CHARACTERISTICS

    return list(BUILTIN_CHARACTERISTICS)


@hookimpl
def teacherkit_make_augmentation(
    config: AugmentationConfig, dataset_info: DatasetInfo, host: PluginHost
) -> Augmentation | None:
    """``augment(sample, seed)`` for the configured characteristics, or ``None`` when
    ``augmentation.enabled`` is false. With nothing configured it uses the mild
    default (:data:`teacherkit_augment.registry.DEFAULT_ENVIRONMENT`)."""
    if not config.enabled:
        return None
    from teacherkit_augment.registry import get_augmentation_registry

    # the calling host knows every plugin registered on it, installed or not
    registry = get_augmentation_registry(host)
    return registry.make_augmenter(config.characteristics, config.environment, config.intensity,
                                   fields=host.sample_fields())


@hookimpl
def teacherkit_register_commands(app: Any) -> None:
    """``teacherkit augment list`` and ``teacherkit augment preview``."""
    from teacherkit_augment.commands import register

    register(app)
