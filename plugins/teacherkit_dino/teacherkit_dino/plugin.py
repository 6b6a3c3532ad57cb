"""Hook implementations of the Grounding DINO plugin.

Loaded at CLI start-up through the ``teacherkit.plugins`` entry point, so it stays
light: torch, transformers and peft are imported inside the hook functions only.

A teacher plugin with two hooks: the preprocessor and the loss come from
:class:`~teacherkit_dino.teacher.GroundingDinoTeacher` itself (``make_preprocessor()``,
``make_loss()``), which the core's default hooks ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_dino.config import GroundingDinoConfig

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from teacherkit.data.info import DatasetInfo
    from teacherkit_dino.teacher import GroundingDinoTeacher

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


@hookimpl
def teacherkit_load_model(
    teacher: TeacherSpec, config: GroundingDinoConfig, dataset_info: DatasetInfo, workdir: Path | None
) -> GroundingDinoTeacher | None:
    """Build the base (tiny, local directory or cached hub id) and apply LoRA or full tuning."""
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_dino.modeling import load_base
    from teacherkit_dino.teacher import GroundingDinoTeacher

    base = load_base(config, list(dataset_info.class_names))
    return GroundingDinoTeacher(teacher, config, dataset_info, base)


@hookimpl
def teacherkit_check_base(teacher: TeacherSpec, config: Any) -> Any:
    """Where the base is, found without loading it (a missing one is reported before
    ``train`` writes anything)."""
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_dino.convert import check_base

    return check_base(config)


@hookimpl
def teacherkit_register_commands(app: Any) -> None:
    """``teacherkit convert`` for this teacher's original checkpoints."""
    from teacherkit.convert import add_converter
    from teacherkit_dino.convert import CONVERTER

    add_converter(app, CONVERTER)
