"""Finding Grounding DINO's base before anything loads, and converting IDEA-Research's
original checkpoints.

Light at import (no torch, no transformers): the trainer calls :func:`check_base` before
it creates anything, and the CLI registers :data:`CONVERTER` at start-up.

IDEA's ``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth`` become
transformers ``GroundingDinoForObjectDetection`` folders (the key mapping is in
:mod:`teacherkit_dino.convert_keys`). Their text encoder is BERT-base (uncased): its weights
are in the checkpoint, its vocabulary is not, so the tokenizer comes from a local BERT
folder (``$TEACHERKIT_BERT``) or BERT in the local Hugging Face cache. ``teacherkit
convert`` without one writes the model and says the tokenizer is missing; a ``.pth``
base needs it before anything starts.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
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
#: The original files, in words (for messages and ``teacherkit convert --help``).
CHECKPOINTS = "IDEA-Research's groundingdino_swint_ogc.pth / groundingdino_swinb_cogcoor.pth"
#: A folder holding BERT's tokenizer (and config) for the original's text encoder.
BERT_ENV = "TEACHERKIT_BERT"
#: Where the original's BERT (``bert-base-uncased``) may sit in the local Hugging Face cache.
BERT_HUB_IDS = ("google-bert/bert-base-uncased", "bert-base-uncased")
#: Token ids the model and its loss find phrases by ([CLS], [SEP], ".", "?"): a vocabulary
#: that gives them other ids is not the one the original was trained with.
BERT_SPECIAL_IDS = {"[CLS]": 101, "[SEP]": 102, ".": 1012, "?": 1029}

log = logging.getLogger(__name__)


class DinoBaseError(TeacherkitError):
    """``teachers.grounding_dino.base`` cannot be used; the message says what to do."""


def check_base(config: Any) -> BaseLocation:
    """Find ``teachers.grounding_dino.base`` without loading a model: ``tiny``, a local
    folder or a cached hub id with a Grounding DINO ``config.json``, weights and a
    tokenizer, or an original ``.pth`` (its tensors read memory-mapped, and a BERT
    vocabulary found, so that the conversion :func:`pretrained_folder` makes cannot fail
    later for want of one). Returns the :class:`teacherkit.convert.BaseLocation`
    (``.random_weights`` is true for ``tiny``); raises :class:`DinoBaseError` naming the
    model, where it looked, and how to provide it."""
    from teacherkit_dino.config import DEFAULT_BASE, NAMED_BASES

    key = "teachers.grounding_dino.base"
    where = f"{key} = {config.base!r}"
    try:
        location = find_base(config.base, key=key, default=DEFAULT_BASE, named=NAMED_BASES, checkpoints=CHECKPOINTS)
    except BaseNotFoundError as exc:
        raise DinoBaseError(str(exc)) from None
    if location.kind == "checkpoint":
        assert location.path is not None
        try:
            state_dict = read_original(location.path)
        except ConvertError as exc:
            raise DinoBaseError(f"{where}: {exc}") from None
        if not looks_like_original(state_dict):
            raise DinoBaseError(f"{where}: not a Grounding DINO checkpoint ({CHECKPOINTS} expected)")
        from teacherkit_dino.convert_keys import DinoConvertError, detect_variant

        try:
            detect_variant(state_dict, where)
        except DinoConvertError as exc:
            raise DinoBaseError(str(exc)) from None
        if find_bert() is None:
            raise DinoBaseError(f"{where}: {missing_bert_message()}")
    if location.kind in ("folder", "cache"):
        assert location.path is not None
        _check_folder(location.path, where)
    return location


def pretrained_folder(config: Any) -> Path:
    """The folder ``from_pretrained`` reads for ``config.base``: the folder itself, the
    cached snapshot, or the conversion of an original ``.pth`` in the teacherkit cache
    (made the first time, keyed by the file's hash: :func:`teacherkit.convert.converted_checkpoint`)."""
    location = check_base(config)
    if location.kind == "checkpoint":
        from teacherkit.convert import converted_checkpoint

        assert location.path is not None
        log.info("using the conversion of %s (converted once, kept in the teacherkit cache)", location.path)
        return converted_checkpoint(location.path, CONVERTER)
    assert location.path is not None, "tiny has no folder"
    return location.path


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
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ConvertError(f"{path}: cannot read as a PyTorch checkpoint ({str(exc).splitlines()[0]})") from exc
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


# -- BERT's vocabulary ----------------------------------------------------------------------


def find_bert() -> Path | None:
    """A folder with BERT's tokenizer: ``$TEACHERKIT_BERT``, else ``bert-base-uncased`` in
    the local Hugging Face cache; None when neither is there."""
    if os.environ.get(BERT_ENV):
        folder = Path(os.environ[BERT_ENV]).expanduser()
        return folder if any((folder / name).is_file() for name in TOKENIZER_FILES) else None
    from huggingface_hub import try_to_load_from_cache

    for repo_id in BERT_HUB_IDS:
        for name in TOKENIZER_FILES:
            cached = try_to_load_from_cache(repo_id, name)
            if isinstance(cached, str):
                return Path(cached).parent
    return None


def missing_bert_message() -> str:
    where = f"${BERT_ENV} ({os.environ[BERT_ENV]!r})" if os.environ.get(BERT_ENV) else \
        f"${BERT_ENV} (unset) and the local Hugging Face cache ({', '.join(BERT_HUB_IDS)})"
    return (f"the original Grounding DINO's text encoder is BERT-base (uncased); its weights are in the checkpoint "
            f"but its vocabulary is not, and none was found in {where}. On a machine with internet run "
            f"`hf download google-bert/bert-base-uncased --local-dir bert-base-uncased`, copy the folder here and "
            f"set {BERT_ENV}=bert-base-uncased (or copy the Hugging Face cache folder)")


def _bert_tokenizer(folder: Path, vocab_rows: int) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{folder}: BERT's tokenizer does not load ({exc})") from exc
    wrong = {t: i for t, i in BERT_SPECIAL_IDS.items() if tokenizer.convert_tokens_to_ids(t) != i}
    if wrong or len(tokenizer) > vocab_rows:
        raise ConvertError(f"{folder}: not the vocabulary of the checkpoint's BERT ({len(tokenizer)} tokens for "
                           f"{vocab_rows} embeddings; ids of {', '.join(wrong) or 'none'} differ from "
                           f"bert-base-uncased's {BERT_SPECIAL_IDS})")
    return tokenizer


def text_config(state_dict: Mapping[str, Any], bert: Path | None) -> dict[str, Any]:
    """BERT's config for the checkpoint's text encoder: the BERT folder's ``config.json``
    when there is one, else bert-base-uncased's, sized from the tensors (heads: 64 wide,
    as in every BERT release)."""
    from transformers import BertConfig

    if bert is not None and (bert / "config.json").is_file():
        config = BertConfig.from_pretrained(str(bert), local_files_only=True)
    else:
        words = state_dict["bert.embeddings.word_embeddings.weight"]
        hidden = int(words.shape[1])
        layers = 1 + max(int(k.split(".")[3]) for k in state_dict if k.startswith("bert.encoder.layer."))
        config = BertConfig(
            vocab_size=int(words.shape[0]), hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            intermediate_size=int(state_dict["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            max_position_embeddings=int(state_dict["bert.embeddings.position_embeddings.weight"].shape[0]),
        )
    return config.to_dict()


# -- the conversion -------------------------------------------------------------------------


def convert_original(checkpoint: Path, output: Path) -> str:
    """Write ``output`` (empty; callers make it atomic) as a
    ``GroundingDinoForObjectDetection.from_pretrained`` folder with its processor config
    and, when a BERT vocabulary is here (:func:`find_bert`), the tokenizer. Returns the
    variant (``swin_t``, ``swin_b``)."""
    import torch
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    from teacherkit_dino.convert_keys import UNMATCHED, check_mapping, convert_state_dict, detect_variant, hf_config

    state_dict = read_original(checkpoint)
    if not looks_like_original(state_dict):
        raise ConvertError(f"{checkpoint}: not a Grounding DINO checkpoint ({CHECKPOINTS} expected)")
    variant = detect_variant(state_dict, str(checkpoint))
    bert = find_bert()
    vocab_rows = int(state_dict["bert.embeddings.word_embeddings.weight"].shape[0])
    tokenizer = _bert_tokenizer(bert, vocab_rows) if bert is not None else None
    config = hf_config(variant, text_config(state_dict, bert))
    converted = convert_state_dict(state_dict)
    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(config)
    expected = model.state_dict()
    check_mapping(converted, expected, str(checkpoint))
    for key in UNMATCHED:  # LayerNorms no output passes through: their PyTorch defaults
        converted[key] = (torch.ones if key.endswith("weight") else torch.zeros)(expected[key].shape)
    # assign=True takes the tensors as they are: no random init, no copy of the whole model
    model.load_state_dict({k: v.contiguous() for k, v in converted.items()}, strict=True, assign=True)
    model.tie_weights()
    model.save_pretrained(output)
    image_processor = GroundingDinoImageProcessor()  # the original's 800/1333 resize, ImageNet mean/std
    if tokenizer is None:
        log.warning("%s: converted without a tokenizer: %s; add the tokenizer to %s before using it",
                    checkpoint, missing_bert_message(), output)
        image_processor.save_pretrained(output)
    else:
        GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output)
    return variant.name


#: Converts IDEA's files for ``teacherkit convert`` and ``.pth`` bases.
CONVERTER = CheckpointConverter(
    teacher="grounding_dino",
    formats=f"{CHECKPOINTS} (needs BERT's vocabulary: ${BERT_ENV} or bert-base-uncased in the HF cache)",
    read=read_original,
    claims=looks_like_original,
    convert=convert_original,
)
