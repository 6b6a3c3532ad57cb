"""The seed API: one call from a checkpoint to a LoRA-ready teacher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from teacherkit.config import LoraSettings
from teacherkit.data.info import DatasetInfo


def load_grounding_dino_with_lora(
    base_checkpoint: str,
    num_classes: int,
    lora_config: LoraSettings | Mapping[str, Any] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    **overrides: Any,
) -> Any:
    """Load Grounding DINO (``"tiny"``, a local directory or a cached hub id) with LoRA.

    :param base_checkpoint: ``teachers.grounding_dino.base``.
    :param num_classes: number of classes; names default to ``"class 1"``, ``"class 2"``, …
    :param lora_config: LoRA rank/alpha/dropout/targets (``LoraSettings`` or a dict).
    :param class_names: the class names the prompts are built from.
    :param category_ids: their COCO ids (default ``1..num_classes``).
    :param overrides: other ``GroundingDinoConfig`` fields (``finetune``, ``train_box_head``, …).
    :return: a :class:`teacherkit_dino.teacher.GroundingDinoTeacher`; ``.model`` is the
        peft model to train, ``.make_preprocessor()`` and ``GroundingDinoLoss`` feed it.
    """
    from teacherkit_dino.config import GroundingDinoConfig
    from teacherkit_dino.modeling import load_base
    from teacherkit_dino.plugin import TEACHER
    from teacherkit_dino.teacher import GroundingDinoTeacher

    names = list(class_names) if class_names is not None else [f"class {i + 1}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but {len(names)} class names given")
    ids = [int(c) for c in category_ids] if category_ids is not None else list(range(1, num_classes + 1))
    lora = lora_config if isinstance(lora_config, LoraSettings) else LoraSettings(**dict(lora_config or {}))
    config = GroundingDinoConfig(base=base_checkpoint, lora=lora, **overrides)
    info = DatasetInfo(
        annotation_kinds=["boxes"], categories=[{"id": i, "name": n} for i, n in zip(ids, names, strict=True)],
        class_names=names, class_mapping={i: k for k, i in enumerate(ids)},
    )
    return GroundingDinoTeacher(TEACHER, config, info, load_base(config, names))
