"""teacherkit: fine-tune Grounding DINO and SAM teachers on your own COCO data.

The public API is imported lazily so ``import teacherkit`` (and ``teacherkit --help``)
stays light: torch and transformers load only when something trains or predicts.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from teacherkit.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "get_plugin_manager": "teacherkit.plugins",
    "PluginHost": "teacherkit.plugins",
    "TeacherSpec": "teacherkit.teachers",
    "Teacher": "teacherkit.teachers",
    "CharacteristicSpec": "teacherkit.teachers",
    "ParameterReport": "teacherkit.teachers",
    "DatasetInfo": "teacherkit.data.info",
    "load_coco": "teacherkit.data.coco",
    "TeacherTrainer": "teacherkit.training.trainer",
    "TeacherkitError": "teacherkit.errors",
    # the seed guide's API (docs/seed-api.md): thin calls over the machinery above
    "inspect_dataset": "teacherkit.seed_api",
    "get_required_models": "teacherkit.seed_api",
    "load_and_inspect_dataset": "teacherkit.seed_api",
    "generate_config": "teacherkit.seed_api",
    "create_preprocessor_from_models": "teacherkit.seed_api",
    "get_augmentation_registry": "teacherkit.seed_api",
    "load_grounding_dino_with_lora": "teacherkit.seed_api",
    "TrainingManager": "teacherkit.seed_training",
    "CheckpointManager": "teacherkit.seed_training",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teacherkit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
