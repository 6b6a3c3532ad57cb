"""The frozen parts of a LoRA-tuned Grounding DINO stored and run in bfloat16.

Under bf16 autocast, a frozen float32 layer still costs a cast: autocast runs layer norms,
softmaxes and sums in float32 and casts every input of every matrix product to bf16, so
the image backbone, text encoder and encoder pass their activations back and forth between
the two types layer after layer (a quarter of the GPU time of teacherkit's step is such
copies on an H200; docs/performance.md). With ``teachers.grounding_dino.frozen_precision:
bf16``, :func:`install` stores those parts' weights in bf16 and runs them with autocast
off on their bf16 inputs, so nothing inside them is cast. Their outputs enter the rest of
the model as bf16 under autocast (which takes them as they are), or as float32 when no
autocast is on.

The features the decoder trains on are then computed in bf16 throughout, not float32 with
bf16 matrix products: a different rounding, whose effect on a teacher's quality is not
measured yet. Only parts with no trainable parameter are switched (a part LoRA or
``freeze_*: false`` trains keeps its float32 weights and autocast).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.utils import ModelOutput

#: The parts of ``GroundingDinoModel`` this applies to, when frozen.
PARTS = ("backbone", "text_backbone", "encoder")


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating tensors in ``dtype`` (tuples, lists, dicts and model
    outputs walked; anything else as it is)."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, ModelOutput):
        for key in list(value.keys()):
            value[key] = _cast(value[key], dtype)
        return value
    if isinstance(value, tuple):
        return tuple(_cast(item, dtype) for item in value)
    if isinstance(value, list):
        return [_cast(item, dtype) for item in value]
    if isinstance(value, dict):
        return {key: _cast(item, dtype) for key, item in value.items()}
    return value


class _Bf16Forward:
    """The forward :func:`install` puts on a frozen part: inputs to bf16, autocast off,
    outputs as the caller's context expects them."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.original = module.forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        device_type = next(self.original.__self__.parameters()).device.type  # the module may have moved
        outer = torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type=device_type, enabled=False):
            out = self.original(*_cast(args, torch.bfloat16), **_cast(kwargs, torch.bfloat16))
        return out if outer else _cast(out, torch.float32)


def install(model: torch.nn.Module) -> list[str]:
    """Store the frozen :data:`PARTS` of ``model`` (a ``GroundingDinoForObjectDetection``)
    in bf16 and run them without autocast. Returns the names of the parts switched."""
    switched = []
    for name in PARTS:
        part = getattr(model.model, name)
        if any(p.requires_grad for p in part.parameters()) or isinstance(part.__dict__.get("forward"), _Bf16Forward):
            continue
        part.to(torch.bfloat16)
        part.forward = _Bf16Forward(part)
        switched.append(name)
    return switched


def installed(model: torch.nn.Module) -> list[str]:
    """The parts of ``model`` that run in bf16 (for tests and reports)."""
    return [name for name in PARTS if isinstance(getattr(model.model, name).__dict__.get("forward"), _Bf16Forward)]
