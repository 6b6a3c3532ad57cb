"""Meta's original SAM checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``) as transformers ``SamModel`` folders.

The key mapping is written from the module structure of the original code
(``segment_anything/modeling``): ``Sam`` holds ``image_encoder`` (``ImageEncoderViT``:
``patch_embed.proj``, ``pos_embed``, ``blocks[i]`` with ``norm1``/``attn``/``norm2``/``mlp``,
and a ``neck`` ``Sequential`` of conv, LayerNorm2d, conv, LayerNorm2d), ``prompt_encoder``
(``pe_layer``, ``point_embeddings``, ``not_a_point_embed``, the ``mask_downscaling``
``Sequential`` and ``no_mask_embed``) and ``mask_decoder`` (a ``TwoWayTransformer`` whose
layers number their norms ``norm1..4``, the ``output_upscaling`` ``Sequential``, and ``MLP``
heads holding all their linears in one ``layers`` list). transformers names the same
tensors differently; nothing else changes (no transposes, no splits).

The variant is read from the tensors themselves: width from ``pos_embed``, depth from the
block count, head width from the relative-position tables, and which blocks attend
globally from the length of those tables (``2 * 14 - 1`` for a 14-wide window, ``2 * 64 - 1``
for the whole 64x64 grid).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacherkit.convert import CheckpointConverter
from teacherkit.errors import TeacherkitError

#: Widths of Meta's three released image encoders.
VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
#: The transformers hub id of each variant, written into the converted config for reference.
HUB_IDS = {"vit_b": "facebook/sam-vit-base", "vit_l": "facebook/sam-vit-large", "vit_h": "facebook/sam-vit-huge"}

# Positional renames inside ``nn.Sequential`` containers, by container.
_NECK = {"0": "conv1", "1": "layer_norm1", "2": "conv2", "3": "layer_norm2"}
_MASK_DOWNSCALING = {"0": "conv1", "1": "layer_norm1", "3": "conv2", "4": "layer_norm2", "6": "conv3"}
_UPSCALING = {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}
#: (original container, transformers prefix, index → name)
_SEQUENTIALS = (
    ("image_encoder.neck", "image_encoder.neck.", _NECK),
    ("prompt_encoder.mask_downscaling", "prompt_encoder.mask_embed.", _MASK_DOWNSCALING),
    ("mask_decoder.output_upscaling", "mask_decoder.", _UPSCALING),
)


class SamConvertError(TeacherkitError):
    """The file is not an original SAM checkpoint, or its tensors do not map one to one."""


@dataclass(frozen=True)
class SamVariant:
    """The architecture an original checkpoint was built with."""

    name: str
    hidden_size: int
    depth: int
    heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int
    patch_size: int


def looks_like_sam(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` has the top-level modules of Meta's ``Sam``."""
    return "image_encoder.pos_embed" in state_dict and any(k.startswith("mask_decoder.") for k in state_dict)


