"""Hook implementations of the SAM plugin. Model code is imported lazily."""

from __future__ import annotations

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_sam.config import SamConfig

TEACHER = TeacherSpec(
    name="sam",
    learns_from="masks",
    config_model=SamConfig,
    description="Segment Anything (transformers SamModel), LoRA with peft",
    evaluation="prompted_mask",
    primary_metric="mIoU",
    metric_mode="max",
)


@hookimpl
def teacherkit_register_teachers() -> list[TeacherSpec]:
    return [TEACHER]
