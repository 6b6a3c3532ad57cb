"""Hook implementations of the Grounding DINO plugin.

Loaded at CLI start-up through the ``teacherkit.plugins`` entry point, so it stays
light: torch, transformers and peft are imported inside the hook functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teacherkit import hookimpl
from teacherkit.teachers import TeacherSpec
from teacherkit_dino.config import GroundingDinoConfig

if TYPE_CHECKING:  # pragma: no cover
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


def _ours(teacher: TeacherSpec) -> bool:
    return teacher.name == TEACHER.name


@hookimpl
def teacherkit_register_teachers() -> list[TeacherSpec]:
    return [TEACHER]


@hookimpl
def teacherkit_load_model(
    teacher: TeacherSpec, config: GroundingDinoConfig, dataset_info: DatasetInfo, workdir: Any
) -> GroundingDinoTeacher | None:
    """Build the base (tiny, local directory or cached hub id) and apply LoRA or full tuning."""
    if not _ours(teacher):
        return None
    from teacherkit_dino.modeling import load_base
    from teacherkit_dino.teacher import GroundingDinoTeacher

    base = load_base(config, list(dataset_info.class_names))
    return GroundingDinoTeacher(teacher, config, dataset_info, base)


@hookimpl
def teacherkit_make_preprocessor(teacher: TeacherSpec, config: GroundingDinoConfig, model: Any) -> Any:
    """Resize, normalise, pad, and build each sample's prompt (see ``preprocess.py``)."""
    if not _ours(teacher):
        return None
    return model.make_preprocessor()


@hookimpl
def teacherkit_make_loss(teacher: TeacherSpec, config: GroundingDinoConfig, model: Any) -> Any:
    """transformers' Grounding DINO loss with costs and weights from the model config."""
    if not _ours(teacher):
        return None
    from teacherkit_dino.loss import GroundingDinoLoss

    return GroundingDinoLoss.from_model_config(model.hf_model.config)
