"""Running out of device memory: one message that says what to try.

A CUDA out-of-memory error deep inside a forward pass is a wall of allocator statistics;
what a user needs is the teacher, the batch size, how much memory was in use and the
changes that lower it, cheapest first. :func:`out_of_memory_error` builds that message;
:func:`training_advice` takes the steps from the teacher's own config (only keys it has
are suggested). Training (:mod:`teacherkit.training.trainer`) and labelling
(:mod:`teacherkit.inference.label`) both use it, so it sits below both.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import gc
import typing
from pathlib import Path
from typing import Any

from teacherkit.errors import EXIT_USAGE, TeacherkitError

#: Messages of allocation failures that are not ``torch.cuda.OutOfMemoryError`` (older
#: torch, other backends, the CPU allocator).
OOM_MARKERS = ("out of memory", "can't allocate memory")


class OutOfMemory(TeacherkitError):
    """The device ran out of memory; the message says what to try, in order."""

    exit_code = EXIT_USAGE


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (``torch.cuda.OutOfMemoryError`` or a
    ``RuntimeError`` saying "out of memory")."""
    import sys

    torch = sys.modules.get("torch")  # no torch loaded: nothing could have allocated on a device
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in OOM_MARKERS)


def memory_in_use(device: Any) -> str | None:
    """``"peak 75.1 GiB allocated of 79.2 GiB on cuda:0"``; the peak resident memory of the
    process on the CPU; ``None`` when it cannot be read."""
    try:
        if getattr(device, "type", "cpu") == "cuda":
            import torch

            peak = torch.cuda.max_memory_allocated(device) / 2**30
            total = torch.cuda.get_device_properties(device).total_memory / 2**30
            return f"peak {peak:.1f} GiB allocated of {total:.1f} GiB on {device}"
        import resource

        return f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB resident on the CPU"
    except Exception:  # the message matters more than the figure
        return None


def _allows(tcfg: Any, key: str, value: str) -> bool:
    """Whether the teacher's config has ``key`` and ``value`` is one of its choices."""
    field_info = type(tcfg).model_fields.get(key)
    return field_info is not None and value in typing.get_args(field_info.annotation)


def training_advice(name: str, tcfg: Any, batch_size: int) -> list[str]:
    """What lowers a teacher's training memory, cheapest first, from the keys its config has."""
    steps = []
    if batch_size > 1:
        steps.append(f"a smaller batch: --batch-size {max(1, batch_size // 2)} (or --batch-size auto to find the "
                     f"largest that fits)")
    frozen = getattr(tcfg, "mode", None) == "frozen_encoder"
    if getattr(tcfg, "gradient_checkpointing", True) is False and not frozen:
        steps.append(f"gradient checkpointing: --set teachers.{name}.gradient_checkpointing=true")
    if _allows(tcfg, "mode", "frozen_encoder") and not frozen:
        steps.append(f"a frozen image encoder: --set teachers.{name}.mode=frozen_encoder")
    for key, what in (("freeze_backbone", "image backbone"), ("freeze_text_encoder", "text encoder")):
        if getattr(tcfg, key, True) is False:
            steps.append(f"a frozen {what}: --set teachers.{name}.{key}=true")
    if getattr(tcfg, "finetune", None) == "full":
        steps.append(f"LoRA instead of full fine-tuning: --set teachers.{name}.finetune=lora")
    elif getattr(tcfg, "finetune", None) == "lora" and getattr(getattr(tcfg, "lora", None), "r", 1) > 1:
        steps.append(f"a smaller LoRA rank: --lora-r {max(1, tcfg.lora.r // 2)}")
    return steps


def labelling_advice(batch_size: int, has_masks: bool) -> list[str]:
    """What lowers the memory of ``teacherkit label``, cheapest first."""
    steps = [f"a smaller batch: --batch-size {max(1, batch_size // 2)}"] if batch_size > 1 else []
    if has_masks:
        steps.append("fewer boxes per image for SAM to segment: a higher --box-threshold (it changes the labels, "
                     "so it needs a fresh run rather than --resume)")
    steps.append("--device cpu (slow, but bounded by the machine's memory)")
    return steps


def out_of_memory_error(name: str, batch_size: int, device: Any, *, doing: str, advice: list[str],
                        kept: str) -> OutOfMemory:
    """The one message of an out-of-memory stop: the teacher, what it was doing, the batch
    size, the memory in use, what to try in order and what was kept."""
    memory = memory_in_use(device)
    lines = [f"{name} ran out of memory on {device} while {doing} at batch size {batch_size}"
             + (f" ({memory})" if memory else "") + (". Try, in this order:" if advice else ".")]
    lines.extend(f"  {i}. {step}" for i, step in enumerate(advice, start=1))
    lines.append(kept)
    return OutOfMemory("\n".join(lines))


def release_memory(device: Any) -> None:
    """Give what a failed try allocated back to the device (the caching allocator keeps it)."""
    gc.collect()
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.empty_cache()


def kept_checkpoint(last: Path) -> str:
    """What an out-of-memory stop leaves of the run (read from ``last/meta.json``), and how
    to go on."""
    import json

    try:
        epoch = int(json.loads((last / "meta.json").read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        epoch = None
    if not epoch:  # absent, unreadable, or epoch 0: the base model's evaluation, nothing trained
        return "No training epoch had finished, so there is no trained checkpoint; run again with the changes above."
    return (f"The checkpoint of epoch {epoch} is kept in {last}; --resume continues with the saved settings, so "
            f"start a new --output to train with the changes above.")
