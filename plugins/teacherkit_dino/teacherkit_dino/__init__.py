"""Grounding DINO teacher for teacherkit: boxes, open-vocabulary prompts, LoRA."""

__version__ = "0.1.0"
