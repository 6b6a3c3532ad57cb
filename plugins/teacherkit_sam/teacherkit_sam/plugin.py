"""Hook implementations of the SAM plugin.

Loaded at CLI start-up through the ``teacherkit.plugins`` entry point, so it imports
nothing heavy: model code (torch, transformers, peft) is imported inside the hooks.

A teacher plugin with two hooks: the preprocessor and the loss come from
:class:`~teacherkit_sam.teacher.SamTeacher` itself (``make_preprocessor()``,
``make_loss()``), which the core's default hooks ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_sam.config import SamConfig

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from teacherkit.data.info import DatasetInfo
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
def teacherkit_load_model(
    teacher: TeacherSpec, config: SamConfig, dataset_info: DatasetInfo, workdir: Path | None
) -> SamTeacher | None:
    """Build the base (tiny, local directory or cached hub id) and apply LoRA or full tuning."""
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_sam.teacher import build_teacher

    return build_teacher(TEACHER, config, workdir=workdir)


@hookimpl
def teacherkit_check_base(teacher: TeacherSpec, config: Any) -> Any:
    """Where the base is, found without loading it (a missing one is reported before
    ``train`` writes anything)."""
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_sam.loading import check_base

    return check_base(config)


@hookimpl
def teacherkit_register_commands(app: Any) -> None:
    """``teacherkit convert`` for this teacher's original checkpoints."""
    from teacherkit.convert import add_converter
    from teacherkit_sam.convert import CONVERTER

    add_converter(app, CONVERTER)
