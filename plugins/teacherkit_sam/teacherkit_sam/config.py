"""The ``teachers.sam`` config section.

Every field has a default and a description; ``teacherkit config show`` and
``docs/teachers/sam.md`` are written from them. Nothing heavy is imported here: the
CLI loads this module at start-up.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from teacherkit.config import TeacherConfig

#: The base used when none is configured: Meta's ViT-B SAM as transformers publishes it.
DEFAULT_BASE = "facebook/sam-vit-base"
#: Short names accepted for ``base``, each the hub id it stands for.
NAMED_BASES = {
    "sam-vit-base": "facebook/sam-vit-base",
    "sam-vit-large": "facebook/sam-vit-large",
    "sam-vit-huge": "facebook/sam-vit-huge",
}


class SamConfig(TeacherConfig):
    """Settings of the SAM mask teacher (transformers ``SamModel``)."""

    #: What ``--preset tiny`` changes: a random tiny SAM cannot learn through LoRA alone,
    #: so everything trains; 128 px inputs keep a CPU step well under 0.1 s.
    tiny_preset: ClassVar[dict[str, Any]] = {"finetune": "full", "image_size": 128, "max_instances": 8}

    base: str = Field(
        DEFAULT_BASE,
        description="Base weights: a hub id in the local Hugging Face cache (facebook/sam-vit-base, -large, "
        "-huge; the short names sam-vit-base/-large/-huge work too), a local folder, an original Meta checkpoint "
        "(sam_vit_b/l/h .pth, converted once into the teacherkit cache), or 'tiny' (random weights, small "
        "architecture, for trying the pipeline). Nothing is downloaded.",
    )
    mode: Literal["lora", "frozen_encoder"] = Field(
        "lora",
        description="'lora': LoRA on the image encoder's attention (qkv) plus the mask decoder (see "
        "train_decoder); 'frozen_encoder': the image encoder is frozen (its embeddings can be cached) and "
        "only the prompt encoder/mask decoder train.",
    )
    train_decoder: Literal["full", "lora"] = Field(
        "full", description="In LoRA fine-tuning: train the mask decoder's weights fully or through LoRA."
    )
    image_size: int = Field(
        1024,
        ge=32,
        description="Longest image side after resizing; images are padded to a square of this size. For the "
        "tiny preset it sets the model's input size; a pretrained base must match its own (1024 for SAM).",
    )
    prompt: Literal["box", "points", "mixed"] = Field(
        "box",
        description="Prompts sampled from the ground truth during training: the instance box (jittered), "
        "points sampled from the mask, or per batch one of the two at random.",
    )
    box_jitter: float = Field(
        0.1, ge=0, le=0.5, description="Std-dev of box corner noise as a fraction of the box side (SAM paper: 0.1)."
    )
    box_jitter_max: float = Field(
        20.0, ge=0, description="Largest box corner noise in pixels at a 1024 input (scaled with image_size)."
    )
    num_points: int = Field(1, ge=1, description="Positive points sampled from the mask per instance.")
    num_negative_points: int = Field(
        0, ge=0, description="Negative points per instance, sampled inside the box but outside the mask."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute image-encoder activations in the backward pass (LoRA/full modes): "
        "about a third of the memory at about 0.73x the speed on ViT-B."
    )
    attention: Literal["folded", "sdpa", "eager"] = Field(
        "folded",
        description="Image-encoder attention: 'folded' puts the relative-position term into the query/key "
        "head dimension so SDPA never builds the (batch, heads, N, N) bias (same result, less memory, "
        "fused kernels); 'sdpa' is transformers' SDPA with that bias as a mask; 'eager' is transformers' "
        "eager attention (everywhere, also in the mask decoder). Weights and adapters are the same for all.",
    )
    max_instances: int = Field(
        16, ge=1, description="Instances per image per training step (a seeded sample) to bound memory; "
        "evaluation uses all."
    )
    cache_embeddings: Literal["memory", "device", "disk", "off"] = Field(
        "memory",
        description="Where image-encoder embeddings are cached when the encoder is frozen "
        "(mode=frozen_encoder): 'memory' in host memory, 'device' in the accelerator's memory (no copy "
        "per hit; for a GPU with room for cache_memory_mb), 'disk' under the run's work folder.",
    )
    cache_views: int = Field(
        2,
        ge=0,
        description="Augmented views of each training image when the encoder is frozen and embeddings are "
        "cached: epoch e augments an image as in epoch (e mod cache_views), so from epoch cache_views on "
        "every encoder input repeats and comes from the cache (prompts still change every epoch). "
        "0: a fresh view every epoch (the cache then hits only without augmentation).",
    )
    view_records: bool = Field(
        True,
        description="With cached views (cache_views > 0, encoder frozen): in the first cache_views epochs the "
        "DataLoader workers record each augmented view's masks and boxes (RLE, under the teacher's cache "
        "folder, removed when training ends); from epoch cache_views on, a view whose embedding is cached "
        "is rebuilt from its record without reading, augmenting or resizing the image (the same targets and "
        "prompts). false: every view is read and augmented again.",
    )
    encoder_batch_size: int = Field(
        8,
        ge=1,
        description="Images per image-encoder call when the encoder is frozen (mode=frozen_encoder): a larger "
        "training batch is encoded this many images at a time, so the batch (the mask decoder's, images x "
        "max_instances prompts per step; with --batch-size auto the largest that fits) is not bounded by "
        "one encoder pass over all of it. Embeddings equal one call's up to float rounding.",
    )
    cache_memory_mb: int = Field(
        2048, ge=1, description="Upper bound of the 'memory' or 'device' embedding cache; least recently used "
        "go first."
    )
    loss_resolution: Literal["input", "low_res"] = Field(
        "input",
        description="Where predicted and true masks are compared: 'input' upsamples the decoder's logits to "
        "the model input (as inference does); 'low_res' compares at the decoder's 4x-embedding size against "
        "area-averaged targets (less memory).",
    )
    loss_kernel: Literal["auto", "torch"] = Field(
        "auto",
        description="How the mask loss's per-pixel sums are computed: 'auto' fuses them into one Triton kernel "
        "per pass on CUDA (the same values up to float rounding; PyTorch operations elsewhere), 'torch' always "
        "uses PyTorch operations.",
    )
    focal_weight: float = Field(20.0, ge=0, description="Weight of the focal loss (SAM paper: 20).")
    dice_weight: float = Field(1.0, ge=0, description="Weight of the dice loss (SAM paper: 1).")
    iou_weight: float = Field(1.0, ge=0, description="Weight of the IoU-prediction MSE (SAM paper: 1).")
    focal_alpha: float = Field(0.25, ge=0, le=1, description="Focal loss alpha (weight of the positive class).")
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss gamma (down-weights easy pixels).")
    seed: int = Field(
        0,
        description="Prompt/instance sampling seed used when a sample carries no extra.seed from the trainer; "
        "also seeds the tiny preset's random weights.",
    )
