"""What decides the labels of one ``teacherkit label`` run, kept next to its shards so a
``--resume`` with other settings is refused instead of mixing two kinds of labels in one
file.

Rank 0 writes ``<output>.partial-settings.json`` (atomically) before any shard grows; it
is part of the partial run (a fresh run is refused while it exists) and is removed with
the shards after the merge. Settings that do not change a label (``--batch-size``,
``--device``, ``--workers``, the number of processes) are not recorded: a resume may change
them, e.g. after running out of memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from teacherkit.errors import DataError, TeacherkitError, describe_os_error

log = logging.getLogger("teacherkit.label")

VERSION = 1

#: Recorded setting -> how the user gives it.
FLAGS = {
    "experiment": "EXPERIMENT (the experiment folder)",
    "teachers": "the experiment's trained teachers",
    "adapter_scale": "--adapter-scale",
    "classes": "--classes",
    "score_thresholds": "--score-threshold",
    "box_threshold": "--box-threshold",
    "text_threshold": "--text-threshold",
    "nms_iou": "--nms",
}


class SettingsChangedError(TeacherkitError):
    """A ``--resume`` whose settings differ from those the partial run was made with."""


def settings_path(output: Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial-settings.json")


def label_settings(experiment: Any, *, adapter_scale: float, classes: list[str] | None,
                   thresholds: Any, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The settings of a run, as recorded: plain JSON values. A flag given with the value
    it has anyway is recorded as not given (``--classes`` naming every class, a
    ``--box-threshold`` equal to the box teacher's own), so spelling out a default on
    ``--resume`` is no change."""
    every_class = {str(c["name"]) for c in experiment.info.categories}
    settings: dict[str, Any] = {
        "experiment": str(Path(experiment.path).resolve()),
        "teachers": list(experiment.teacher_names),
        "adapter_scale": float(adapter_scale),
        "classes": sorted(set(classes)) if classes and set(classes) != every_class else None,
        "score_thresholds": thresholds.record() if thresholds is not None and thresholds.active else None,
    }
    for key, value in sorted(_changed_overrides(experiment, overrides or {}).items()):
        settings[key] = value
    return json.loads(json.dumps(settings))  # as it reads back (tuples as lists, ...)


def _changed_overrides(experiment: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The prediction settings of ``overrides`` that differ from the box teacher's config."""
    if not overrides:
        return {}
    config = experiment.config.teacher(experiment.box_teacher_name("labelling"))
    unset = object()
    return {key: value for key, value in overrides.items() if getattr(config, key, unset) != value}


def _deciding(key: str, value: Any) -> Any:
    """What of a recorded value decides the labels. The score cut: its numbers, not where
    the default came from (``--score-threshold 0.4`` is the recorded best-F1 0.4), nor a
    class's own cut equal to the default."""
    if key != "score_thresholds" or not isinstance(value, dict):
        return value
    default = value.get("default")
    per_class = value.get("per_class") or {}
    return {"default": default, "per_class": {name: cut for name, cut in per_class.items() if cut != default}}


def write_settings(output: Path, settings: dict[str, Any]) -> None:
    from teacherkit.atomic import atomic_write_json

    atomic_write_json(settings_path(output), {"teacherkit_label_settings": VERSION, **settings}, indent=2)


def read_settings(output: Path) -> dict[str, Any] | None:
    """The recorded settings, or ``None`` when the partial run has none (made before they
    were recorded)."""
    path = settings_path(output)
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the settings of the partial run: {describe_os_error(exc)}") from None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict) or recorded.get("teacherkit_label_settings") != VERSION:
        raise DataError(f"{path}: not the settings file of a partial 'teacherkit label' run; delete it and the "
                        "partial files next to it to start over")
    recorded.pop("teacherkit_label_settings")
    return recorded


def _shown(key: str, value: Any) -> str:
    if value is None:
        return {"classes": "all classes", "score_thresholds": "no cut"}.get(key, "not given")
    if key == "classes" or key == "teachers":
        return ",".join(value) or "none"
    if key == "score_thresholds":
        parts = [] if value.get("default") is None else [f"{value['default']:g}"]
        parts += [f"{name}={cut:g}" for name, cut in value.get("per_class", {}).items()]
        origin = value.get("default_from")
        recorded = origin not in (None, "--score-threshold") and value.get("default") is not None
        return ",".join(parts) + (f" (best F1 from {origin})" if recorded else "")
    return json.dumps(value) if not isinstance(value, str) else value


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One ``flag: recorded X, now Y`` per setting that differs."""
    keys = list(FLAGS) + sorted((set(recorded) | set(now)) - set(FLAGS))
    return [f"{FLAGS.get(key, key)}: recorded {_shown(key, recorded.get(key))}, now {_shown(key, now.get(key))}"
            for key in keys if _deciding(key, recorded.get(key)) != _deciding(key, now.get(key))]


def check_resumed_settings(output: Path, settings: dict[str, Any], partial_files: list[Path]) -> None:
    """Refuse a ``--resume`` whose settings differ from the recorded ones; warn when the
    partial run has shards but no record (made before settings were recorded).

    :raises SettingsChangedError: naming each differing flag with both values, and how to
        go on.
    """
    recorded = read_settings(output)
    if recorded is None:
        if partial_files:
            log.warning("%s: the partial run has no record of its settings (made by an older teacherkit); "
                        "resuming without checking that they are the ones given now", partial_files[0])
        return
    changed = differences(recorded, settings)
    if changed:
        others = [str(p) for p in partial_files if p != settings_path(output)]
        files = ", ".join([str(settings_path(output)), *others])
        raise SettingsChangedError(
            f"--resume: the partial run of {output} was made with other settings ({'; '.join(changed)}). "
            f"Resume with the recorded values, or delete {files} to label from the start with the new ones")
