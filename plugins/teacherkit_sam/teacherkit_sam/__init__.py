"""SAM teacher for teacherkit: masks from box/point prompts, LoRA, embedding cache."""

__version__ = "0.1.0"
