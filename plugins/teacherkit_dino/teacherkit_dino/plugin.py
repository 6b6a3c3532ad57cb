"""Hook implementations of the Grounding DINO plugin. Model code is imported lazily."""

from __future__ import annotations

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_dino.config import GroundingDinoConfig

TEACHER = TeacherSpec(
    name="grounding_dino",
    learns_from="boxes",
    config_model=GroundingDinoConfig,
    description="Grounding DINO open-set detector (transformers), LoRA with peft",
    evaluation="bbox",
    primary_metric="bbox_AP",
    metric_mode="max",
)


@hookimpl
def teacherkit_register_teachers() -> list[TeacherSpec]:
    return [TEACHER]
