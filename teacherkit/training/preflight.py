"""Checks ``train`` runs before it loads a model or touches the experiment folder.

- :func:`check_flag_ranges`: each numeric flag against the range of the config key it
  sets, so ``--epochs 0`` names ``--epochs``, not a config key the user never typed.
- :func:`check_dataset`: the checks of ``teacherkit validate`` (same codes, same places);
  errors stop the run, warnings are summed up in one line.
- :func:`check_resume`: ``--resume`` continues the run it finds, on the same data and
  with the same teachers; anything else is refused, naming what was recorded and what was
  given.
- :func:`resumed_config_difference`: config flags repeated on ``--resume`` must resolve to
  the saved config; the keys that differ are named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError, TeacherkitError

#: numeric ``train`` flags → (config section model attribute path, key)
_FLAG_KEYS = {
    "--epochs": ("training", "epochs"), "--batch-size": ("training", "batch_size"), "--lr": ("training", "lr"),
    "--num-workers": ("training", "num_workers"), "--seed": ("training", "seed"),
    "--replay-fraction": ("replay", "fraction"), "--lora-r": ("lora", "r"),
}
_SECTION_KEYS = {"training": "training.", "replay": "training.replay.", "lora": "teachers.<name>.lora."}


def check_flag_ranges(values: Mapping[str, Any]) -> None:
    """Raise :class:`TeacherkitError` naming the first flag (``{"--epochs": 0}``) whose value
    its config key does not accept (range, finiteness)."""
    from pydantic import ValidationError

    from teacherkit.config import LoraSettings, ReplayConfig, TrainingConfig

    models = {"training": TrainingConfig, "replay": ReplayConfig, "lora": LoraSettings}
    for flag, value in values.items():
        if value is None:
            continue
        section, key = _FLAG_KEYS[flag]
        try:
            models[section].model_validate({key: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            where = _SECTION_KEYS[section] + key
            raise TeacherkitError(f"{flag} {value} ({where}): {reason[0].lower() + reason[1:]}") from None


# -- the data --------------------------------------------------------------------------------


#: ``validate`` errors that training handles by design: masks-only data (no ``bbox``) trains
#: the mask teachers, which take boxes from the masks.
TRAINABLE_ERRORS = frozenset({"bbox.missing"})


def check_dataset(path: Path, images_dir: Path, flag: str, warn: Any, examples: int = 5) -> None:
    """Run ``teacherkit validate``'s checks on ``path`` (image files included). Errors (but
    :data:`TRAINABLE_ERRORS`) raise :class:`DataError` listing each code with its count and
    first places; what remains (warnings) goes to ``warn`` as one line."""
    from teacherkit.data.validate import validate_coco

    if not images_dir.is_dir():
        raise DataError(f"{flag} {path}: its image folder {images_dir} is not a folder (set it with --images / "
                        "--val-images)")
    report = validate_coco(path, images_dir=images_dir, check_images=True)
    errors = [f for f in report.errors if f.code not in TRAINABLE_ERRORS]
    if errors:
        lines = [f"{flag} {path}: {len(errors)} error(s) found by the checks of 'teacherkit validate'; "
                 "nothing was trained or written:"]
        for code, items in report.by_code().items():
            if items[0].severity != "error" or code in TRAINABLE_ERRORS:
                continue
            lines.append(f"  {code} ({len(items)}):")
            lines.extend(f"    {f.location}: {f.message}" for f in items[:examples])
            if len(items) > examples:
                lines.append(f"    ... and {len(items) - examples} more")
        fixable = sum(f.fixable for f in errors)
        hint = f"; 'teacherkit validate {path} --fix OUT.json' repairs {fixable} of them" if fixable else ""
        lines.append(f"  full report: 'teacherkit validate {path}'{hint}")
        raise DataError("\n".join(lines))
    if report.findings:
        counts = ", ".join(f"{code} {len(items)}" for code, items in report.by_code().items())
        warn(f"{path}: {len(report.findings)} finding(s) training can live with ({counts}); training goes on "
             f"with them as they are; details: 'teacherkit validate {path}'")


# -- --resume ------------------------------------------------------------------------------


def _short(fingerprint: str | None) -> str:
    return fingerprint[:19] + "…" if fingerprint else "none"


def _recorded(metadata_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_resume_data(layout: Any, *, given: dict[str, tuple[Path | None, str | None]],
                      class_names: list[str]) -> list[str] | None:
    """Refuse a ``--resume`` on other data than the run recorded in ``metadata.json`` (the
    sha256 of ``--data`` and ``--val``; the classes of ``dataset_info.json`` for an
    experiment that has no fingerprints recorded).

    :param given: ``{"train": (path, fingerprint), "val": (path or None, fingerprint or None)}``.
    :returns: the teacher selection recorded at the start (``None`` when there is none).
    """
    record = _recorded(layout.metadata)
    data = record.get("data") or {}
    if data:
        for role, flag in (("train", "--data"), ("val", "--val")):
            entry = data.get(role) or {}
            recorded_fp = entry.get("fingerprint")
            path, fingerprint = given[role]
            if recorded_fp != fingerprint:
                raise DataError(
                    f"--resume: {flag} differs from the data this experiment was trained on: recorded "
                    f"{entry.get('path', 'none')} ({_short(recorded_fp)}), given {path or 'none'} "
                    f"({_short(fingerprint)}); resume with the same file, or start a new --output")
    else:  # no fingerprints recorded (killed before metadata.json existed): compare the classes
        try:
            recorded_classes = json.loads(layout.dataset_info.read_text(encoding="utf-8")).get("class_names")
        except (OSError, ValueError, AttributeError):
            recorded_classes = None
        if recorded_classes is not None and list(recorded_classes) != list(class_names):
            raise DataError(f"--resume: the classes of --data differ from the experiment's: recorded "
                            f"{recorded_classes}, given {class_names}; start a new --output")
    selection = (record.get("selection") or {}).get("teachers")
    return list(selection) if isinstance(selection, list) else None


def check_resume_selection(recorded: list[str] | None, chosen: list[str], models_flag: list[str]) -> None:
    """``--models`` on ``--resume`` must pick the teachers the run started with."""
    if recorded is not None and sorted(chosen) != sorted(recorded):
        raise TeacherkitError(f"--resume: --models {','.join(models_flag)} differs from the teachers this experiment "
                              f"trains: recorded {','.join(recorded)}, given {','.join(chosen)}; drop --models "
                              f"to continue with the recorded ones")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def resumed_config_difference(saved: Any, given: Any) -> list[str]:
    """``"key: recorded X, given Y"`` for every key (outside the informational ``dataset``
    section) where the config the flags resolve to differs from the saved one."""
    a = _flatten(saved.model_dump(mode="json"))
    b = _flatten(given.model_dump(mode="json"))
    keys = sorted(k for k in a.keys() | b.keys() if not k.startswith("dataset.") and a.get(k) != b.get(k))
    return [f"{k}: recorded {a.get(k)!r}, given {b.get(k)!r}" for k in keys]
