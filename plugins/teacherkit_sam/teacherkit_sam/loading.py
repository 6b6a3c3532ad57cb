"""Building SAM: the base model (tiny preset or local weights) and its fine-tuning
set-up (LoRA through peft, decoder-only, or full).

Nothing is ever downloaded: pretrained bases load with ``local_files_only=True``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.errors import TeacherkitError
from teacherkit_sam.preprocess import SAM_MEAN, SAM_STD

log = logging.getLogger(__name__)

#: LoRA's default targets: the image encoder's fused attention projection, and the
#: mask decoder's attention projections when the decoder trains through LoRA.
ENCODER_TARGETS = ("qkv",)
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


class SamLoadError(TeacherkitError):
    """The SAM base cannot be loaded (missing locally, wrong size); the message says what to do."""


@dataclass
class ImageSettings:
    """What preprocessing needs from the base: input size and normalisation."""

    size: int
    mean: tuple[float, float, float] = SAM_MEAN
    std: tuple[float, float, float] = SAM_STD


def tiny_sam_config(image_size: int = 128) -> Any:
    """A small :class:`transformers.SamConfig`: the real SAM architecture (windowed and
    global ViT attention, prompt encoder, two-way mask decoder) at a width of 32.
    Patch 8 keeps a 16x16 embedding grid at 128 px, so the decoder's masks are 64².
    """
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    if image_size % 8:
        raise SamLoadError(f"teachers.sam.image_size={image_size}: the tiny preset needs a multiple of 8")
    grid = image_size // 8
    vision = SamVisionConfig(
        hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
        patch_size=8, window_size=min(4, grid), global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64,
        # the library default (1e-10, meant to be overwritten by pretrained weights) would make a
        # random encoder output zeros, leaving nothing for the decoder to learn from
        initializer_range=0.02,
    )
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=8, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def load_base(config: Any) -> tuple[Any, ImageSettings]:
    """The base ``SamModel`` named by ``config.base`` and its image settings, with the
    image-encoder attention set by ``config.attention`` (see :func:`set_attention`)."""
    model, settings = _load_base(config)
    set_attention(model, getattr(config, "attention", "folded"))
    return model, settings


def set_attention(model: Any, mode: str) -> int:
    """Apply ``teachers.sam.attention`` to a built ``SamModel`` (or its peft wrapper):
    ``folded`` switches the image encoder's attention modules to
    :class:`teacherkit_sam.attention.FoldedSamVisionAttention` (only their class changes,
    so state-dict keys, adapters and exports stay as they are); ``sdpa``/``eager`` leave
    transformers' classes (``eager`` must also be chosen when the model is built, which
    :func:`load_base` does). Returns the number of modules switched."""
    from teacherkit_sam.attention import apply_attention

    switched = apply_attention(model, mode)
    if switched:
        log.debug("sam image encoder: %d attention modules switched for attention=%s", switched, mode)
    return switched


def _load_base(config: Any) -> tuple[Any, ImageSettings]:
    import torch

    eager = getattr(config, "attention", "folded") == "eager"
    if config.base == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            from transformers import SamModel

            hf_config = tiny_sam_config(config.image_size)
            if eager:
                hf_config._attn_implementation = "eager"
            model = SamModel(hf_config)
            # transformers draws the random Fourier position features with std hidden_size // 2,
            # meant to be overwritten by a checkpoint; on the tiny 16x16 grid those frequencies
            # alias and box prompts cannot be located (mIoU stalls near the box-filling level).
            # The original SAM draws them with std 1, which learns (examples/pretrain_tiny.py).
            torch.nn.init.normal_(model.shared_image_embedding.positional_embedding, std=1.0)
        return model, ImageSettings(size=config.image_size)
    return _load_pretrained(config)


def check_base(config: Any) -> Any:
    """Find ``teachers.sam.base`` without loading a model (a cheap check the trainer makes
    before anything else) and check the input size it takes against ``image_size``.
    Returns a :class:`teacherkit.convert.BaseLocation` (``.random_weights`` is true for
    ``tiny``); raises :class:`SamLoadError` naming the model, where it looked, and how to
    provide it."""
    from teacherkit.convert import BaseNotFoundError, find_base
    from teacherkit_sam.config import DEFAULT_BASE, NAMED_BASES

    try:
        location = find_base(config.base, key="teachers.sam.base", default=DEFAULT_BASE, named=NAMED_BASES,
                             checkpoints="an original sam_vit_b/l/h checkpoint")
    except BaseNotFoundError as exc:
        raise SamLoadError(str(exc)) from None
    size = None
    if location.kind == "checkpoint":
        from teacherkit_sam.convert import CONVERTER, detect_variant

        state_dict = CONVERTER.read(location.path)  # memory-mapped: shapes only
        size = detect_variant(state_dict, f"teachers.sam.base = {config.base!r}").image_size
    elif location.kind in ("folder", "cache"):
        size = _configured_image_size(location.path / "config.json")
    if size is not None and size != config.image_size:
        raise SamLoadError(
            f"teachers.sam.image_size={config.image_size} but the model at {config.base!r} takes {size} px "
            f"inputs; set teachers.sam.image_size={size}"
        )
    return location


def _configured_image_size(config_json: Path) -> int | None:
    import json

    try:
        data = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SamLoadError(f"{config_json}: unreadable model config ({exc})") from exc
    if data.get("model_type") not in (None, "sam"):
        raise SamLoadError(f"{config_json}: a {data.get('model_type')!r} model, not SAM")
    return int((data.get("vision_config") or {}).get("image_size", 1024))


def pretrained_folder(config: Any) -> Path:
    """The folder ``from_pretrained`` reads for ``config.base``: the folder itself, the
    cached snapshot, or the teacherkit cache's conversion of an original ``.pth`` (made
    the first time, see :func:`teacherkit.convert.converted_checkpoint`)."""
    location = check_base(config)
    if location.kind == "checkpoint":
        from teacherkit.convert import converted_checkpoint
        from teacherkit_sam.convert import CONVERTER

        log.info("using the conversion of %s (converted once, kept in the teacherkit cache)", location.path)
        return converted_checkpoint(location.path, CONVERTER)
    assert location.path is not None  # tiny never reaches here
    return location.path


def _load_pretrained(config: Any) -> tuple[Any, ImageSettings]:
    from transformers import SamModel, SamProcessor

    source = str(pretrained_folder(config))
    try:
        extra = {"attn_implementation": "eager"} if getattr(config, "attention", "folded") == "eager" else {}
        model = SamModel.from_pretrained(source, local_files_only=True, **extra)
    except (OSError, ValueError) as exc:
        raise SamLoadError(f"teachers.sam.base={config.base!r}: {source} does not load as a SAM model ({exc})") from exc
    model_size = int(model.config.vision_config.image_size)
    if config.image_size != model_size:
        raise SamLoadError(
            f"teachers.sam.image_size={config.image_size} but the model at {config.base!r} takes {model_size} px "
            f"inputs; set teachers.sam.image_size={model_size}"
        )
    settings = ImageSettings(size=model_size)
    try:
        processor = SamProcessor.from_pretrained(source, local_files_only=True)
        image_processor = processor.image_processor
        settings.mean = tuple(float(v) for v in image_processor.image_mean)
        settings.std = tuple(float(v) for v in image_processor.image_std)
    except (OSError, ValueError):
        log.warning("%s has no SamProcessor config; using SAM's standard normalisation", config.base)
    return model, settings


def make_processor(settings: ImageSettings) -> Any:
    """A ``SamProcessor`` matching our preprocessing, saved next to a tiny base so the
    folder loads like any SAM checkpoint."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    image_processor = SamImageProcessorPil(
        size={"longest_edge": settings.size},
        pad_size={"height": settings.size, "width": settings.size},
        mask_size={"longest_edge": settings.size // 4},
        mask_pad_size={"height": settings.size // 4, "width": settings.size // 4},
        image_mean=list(settings.mean),
        image_std=list(settings.std),
    )
    return SamProcessor(image_processor)


# -- fine-tuning set-up ------------------------------------------------------------------------


def lora_target_pattern(config: Any) -> str | None:
    """The regex (peft full-name match) of the modules LoRA wraps, or ``None`` when the
    set-up has none (decoder-only, full). User ``lora.target_modules`` replace the
    default module names but stay inside the parts the mode lets LoRA touch: never the
    encoder when it is frozen, never a decoder that trains fully."""
    if config.finetune != "lora":
        return None
    custom = config.lora.target_modules
    scopes = []
    if config.mode == "lora":
        scopes.append(("vision_encoder", custom or ENCODER_TARGETS))
    if config.train_decoder == "lora":
        scopes.append(("mask_decoder", custom or DECODER_TARGETS))
    if not scopes:
        return None
    parts = [rf"{scope}\.(?:.*\.)?(?:{'|'.join(re.escape(n) for n in names)})" for scope, names in scopes]
    return "|".join(f"(?:{p})" for p in parts)


def tuning_mode(config: Any) -> str:
    """A name for what trains: ``full``, ``frozen-encoder-full``, ``decoder-only``,
    ``lora`` (encoder LoRA + full decoder), ``lora+decoder-lora``, ``decoder-lora``."""
    if config.finetune == "full":
        return "frozen-encoder-full" if config.mode == "frozen_encoder" else "full"
    if config.mode == "frozen_encoder":
        return "decoder-lora" if config.train_decoder == "lora" else "decoder-only"
    return "lora+decoder-lora" if config.train_decoder == "lora" else "lora"


def apply_finetuning(model: Any, config: Any) -> Any:
    """Freeze/unfreeze and wrap ``model`` for ``config``; returns the module to train."""
    mode = tuning_mode(config)
    for param in model.parameters():
        param.requires_grad = mode in ("full", "frozen-encoder-full")
    if mode == "frozen-encoder-full":
        for param in model.vision_encoder.parameters():
            param.requires_grad = False
        return model
    if mode == "full":
        return model
    if mode == "decoder-only":
        # PEFT cannot express "one module trained fully and no adapter"; train it in place
        for param in model.mask_decoder.parameters():
            param.requires_grad = True
        return model

    from teacherkit.adapters import wrap_with_lora

    part = "image encoder" if config.mode == "lora" else "mask decoder"
    return wrap_with_lora(
        model, config.lora, target_modules=lora_target_pattern(config),
        modules_to_save=["mask_decoder"] if config.train_decoder == "full" else None,
        where=f"teachers.sam.lora.target_modules (no module of the SAM {part} matches)",
    )


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute the image encoder's activations in backward (non-reentrant, so it works
    with frozen inputs and LoRA). ``model`` may be a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # transformers 5 renamed the method (and its keyword); keep working on both spellings
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
