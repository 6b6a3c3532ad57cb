"""Grounding DINO teacher for teacherkit: boxes, open-vocabulary prompts, LoRA.

``import teacherkit_dino`` stays light; the model API loads on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_grounding_dino_with_lora": "teacherkit_dino.api",
    "load_adapter": "teacherkit_dino.adapter",
    "GroundingDinoTeacher": "teacherkit_dino.teacher",
    "GroundingDinoPreprocessor": "teacherkit_dino.preprocess",
    "GroundingDinoLoss": "teacherkit_dino.loss",
    "PromptBuilder": "teacherkit_dino.prompts",
    "GroundingDinoConfig": "teacherkit_dino.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teacherkit_dino' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
