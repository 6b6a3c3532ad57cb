"""Hook implementations. Only light imports at module level: this module is loaded when
the ``teacherkit`` CLI starts.

A teacher needs two hooks: ``teacherkit_register_teachers`` and ``teacherkit_load_model``.
The preprocessor and the loss come from the teacher itself (``make_preprocessor()``,
``make_loss()``), which the core's default hooks call. The other two hooks say which
data this plugin is about: ``teacherkit_detect_annotations`` names the kind, and
``teacherkit_sample_fields`` tells augmentation how the kind's sample field moves.
Predictions are scored by the teacher's own metric (``TeacherSpec.metric``, in
``metric.py``), which training and ``teacherkit evaluate`` both call.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from teacherkit import hookimpl
from teacherkit.config import TeacherConfig
from teacherkit.teachers import TeacherSpec
from teacherkit_keypoints_example.metric import centroid_metrics


class KeypointCentroidConfig(TeacherConfig):
    image_size: int = Field(64, ge=8, description="Images are resized to this square size.")


TEACHER = TeacherSpec(
    name="keypoint_centroid",
    learns_from="keypoints",
    config_model=KeypointCentroidConfig,
    description="example: regresses the mean visible keypoint of an image",
    evaluation="none",
    # its own scoring (the core's built-in metrics know boxes and masks, not keypoints); the
    # best epoch is still the one of the lowest validation loss
    metric=centroid_metrics,
    primary_metric="loss",
    metric_mode="min",
)


def _has_keypoints(ann: Any) -> bool:
    kps = getattr(ann, "keypoints", None)
    return bool(kps) and any(v > 0 for v in kps[2::3])


@hookimpl
def teacherkit_detect_annotations(dataset: Any) -> list[str]:
    return ["keypoints"] if any(_has_keypoints(a) for a in dataset.annotations) else []


@hookimpl
def teacherkit_register_teachers() -> list[TeacherSpec]:
    return [TEACHER]


@hookimpl
def teacherkit_load_model(teacher: TeacherSpec, config: Any, dataset_info: Any, workdir: Any) -> Any:
    if teacher.name != TEACHER.name:
        return None
    from teacherkit_keypoints_example.model import CentroidTeacher

    return CentroidTeacher(TEACHER, config)


@hookimpl
def teacherkit_sample_fields() -> dict[str, str]:
    # COCO keypoints reach the sample as its "keypoints" field, (N, K, 3) (x, y, visibility):
    # augmentation moves them with the image
    return {"keypoints": "keypoints"}
