"""The ``teachers.sam`` config section."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from teacherkit.config import TeacherConfig


class SamConfig(TeacherConfig):
    tiny_preset: ClassVar[dict[str, Any]] = {"finetune": "full", "image_size": 128}

    mode: Literal["lora", "frozen_encoder"] = Field(
        "lora", description="'lora': LoRA on the image encoder's qkv plus the mask decoder; "
        "'frozen_encoder': encoder frozen (embeddings cached), only the decoder trains."
    )
    image_size: int = Field(1024, ge=32, description="Longest side after resizing; images are padded to a square.")
    prompt: Literal["box", "points", "mixed"] = Field("box", description="Prompts sampled from ground truth.")
    box_jitter: float = Field(0.1, ge=0, le=0.5, description="Box prompt jitter, as a fraction of box size.")
    num_points: int = Field(1, ge=1, description="Positive points per instance for point prompts.")
    num_negative_points: int = Field(0, ge=0, description="Negative points per instance for point prompts.")
    max_instances: int = Field(16, ge=1, description="Instances per image per step (sampled) to bound memory.")
    cache_embeddings: Literal["memory", "disk", "off"] = Field(
        "memory", description="Where frozen-encoder image embeddings are cached."
    )
    focal_weight: float = Field(20.0, ge=0, description="Weight of the focal loss (SAM paper: 20).")
    dice_weight: float = Field(1.0, ge=0, description="Weight of the dice loss.")
    iou_weight: float = Field(1.0, ge=0, description="Weight of the IoU-prediction MSE.")
    train_decoder: Literal["full", "lora"] = Field("full", description="Train the mask decoder fully or with LoRA.")
