"""Hook implementations of the SAM plugin.

Loaded at CLI start-up through the ``teacherkit.plugins`` entry point, so it imports
nothing heavy: model code (torch, transformers, peft) is imported inside the hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_sam.config import SamConfig

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit_sam.loss import SamLoss
    from teacherkit_sam.preprocess import SamPreprocessor
    from teacherkit_sam.teacher import SamTeacher

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


@hookimpl
def teacherkit_load_model(teacher: TeacherSpec, config: Any, dataset_info: Any, workdir: Any) -> SamTeacher | None:
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_sam.teacher import build_teacher

    return build_teacher(TEACHER, config, workdir=workdir)


@hookimpl
def teacherkit_make_preprocessor(teacher: TeacherSpec, config: Any, model: Any) -> SamPreprocessor | None:
    if teacher.name != TEACHER.name:
        return None
    return model.make_preprocessor()


@hookimpl
def teacherkit_make_loss(teacher: TeacherSpec, config: Any, model: Any) -> SamLoss | None:
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_sam.loss import SamLoss

    return SamLoss.from_config(config)
