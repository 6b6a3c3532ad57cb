"""Finding Grounding DINO's base before anything loads, and IDEA-Research's original
checkpoints.

Light at import (no torch, no transformers): the trainer calls :func:`check_base` before
it creates anything, and the CLI registers :data:`CONVERTER` at start-up.

IDEA's ``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth`` are
recognised (``teacherkit convert`` and a ``.pth`` base name them) but not converted yet:
the mapping onto transformers' ``GroundingDinoForObjectDetection`` needs the original
model built as a reference to be verified against (``groundingdino-py`` imports
torchvision and timm, which do not import beside this project's torch build, and its
text side needs a local BERT folder), and teacherkit ships no conversion it has not
verified. The error says to use the transformers release of the same weights instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from teacherkit.convert import BaseLocation, BaseNotFoundError, CheckpointConverter, ConvertError, find_base
from teacherkit.errors import TeacherkitError

#: Which released checkpoint a Swin width stands for, and its transformers release.
ORIGINAL_RELEASES = {
    96: ("groundingdino_swint_ogc.pth (Swin-T)", "IDEA-Research/grounding-dino-tiny"),
    128: ("groundingdino_swinb_cogcoor.pth (Swin-B)", "IDEA-Research/grounding-dino-base"),
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class DinoBaseError(TeacherkitError):
    """``teachers.grounding_dino.base`` cannot be used; the message says what to do."""


def check_base(config: Any) -> BaseLocation:
    """Find ``teachers.grounding_dino.base`` without loading a model: ``tiny``, a local
    folder or a cached hub id with a Grounding DINO ``config.json``, weights and a
    tokenizer. An original ``.pth`` is refused with the way to get the same weights.
    Returns the :class:`teacherkit.convert.BaseLocation` (``.random_weights`` is true for
    ``tiny``); raises :class:`DinoBaseError` naming the model, where it looked, and how to
    provide it."""
    from teacherkit_dino.config import DEFAULT_BASE, NAMED_BASES

    key = "teachers.grounding_dino.base"
    try:
        location = find_base(config.base, key=key, default=DEFAULT_BASE, named=NAMED_BASES)
    except BaseNotFoundError as exc:
        raise DinoBaseError(str(exc)) from None
    if location.kind == "checkpoint":
        assert location.path is not None
        state_dict = read_original(location.path)
        if not looks_like_original(state_dict):
            raise DinoBaseError(f"{key} = {config.base!r}: not a Grounding DINO checkpoint")
        raise DinoBaseError(f"{key} = {config.base!r}: {unsupported_message(state_dict)}")
    if location.kind in ("folder", "cache"):
        assert location.path is not None
        _check_folder(location.path, f"{key} = {config.base!r}")
    return location


def _check_folder(folder: Path, where: str) -> None:
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise DinoBaseError(f"{where}: {folder / 'config.json'} is unreadable ({exc})") from exc
    if model_type != "grounding-dino":
        raise DinoBaseError(f"{where}: {folder} is a {model_type!r} model, not Grounding DINO")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DinoBaseError(f"{where}: {folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); save the "
                            "processor or tokenizer into the folder with the model")


# -- IDEA-Research's original checkpoints ---------------------------------------------------


def read_original(path: Path) -> Mapping[str, Any]:
    """The tensors of an original ``.pth`` (``weights_only``, memory-mapped where possible;
    IDEA's files hold them under ``"model"``, names prefixed ``module.`` by DDP)."""
    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise ConvertError(f"{path}: cannot read as a PyTorch checkpoint ({exc})") from exc
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise ConvertError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in data.items()}


def looks_like_original(state_dict: Mapping[str, Any]) -> bool:
    """IDEA's module layout: a Swin ``backbone.0``, a BERT ``bert``, a fusion ``transformer``."""
    keys = list(state_dict)
    return (any(k.startswith("backbone.0.") for k in keys) and any(k.startswith("bert.") for k in keys)
            and any(k.startswith("transformer.") for k in keys))


def original_release(state_dict: Mapping[str, Any]) -> tuple[str, str]:
    """(which original file, the transformers release of it) from the Swin stem's width."""
    stem = state_dict.get("backbone.0.patch_embed.proj.weight")
    width = int(stem.shape[0]) if stem is not None else -1
    return ORIGINAL_RELEASES.get(width, (f"a Grounding DINO checkpoint (Swin width {width})",
                                         "IDEA-Research/grounding-dino-tiny"))


def unsupported_message(state_dict: Mapping[str, Any]) -> str:
    name, repo_id = original_release(state_dict)
    return (f"this is IDEA-Research's original {name}; teacherkit cannot convert Grounding DINO's original "
            f"checkpoints yet (no conversion verified against the original code). The same weights are published "
            f"for transformers as {repo_id}: run `hf download {repo_id} --local-dir DIR` on a machine with internet "
            f"and set teachers.grounding_dino.base=DIR")


def convert_original(checkpoint: Path, output: Path) -> str:
    raise ConvertError(f"{checkpoint}: {unsupported_message(read_original(checkpoint))}")


#: Recognises IDEA's files for ``teacherkit convert`` so the answer names them.
CONVERTER = CheckpointConverter(
    teacher="grounding_dino",
    formats="IDEA-Research groundingdino_swint_ogc.pth / groundingdino_swinb_cogcoor.pth (recognised; not "
    "converted yet)",
    read=read_original,
    claims=looks_like_original,
    convert=convert_original,
)
