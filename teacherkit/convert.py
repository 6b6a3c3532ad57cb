"""``teacherkit convert`` and the cache of converted checkpoints.

The core knows no model: each teacher plugin contributes a :class:`CheckpointConverter`
from its ``teacherkit_register_commands`` hook through :func:`add_converter`, which adds
the ``convert`` command the first time it is called. The same converters turn a ``.pth``
given as a teacher's ``base`` into a transformers folder once, in a user cache keyed by
the file's SHA-256 (:func:`converted_checkpoint`).

Nothing here imports torch; the converters import it inside their functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from teacherkit.errors import OutputExistsError, TeacherkitError, check_output_dir

#: Written into every converted folder: the source file, its hash, the teacher and variant.
MARKER = "teacherkit_converted.json"
_REGISTRY_ATTR = "_teacherkit_converters"


class ConvertError(TeacherkitError):
    """A checkpoint cannot be converted (not a known format, unreadable); the message names it."""


@dataclass(frozen=True)
class CheckpointConverter:
    """What a teacher plugin contributes to ``teacherkit convert``.

    :param teacher: the teacher's name (``--model`` value).
    :param formats: the original checkpoints it converts, in words (for ``--help`` and errors).
    :param read: ``path -> state dict`` of an original file (may memory-map).
    :param claims: ``state dict -> bool``: whether the tensors are this teacher's original format.
    :param convert: ``(checkpoint, empty output folder) -> variant name``; writes a folder
        transformers' ``from_pretrained`` loads, with a processor config.
    """

    teacher: str
    formats: str
    read: Callable[[Path], Mapping[str, Any]]
    claims: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Path, Path], str]


def add_converter(app: typer.Typer, converter: CheckpointConverter) -> None:
    """Register ``converter`` with ``app``; the first call adds the ``convert`` command."""
    registry: dict[str, CheckpointConverter] | None = getattr(app, _REGISTRY_ATTR, None)
    if registry is None:
        registry = {}
        setattr(app, _REGISTRY_ATTR, registry)
        app.command("convert")(_make_command(registry))
    registry[converter.teacher] = converter


def _make_command(registry: dict[str, CheckpointConverter]) -> Callable[..., None]:
    def convert_command(
        checkpoint: Annotated[Path, typer.Argument(help="An original checkpoint (.pth).", show_default=False)],
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.", show_default=False)],
        model: Annotated[
            str | None, typer.Option("--model", help="The teacher it belongs to; default: detected from its tensors.")
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output folder.")] = False,
    ) -> None:
        """Convert an original checkpoint (Meta's sam_vit_b/l/h .pth, ...) into a folder that
        transformers' from_pretrained loads, with its processor config."""
        check_output_dir(output, "--output")
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise OutputExistsError(f"--output {output} exists and is not empty; pass --overwrite to replace it")
        converter, variant = convert_file(registry, checkpoint, output, model)
        typer.echo(f"converted {checkpoint} ({converter.teacher} {variant}) -> {output}")

    return convert_command


def pick_converter(
    registry: Mapping[str, CheckpointConverter], checkpoint: Path, model: str | None
) -> tuple[CheckpointConverter, Mapping[str, Any]]:
    """The converter for ``checkpoint`` (``model`` names it, else the one whose format the
    tensors have) and the file's tensors."""
    if not registry:
        raise ConvertError("no installed plugin converts checkpoints (install teacherkit-sam or teacherkit-dino)")
    if model is not None and model not in registry:
        raise ConvertError(f"--model {model!r}: no converter; installed: {', '.join(sorted(registry))}")
    if not checkpoint.is_file():
        raise ConvertError(f"{checkpoint}: no such file")
    candidates = [registry[model]] if model is not None else list(registry.values())
    for converter in candidates:
        state_dict = converter.read(checkpoint)  # each its own way (wrappers, prefixes); memory-mapped
        if converter.claims(state_dict):
            return converter, state_dict
    known = "; ".join(f"{c.teacher}: {c.formats}" for c in registry.values())
    what = f"a {model} checkpoint" if model else "a checkpoint teacherkit can convert"
    raise ConvertError(f"{checkpoint}: not {what} (known formats: {known})")


def convert_file(
    registry: Mapping[str, CheckpointConverter], checkpoint: Path, output: Path, model: str | None = None
) -> tuple[CheckpointConverter, str]:
    """Convert ``checkpoint`` into ``output`` atomically (the old folder stays until the new
    one is complete). Returns the converter and the variant it found."""
    from teacherkit.atomic import atomic_dir, atomic_write_json

    converter, _ = pick_converter(registry, checkpoint, model)
    with atomic_dir(output) as tmp:
        variant = converter.convert(checkpoint, tmp)
        atomic_write_json(tmp / MARKER, {"source": str(checkpoint), "teacher": converter.teacher,
                                         "variant": variant}, indent=2)
    return converter, variant


# -- the cache of converted bases ----------------------------------------------------------


def cache_root() -> Path:
    """``$TEACHERKIT_CACHE``, else ``$XDG_CACHE_HOME/teacherkit``, else ``~/.cache/teacherkit``."""
    if os.environ.get("TEACHERKIT_CACHE"):
        return Path(os.environ["TEACHERKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "teacherkit"


def file_sha256(path: Path, chunk: int = 16 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(teacher: str, digest: str) -> Path:
    """Where the conversion of a file with SHA-256 ``digest`` lives."""
    return cache_root() / "converted" / f"{teacher}-{digest[:16]}"


def converted_checkpoint(checkpoint: Path, converter: CheckpointConverter) -> Path:
    """The converted folder of ``checkpoint``, converting it the first time only: the
    folder is keyed by the file's SHA-256, so a changed file converts anew and the same
    file under another name does not. Written atomically (a killed conversion leaves
    nothing that looks complete)."""
    from teacherkit.atomic import atomic_dir, atomic_write_json, recover_dir

    checkpoint = Path(checkpoint).expanduser().resolve()
    digest = file_sha256(checkpoint)
    folder = converted_folder(converter.teacher, digest)
    recover_dir(folder)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("sha256") == digest:
        return folder
    try:
        with atomic_dir(folder) as tmp:
            variant = converter.convert(checkpoint, tmp)
            atomic_write_json(tmp / MARKER, {"source": str(checkpoint), "sha256": digest,
                                             "teacher": converter.teacher, "variant": variant}, indent=2)
    except OSError as exc:
        raise ConvertError(f"{checkpoint}: cannot write its conversion to {folder} ({exc}); set TEACHERKIT_CACHE "
                           "to a writable folder or convert it yourself with `teacherkit convert`") from exc
    return folder


# -- finding a teacher's base without loading it ------------------------------------------

#: What ``base`` may name besides folders and hub ids: the random small architecture.
RANDOM_BASE = "tiny"
#: Files of which at least one must be in a folder or cached snapshot for it to be a model.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CHECKPOINT_SUFFIXES = (".pth", ".pt")


class BaseNotFoundError(TeacherkitError):
    """A teacher's base is not on this machine; the message says where it looked and how to
    provide it."""


@dataclass(frozen=True)
class BaseLocation:
    """Where a teacher's base is, found without loading it.

    ``kind`` is ``tiny`` (random weights), ``folder`` (a local transformers folder), ``cache``
    (a snapshot in the local Hugging Face cache; ``path`` is that snapshot) or
    ``checkpoint`` (an original ``.pth`` to convert; ``path`` is the file)."""

    kind: str
    name: str
    path: Path | None = None

    @property
    def random_weights(self) -> bool:
        """True when the base is random (``tiny``): nothing pretrained is loaded."""
        return self.kind == "tiny"


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME`` respected)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_base(
    base: str, *, key: str, default: str, named: Mapping[str, str] | None = None, checkpoints: str | None = None
) -> BaseLocation:
    """Locate ``base`` (the value of config key ``key``) without loading anything:
    ``tiny``; a short name from ``named``; an original checkpoint file; a local folder with
    a ``config.json`` and weights; or a hub id whose config and weights are in the local
    Hugging Face cache. Raises :class:`BaseNotFoundError` with the one message a user needs
    (``default``, the teacher's usual hub id, is what it suggests downloading for a path
    that is not there; ``checkpoints`` names the original files the teacher converts, if any)."""
    if base == RANDOM_BASE:
        return BaseLocation("tiny", base)
    repo_id = (named or {}).get(base, base)
    path = Path(repo_id).expanduser()
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise BaseNotFoundError(f"{key} = {base!r}: a file, but not a .pth/.pt checkpoint; give a folder, a "
                                    "hub id in the local cache, or an original .pth checkpoint")
        return BaseLocation("checkpoint", base, path)
    if path.is_dir():
        if not (path / "config.json").is_file() or not any((path / f).is_file() for f in WEIGHT_FILES):
            raise BaseNotFoundError(f"{key} = {base!r}: the folder {path} has no config.json and model weights "
                                    "(a folder written by save_pretrained, `hf download --local-dir` or "
                                    "`teacherkit convert` is expected)")
        return BaseLocation("folder", base, path)
    looks_like_path = path.is_absolute() or repo_id.startswith((".", "~")) or repo_id.count("/") > 1 or \
        path.suffix in CHECKPOINT_SUFFIXES
    if looks_like_path:
        why = f"no such directory or file: {path.resolve()}"
        raise BaseNotFoundError(missing_base_message(key, base, default, why, checkpoints))
    snapshot = _cached_snapshot(repo_id)
    if snapshot is None:
        why = f"the model {repo_id} is not in the local Hugging Face cache ({hf_cache_dir()}) and is not a local folder"
        raise BaseNotFoundError(missing_base_message(key, base, repo_id, why, checkpoints))
    return BaseLocation("cache", base, snapshot)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if any((snapshot / f).is_file() for f in WEIGHT_FILES) else None


def missing_base_message(key: str, base: str, repo_id: str, why: str, checkpoints: str | None = None) -> str:
    """The message for a base that is not here: ``why`` (the model, where teacherkit looked)
    and the two ways to provide it."""
    teacher = key.split(".")[1] if key.count(".") >= 2 else key
    have = f"`--set teachers.{teacher}.base=DIR` (a transformers model folder)"
    if checkpoints:
        have += f" or `--set teachers.{teacher}.base=FILE.pth` ({checkpoints}, converted once)"
    return (
        f"{key} = {base!r}: {why}; teacherkit never downloads. Provide it either way: (1) on a machine with internet "
        f"run `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) and copy that cache folder here "
        f"(or add `--local-dir DIR` and copy DIR); (2) point at weights you have: {have}. "
        f"To try the pipeline with random weights instead, use --preset tiny (or teachers.{teacher}.base=tiny)."
    )