def detect_variant(state_dict: Mapping[str, Any], where: str = "checkpoint") -> SamVariant:
    """Read the encoder's architecture from tensor shapes (see the module docstring)."""
    if not looks_like_sam(state_dict):
        raise SamConvertError(f"{where}: not an original SAM checkpoint (no image_encoder.pos_embed / mask_decoder.*)")
    pos = tuple(state_dict["image_encoder.pos_embed"].shape)  # (1, grid, grid, width)
    grid, width = pos[1], pos[3]
    patch = int(state_dict["image_encoder.patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)))
    head_dim = int(state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    global_blocks = tuple(
        i for i in range(depth) if state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 2 * grid - 1
    )
    return SamVariant(
        name=VARIANTS.get(width, f"vit_{width}"), hidden_size=width, depth=depth, heads=width // head_dim,
        global_attn_indexes=global_blocks, image_size=grid * patch, patch_size=patch,
    )


def window_size(state_dict: Mapping[str, Any], variant: SamVariant) -> int:
    """The local attention window, from a windowed block's relative-position table."""
    for i in range(variant.depth):
        if i not in variant.global_attn_indexes:
            return (int(state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2
    return 14


def hf_config(variant: SamVariant, window: int = 14) -> Any:
    """The ``transformers.SamConfig`` of ``variant``. The prompt encoder and mask decoder
    have the same sizes in all released checkpoints; only the grid they address follows
    the encoder (input size / patch size)."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=variant.hidden_size, num_hidden_layers=variant.depth, num_attention_heads=variant.heads,
        global_attn_indexes=list(variant.global_attn_indexes), image_size=variant.image_size,
        patch_size=variant.patch_size, window_size=window, mlp_dim=4 * variant.hidden_size,
    )
    prompt = SamPromptEncoderConfig(image_size=variant.image_size, patch_size=variant.patch_size)
    # the original two-way transformer's LayerNorms use PyTorch's default eps (1e-5), not the
    # 1e-6 transformers' config defaults to; the weights were trained with 1e-5
    decoder = SamMaskDecoderConfig(layer_norm_eps=1e-5)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    config.architectures = ["SamModel"]
    return config


def _mlp_rename(prefix: str, rest: str, num_layers: int) -> str:
    """``MLP.layers[i]`` → transformers' ``proj_in`` / ``layers[i-1]`` / ``proj_out``."""
    index, tail = rest.split(".", 1)
    i = int(index)
    if i == 0:
        return f"{prefix}.proj_in.{tail}"
    if i == num_layers - 1:
        return f"{prefix}.proj_out.{tail}"
    return f"{prefix}.layers.{i - 1}.{tail}"


def _mlp_depths(state_dict: Mapping[str, Any]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for key in state_dict:
        m = re.match(r"(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.", key)
        if m:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    return depths


def rename_key(key: str, mlp_depths: Mapping[str, int]) -> list[str]:
    """The transformers name(s) of one original key; the prompt encoder's Fourier matrix
    is shared with the model's image positional embedding, so it has two."""
    if key == "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
        return ["shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding"]
    new = key
    for container, target, names in _SEQUENTIALS:
        m = re.match(rf"{re.escape(container)}\.(\d+)\.(.*)", new)
        if m and m.group(1) in names:
            new = f"{target}{names[m.group(1)]}.{m.group(2)}"
    for head, depth in mlp_depths.items():
        if new.startswith(head + ".layers."):
            new = _mlp_rename(head, new[len(head) + len(".layers."):], depth)
    new = re.sub(r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"image_encoder.blocks.\1.layer_norm\2.", new)
    new = re.sub(r"^image_encoder\.blocks\.", "image_encoder.layers.", new)
    new = new.replace("image_encoder.patch_embed.proj.", "image_encoder.patch_embed.projection.")
    new = re.sub(r"^image_encoder\.", "vision_encoder.", new)
    new = re.sub(r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed.", new)
    new = re.sub(r"(mask_decoder\.transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2.", new)
    new = new.replace("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn.")
    return [new]


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename every tensor of an original checkpoint to transformers' ``SamModel`` names."""
    depths = _mlp_depths(state_dict)
    out: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        for new in rename_key(key, depths):
            out[new] = tensor
    return out


def check_mapping(converted: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Every expected tensor is there with its shape and nothing is left over; else one
    error listing the first differences."""
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(expected[k].shape) != tuple(converted[k].shape))
    if missing or extra or wrong:
        parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys]
        raise SamConvertError(f"{where}: the SAM conversion does not map one to one ({'; '.join(parts)})")


def load_original(path: Path) -> dict[str, Any]:
    """The tensors of an original ``.pth`` (``weights_only``: a checkpoint runs no code),
    memory-mapped where the file format allows."""
    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise SamConvertError(f"{path}: cannot read as a PyTorch checkpoint ({exc})") from exc
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise SamConvertError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return dict(data)


def convert_sam_checkpoint(checkpoint: Path, output: Path) -> str:
    """Write ``output`` (which must not exist or be empty; callers make it atomic) as a
    ``SamModel.from_pretrained`` folder with a ``SamProcessor``. Returns the variant name."""
    import torch
    from transformers import SamModel

    from teacherkit_sam.loading import ImageSettings, make_processor

    checkpoint, output = Path(checkpoint), Path(output)
    state_dict = load_original(checkpoint)
    variant = detect_variant(state_dict, str(checkpoint))
    config = hf_config(variant, window_size(state_dict, variant))
    converted = convert_state_dict(state_dict)
    with torch.device("meta"):
        model = SamModel(config)
    check_mapping(converted, model.state_dict(), str(checkpoint))
    # assign=True takes the tensors as they are: no random init, no copy of a 2.5 GB model
    model.load_state_dict({k: v.contiguous() for k, v in converted.items()}, strict=True, assign=True)
    model.tie_weights()
    model.save_pretrained(output)
    make_processor(ImageSettings(size=variant.image_size)).save_pretrained(output)
    return variant.name


#: What this plugin contributes to ``teacherkit convert`` and to ``.pth`` bases.
CONVERTER = CheckpointConverter(
    teacher="sam",
    formats="Meta's segment-anything checkpoints sam_vit_b/l/h (*.pth)",
    read=load_original,
    claims=looks_like_sam,
    convert=convert_sam_checkpoint,
)
