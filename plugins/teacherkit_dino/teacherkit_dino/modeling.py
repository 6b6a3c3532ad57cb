"""Building the Grounding DINO module: the tiny preset, local/cached checkpoints, LoRA.

Imported lazily (it imports torch and transformers at module level); ``plugin.py``
reaches it only inside hook functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GroundingDinoForObjectDetection

from teacherkit.errors import TeacherkitError
from teacherkit_dino.config import DEFAULT_LORA_TARGETS, GroundingDinoConfig, TinyArchitecture
from teacherkit_dino.convert import check_base as check_base  # re-exported for callers of modeling
from teacherkit_dino.convert import pretrained_folder

log = logging.getLogger(__name__)

#: ImageNet statistics, what Grounding DINO's processor uses; the tiny preset keeps them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BASE_MARKER = "teacherkit_base.json"


class ModelLoadError(TeacherkitError):
    """The base checkpoint cannot be found or is not a Grounding DINO model."""


#: Where Grounding DINO's input (word) embeddings are; transformers 5 raises
#: ``NotImplementedError`` from ``get_input_embeddings`` on this model, which peft calls
#: (see :func:`teacherkit.adapters.point_input_embeddings`).
TEXT_EMBEDDINGS = "model.text_backbone.embeddings.word_embeddings"


class TeacherGroundingDino(GroundingDinoForObjectDetection):
    """Kept for code written against earlier versions: ``GroundingDinoForObjectDetection``
    whose ``get_input_embeddings`` answers. The plugin itself builds transformers' class
    and points the embeddings per instance (:func:`teacherkit.adapters.point_input_embeddings`)."""

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.get_submodule(TEXT_EMBEDDINGS)

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.model.text_backbone.embeddings.word_embeddings = value


@dataclass
class LoadedBase:
    """A base model with what is needed to feed it."""

    model: GroundingDinoForObjectDetection
    tokenizer: Any
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    source: str = "tiny"
    extra: dict[str, Any] = field(default_factory=dict)


# -- tiny preset ----------------------------------------------------------------------------


def tiny_model_config(arch: TinyArchitecture, vocab_size: int, max_text_len: int) -> Any:
    """A small ``GroundingDinoConfig``: same architecture, a few hundred thousand weights."""
    from transformers import BertConfig, SwinConfig
    from transformers import GroundingDinoConfig as HFGroundingDinoConfig

    dim = arch.swin_embed_dim
    backbone = SwinConfig(
        embed_dim=dim,
        depths=[1, 1, 1, 1],
        num_heads=[max(1, dim // 16), max(1, dim // 8), max(1, dim // 8), max(1, dim // 4)],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=arch.text_hidden,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=max(1, arch.text_hidden // 16),
        intermediate_size=2 * arch.text_hidden,
        max_position_embeddings=max(512, max_text_len),
    )
    return HFGroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=arch.d_model,
        encoder_layers=arch.encoder_layers,
        decoder_layers=arch.decoder_layers,
        encoder_ffn_dim=arch.ffn_dim,
        decoder_ffn_dim=arch.ffn_dim,
        encoder_attention_heads=arch.heads,
        decoder_attention_heads=arch.heads,
        num_queries=arch.num_queries,
        encoder_n_points=arch.n_points,
        decoder_n_points=arch.n_points,
        max_text_len=max_text_len,
        # A random base has nothing to protect from over-fitting; regularisers only slow the trial run.
        dropout=0.0,
        fusion_droppath=0.0,
        architectures=["GroundingDinoForObjectDetection"],
    )


def build_tiny_base(class_names: list[str], arch: TinyArchitecture, max_text_len: int) -> LoadedBase:
    """Random weights from a fixed seed: the same classes and sizes give the same base."""
    from teacherkit_dino.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(class_names)
    config = tiny_model_config(arch, vocab_size=len(tokenizer), max_text_len=max_text_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        model = GroundingDinoForObjectDetection(config)
    return LoadedBase(model=model, tokenizer=tokenizer, source="tiny", extra={"class_names": list(class_names)})


def save_base(base: LoadedBase, directory: Path) -> None:
    """Write model, tokenizer and image-processor settings so ``load_pretrained`` reloads it."""
    from transformers import GroundingDinoImageProcessor

    from teacherkit.atomic import atomic_write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base.model.config.architectures = ["GroundingDinoForObjectDetection"]
    base.model.save_pretrained(directory)
    base.tokenizer.save_pretrained(directory)
    GroundingDinoImageProcessor(image_mean=list(base.image_mean), image_std=list(base.image_std)).save_pretrained(
        directory
    )
    atomic_write_json(directory / BASE_MARKER, {"preset": base.source, **base.extra}, indent=2)


# -- checkpoints ----------------------------------------------------------------------------


def _not_found(base: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"teachers.grounding_dino.base = {base!r}: {why}. teacherkit never downloads weights while training. "
        f"On a machine with internet run `hf download IDEA-Research/grounding-dino-tiny` (fills the local "
        f"Hugging Face cache, then this id works offline) or `hf download IDEA-Research/grounding-dino-tiny "
        f"--local-dir ./grounding-dino-tiny` and set teachers.grounding_dino.base to that folder; or try the "
        f"pipeline with --preset tiny (random weights)."
    )


def load_pretrained(base: str, folder: Path | None = None) -> LoadedBase:
    """``from_pretrained`` of ``folder`` (found by :func:`teacherkit_dino.convert.check_base`),
    or, without it, of ``base`` as a local directory or a hub id already in the local cache.
    ``base`` is what the user named; it is recorded as the source."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    path = Path(folder if folder is not None else base).expanduser()
    looks_like_path = path.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1
    if looks_like_path and not path.is_dir():
        raise _not_found(base, "no such directory")
    where = str(path) if path.is_dir() else base
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found(base, "not a local directory and not in the local Hugging Face cache") from exc
    if getattr(config, "model_type", None) != "grounding-dino":
        raise ModelLoadError(
            f"teachers.grounding_dino.base = {base!r} is a {config.model_type!r} model, not Grounding DINO"
        )
    try:
        model = GroundingDinoForObjectDetection.from_pretrained(where, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found(base, f"its weights or tokenizer are missing ({exc})") from exc
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        processor = AutoImageProcessor.from_pretrained(where, local_files_only=True)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, AttributeError):
        log.warning("%s has no image processor config; normalising with ImageNet mean/std", base)
    extra: dict[str, Any] = {}
    marker = path / BASE_MARKER if path.is_dir() else None
    if marker is not None and marker.is_file():
        import json

        extra = json.loads(marker.read_text(encoding="utf-8"))
    return LoadedBase(model=model, tokenizer=tokenizer, image_mean=mean, image_std=std, source=base, extra=extra)


