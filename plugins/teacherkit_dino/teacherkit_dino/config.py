"""The ``teachers.grounding_dino`` config section."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teacherkit.config import TeacherConfig

#: The base used when none is configured: IDEA-Research's Swin-T model as transformers publishes it.
DEFAULT_BASE = "IDEA-Research/grounding-dino-tiny"
#: Short names accepted for ``base``, each the hub id it stands for.
NAMED_BASES = {
    "grounding-dino-tiny": "IDEA-Research/grounding-dino-tiny",
    "grounding-dino-base": "IDEA-Research/grounding-dino-base",
}

#: LoRA targets used when ``lora.target_modules`` is null: in every decoder layer, the
#: self-attention, the text cross-attention, the deformable cross-attention projections
#: and the feed-forward network (a regular expression over module names, for peft).
DEFAULT_LORA_TARGETS = (
    r"model\.decoder\.layers\.\d+\.("
    r"self_attn\.(query|key|value|out_proj)"
    r"|encoder_attn_text\.(query|key|value|out_proj)"
    r"|encoder_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)"
    r"|fc1|fc2)"
)


class TinyArchitecture(BaseModel):
    """Sizes of the ``tiny`` base: the real Grounding DINO architecture, scaled down."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    d_model: int = Field(32, ge=8, description="Hidden size of the detector transformer.")
    encoder_layers: int = Field(1, ge=1, description="Fusion encoder layers.")
    decoder_layers: int = Field(2, ge=1, description="Decoder layers.")
    ffn_dim: int = Field(64, ge=8, description="Feed-forward size of encoder and decoder layers.")
    heads: int = Field(2, ge=1, description="Attention heads (d_model must divide by it).")
    num_queries: int = Field(16, ge=1, description="Object queries: the most boxes one image can get.")
    n_points: int = Field(2, ge=1, description="Sampling points per level of deformable attention.")
    swin_embed_dim: int = Field(16, ge=8, description="Swin backbone width of the first stage.")
    text_hidden: int = Field(32, ge=8, description="Hidden size of the BERT text encoder.")
    text_layers: int = Field(1, ge=1, description="BERT text encoder layers.")
    seed: int = Field(0, description="Seed of the random weights; the same seed and classes give the same base.")


class GroundingDinoConfig(TeacherConfig):
    """Grounding DINO (transformers ``GroundingDinoForObjectDetection``) trained on boxes."""

    tiny_preset: ClassVar[dict[str, Any]] = {"finetune": "full", "shortest_edge": 128, "longest_edge": 192}

    base: str = Field(
        DEFAULT_BASE,
        description="Base weights: a hub id in the local Hugging Face cache (IDEA-Research/grounding-dino-tiny or "
        "-base; the short names grounding-dino-tiny/-base work too), a local folder, or 'tiny' (random weights, "
        "small architecture, for trying the pipeline), or one of IDEA's original .pth checkpoints (converted once "
        "into the teacherkit cache; needs a local BERT vocabulary). Nothing is downloaded "
        "(docs/teachers/grounding_dino.md).",
    )
    shortest_edge: int = Field(800, ge=32, description="Resize so the shorter image side is this long.")
    longest_edge: int = Field(1333, ge=32, description="...unless the longer side would exceed this.")
    max_text_len: int = Field(
        256, ge=8, description="Token limit of the text prompt; classes beyond it are sampled (training) or "
        "chunked (prediction). Capped by the model's own max_text_len."
    )
    box_threshold: float = Field(0.3, ge=0, le=1, description="Minimum box score kept at prediction.")
    text_threshold: float = Field(0.25, ge=0, le=1, description="Minimum phrase score for a box's class.")
    nms_iou: float | None = Field(0.5, gt=0, le=1, description="Per-class NMS IoU at prediction; null disables.")
    train_box_head: bool = Field(True, description="Train the box heads fully alongside LoRA.")
    freeze_backbone: bool = Field(True, description="Keep the image backbone frozen (LoRA mode).")
    freeze_text_encoder: bool = Field(True, description="Keep the text encoder frozen (LoRA mode).")
    max_detections: int = Field(100, ge=1, description="Detections kept per image at prediction.")
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="Multi-head attention (decoder self- and text cross-attention, encoder text "
        "self-attention): sdpa: PyTorch's fused kernels; eager: transformers' matmul/softmax code."
    )
    deformable_attention: Literal["auto", "torch"] = Field(
        "auto", description="auto: deformable attention that needs no gradient (a frozen encoder, prediction) "
        "runs a Triton kernel on CUDA when Triton is installed; torch: always transformers' implementation."
    )
    frozen_precision: Literal["autocast", "bf16"] = Field(
        "autocast", description="How the parts LoRA leaves frozen (image backbone, text encoder, encoder) compute. "
        "autocast: float32 weights, as the run's mixed precision casts them; bf16: weights stored in bfloat16 and "
        "run without autocast, so no activation is cast inside them (faster on a GPU with "
        "training.mixed_precision bf16; the frozen features are then rounded to bf16 throughout, whose effect on "
        "quality is not measured yet). LoRA mode only."
    )
    tiny: TinyArchitecture = Field(default_factory=TinyArchitecture, description="Sizes of the 'tiny' base.")

    @model_validator(mode="after")
    def _bf16_needs_frozen_parts(self) -> GroundingDinoConfig:
        if self.frozen_precision == "bf16" and self.finetune != "lora":
            raise ValueError("frozen_precision 'bf16' applies to the parts LoRA leaves frozen; "
                             f"with finetune '{self.finetune}' every part trains (use finetune: lora)")
        return self
