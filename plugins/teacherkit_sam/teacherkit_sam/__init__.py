"""SAM teacher for teacherkit: masks from box/point prompts, LoRA, embedding cache.

``import teacherkit_sam`` stays light; :func:`load_sam_with_lora` imports torch,
transformers and peft when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit_sam.config import SamConfig
    from teacherkit_sam.teacher import SamTeacher

__version__ = "0.1.0"
__all__ = ["__version__", "load_sam_with_lora"]


def load_sam_with_lora(
    base: str = "tiny",
    *,
    config: SamConfig | None = None,
    workdir: Path | None = None,
    r: int | None = None,
    alpha: int | None = None,
    target_modules: list[str] | None = None,
    **fields: Any,
) -> SamTeacher:
    """Load SAM and set it up for fine-tuning; returns a :class:`SamTeacher` whose
    ``model`` is what an optimiser trains.

    :param base: ``"tiny"``, a local directory or a hub id already in the local cache.
    :param config: a full :class:`SamConfig`; ``base`` and the keyword fields override it.
    :param workdir: where a disk embedding cache may live.
    :param r, alpha, target_modules: shortcuts for ``config.lora``.
    :param fields: any other ``SamConfig`` field (``mode="frozen_encoder"``, ``image_size=128``).

    Example: ``load_sam_with_lora("tiny", image_size=128, finetune="full")``.
    """
    from teacherkit_sam.config import SamConfig
    from teacherkit_sam.plugin import TEACHER
    from teacherkit_sam.teacher import build_teacher

    data = (config or SamConfig()).model_dump()
    data.update(fields, base=base)
    lora = {"r": r, "alpha": alpha, "target_modules": target_modules}
    data["lora"].update({k: v for k, v in lora.items() if v is not None})
    return build_teacher(TEACHER, SamConfig.model_validate(data), workdir=workdir)