def load_base(config: GroundingDinoConfig, class_names: list[str]) -> LoadedBase:
    """The base ``config.base`` names: the random ``tiny`` build, or the pretrained model
    found by :func:`check_base` (a folder, a snapshot of the local Hugging Face cache)."""
    if config.base == "tiny":
        return build_tiny_base(class_names, config.tiny, config.max_text_len)
    return load_pretrained(config.base, folder=pretrained_folder(config))  # a .pth converts once, cached


# -- fine-tuning modes -----------------------------------------------------------------------


def box_head_parameters(model: GroundingDinoForObjectDetection) -> dict[str, torch.nn.Parameter]:
    """The per-layer box heads ``bbox_embed`` (tied to the decoder's refinement copy), by
    their plain names (``bbox_embed.0.layers.0.weight``); under LoRA, the trained copies
    inside peft's ``modules_to_save`` wrappers.

    The two-stage proposal head (``model.encoder_output_bbox_embed``) is left out on
    purpose: transformers detaches the proposals before the loss sees them, so it
    never receives a gradient.
    """
    heads = {}
    for name, param in model.bbox_embed.named_parameters(prefix="bbox_embed"):
        if ".original_module." in name:
            continue
        heads[name.replace(".modules_to_save.default.", ".")] = param
    return heads


def box_head_modules(model: GroundingDinoForObjectDetection) -> list[str]:
    """peft ``modules_to_save`` names of the box head: one per decoder layer (they are one
    shared module in the base model, kept one by :func:`teacherkit.adapters.retie_modules_to_save`).
    A name ``bbox_embed.N`` matches both the head and the decoder's tied copy
    (``model.decoder.bbox_embed.N``); peft refuses ``bbox_embed`` itself (a ``ModuleList``
    it cannot wrap), and naming only the decoder's copy would leave the head the final
    boxes come from at its base weights."""
    return [f"bbox_embed.{i}" for i in range(len(model.bbox_embed))]


def modules_to_save(model: GroundingDinoForObjectDetection, config: GroundingDinoConfig) -> list[str]:
    """Everything LoRA mode trains fully, so that it is saved inside the peft adapter."""
    names = box_head_modules(model) if config.train_box_head else []
    if not config.freeze_backbone:
        names.append("model.backbone")
    if not config.freeze_text_encoder:
        names.append("model.text_backbone")
    return names


def apply_finetune(model: GroundingDinoForObjectDetection, config: GroundingDinoConfig) -> torch.nn.Module:
    """Make the right parameters trainable: everything (``full``) or peft LoRA adapters,
    plus the box head and unfrozen parts as configured (peft ``modules_to_save``).
    Returns the module to train."""
    if config.finetune == "full":
        model.requires_grad_(True)
        # Swin's final layer norm is not on Grounding DINO's path (it reads the stage outputs);
        # left trainable it would never get a gradient and DDP would wait for one.
        swin = getattr(getattr(model.model.backbone.conv_encoder, "model", None), "swin", None)
        if swin is not None and hasattr(swin, "layernorm"):
            swin.layernorm.requires_grad_(False)
        return model
    from teacherkit.adapters import wrap_with_lora

    peft_model = wrap_with_lora(
        model, config.lora, target_modules=config.lora.target_modules or DEFAULT_LORA_TARGETS,
        modules_to_save=modules_to_save(model, config), input_embeddings=TEXT_EMBEDDINGS,
        where="teachers.grounding_dino.lora.target_modules",
    )
    return peft_model


def parameter_groups(module: torch.nn.Module) -> dict[str, int]:
    """Trainable parameter counts by group, for the parameter report."""
    groups = {"lora": 0, "box_head": 0, "backbone": 0, "text_encoder": 0, "other": 0}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_" in name:
            key = "lora"
        elif "bbox_embed" in name:
            key = "box_head"
        elif ".backbone." in f".{name}":
            key = "backbone"
        elif "text_backbone" in name:
            key = "text_encoder"
        else:
            key = "other"
        groups[key] += param.numel()
    return {k: v for k, v in groups.items() if v}
