"""The ``teachers.grounding_dino`` config section."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from teacherkit.config import TeacherConfig


class GroundingDinoConfig(TeacherConfig):
    tiny_preset: ClassVar[dict[str, Any]] = {"finetune": "full", "shortest_edge": 128, "longest_edge": 192}

    shortest_edge: int = Field(800, ge=32, description="Resize so the shorter image side is this long.")
    longest_edge: int = Field(1333, ge=32, description="...unless the longer side would exceed this.")
    max_text_len: int = Field(256, ge=8, description="Token limit of the text prompt; classes beyond it are chunked.")
    box_threshold: float = Field(0.3, ge=0, le=1, description="Minimum box score kept at prediction.")
    text_threshold: float = Field(0.25, ge=0, le=1, description="Minimum phrase score for a box's class.")
    nms_iou: float | None = Field(0.5, gt=0, le=1, description="Per-class NMS IoU at prediction; null disables.")
    train_box_head: bool = Field(True, description="Train the box/class heads fully alongside LoRA.")
    freeze_backbone: bool = Field(True, description="Keep the image backbone frozen (LoRA mode).")
    freeze_text_encoder: bool = Field(True, description="Keep the text encoder frozen (LoRA mode).")
    max_detections: int = Field(100, ge=1, description="Detections kept per image at prediction.")
